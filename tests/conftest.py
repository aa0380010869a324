"""Shared fixtures: one thread per test process (two cores are shared), EMT-labelled structures, the toy Potential."""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
sys.path.insert(0, str(Path(__file__).parent))

from emt_data import emt_structures  # noqa: E402,F401  (re-exported for tests that import it from here)


@pytest.fixture
def emt_dataset():
    from atomtune.data.dataset import Dataset

    return Dataset(emt_structures(), name="emt")


@pytest.fixture
def toy_potential():
    from toy_potential import ToyPotential

    return ToyPotential()


@pytest.fixture(scope="session")
def tiny_mace_model_file(pytestconfig, tmp_path_factory) -> Path:
    """Path of the tiny Ni/Cu/Al MACE model (float64, pickled like mace_run_train's ``*.model``), built once into pytest's
    cache (~15 s on first build; a temporary folder when the cache plugin is off)."""
    from mace_tiny import tiny_mace_model_path

    cache = getattr(pytestconfig, "cache", None)
    directory = cache.mkdir("mace-tiny") if cache is not None else tmp_path_factory.mktemp("mace-tiny")
    return tiny_mace_model_path(directory)


@pytest.fixture(scope="session")
def tiny_mace_file(tiny_mace_model_file) -> Path:
    """The same file, under the name the fine-tuning, uncertainty and benchmark tests use."""
    return tiny_mace_model_file
