"""Fixtures for the environment tests: the tiny EMT-trained MACE file (shared with tests/models through pytest's cache)
and labelled Ni/Cu/Al structures, so the worker machinery is tested in the main environment without any download."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_mace_model_file(pytestconfig, tmp_path_factory) -> Path:
    from mace_tiny import tiny_mace_model_path

    cache = getattr(pytestconfig, "cache", None)
    directory = cache.mkdir("mace-tiny") if cache is not None else tmp_path_factory.mktemp("mace-tiny")
    return tiny_mace_model_path(directory)


@pytest.fixture(scope="session")
def labelled_structures():
    from mace_tiny import emt_training_structures

    return emt_training_structures(count=6, seed=11)
