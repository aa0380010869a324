"""MACE fixtures: the tiny EMT-trained MACE ``.model`` file (built once, cached under pytest's cache) and a fresh
MacePotential on it for each test."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_mace(tiny_mace_model_file):
    """A float64 MacePotential on the tiny model, through the registry (fresh per test: tests change it)."""
    from atomtune.models.registry import load_potential

    return load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
