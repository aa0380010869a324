"""MACE fixtures: the tiny EMT-trained MACE ``.model`` file (built once, cached under pytest's cache) and a fresh
MacePotential on it for each test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mace_model_file(pytestconfig, tmp_path_factory) -> Path:
    """Path of the tiny Ni/Cu/Al MACE model (float64, pickled like mace_run_train's ``*.model``); ~15 s on first build."""
    from mace_tiny import tiny_mace_model_path

    cache = getattr(pytestconfig, "cache", None)
    directory = cache.mkdir("mace-tiny") if cache is not None else tmp_path_factory.mktemp("mace-tiny")
    return tiny_mace_model_path(directory)


@pytest.fixture
def tiny_mace(tiny_mace_model_file):
    """A float64 MacePotential on the tiny model, through the registry (fresh per test: tests change it)."""
    from atomtune.models.registry import load_potential

    return load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
