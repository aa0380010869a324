"""Environment tests: labelled Ni/Cu/Al structures (the tiny MACE file is tests/conftest.py's), so the worker machinery
is tested in the main environment without any download."""

from __future__ import annotations


import pytest


@pytest.fixture(scope="session")
def labelled_structures():
    from mace_tiny import emt_training_structures

    return emt_training_structures(count=6, seed=11)
