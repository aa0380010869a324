"""LAMMPS fixtures: the tiny EMT-trained MACE model (built once per session, cached like tests/models' one)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mace_model_file(pytestconfig, tmp_path_factory) -> Path:
    from mace_tiny import tiny_mace_model_path

    cache = getattr(pytestconfig, "cache", None)
    directory = cache.mkdir("mace-tiny") if cache is not None else tmp_path_factory.mktemp("mace-tiny")
    return tiny_mace_model_path(directory)
