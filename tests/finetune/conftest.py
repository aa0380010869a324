"""Fixtures of the fine-tuning tests: EMT train/valid splits, a toy potential registered as a backbone (so saved models
reload through ``load_potential``), and a ToyPotential whose labels are exactly known (for E0 tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def _root_conftest():
    # Both conftest files are modules named "conftest"; load the root one by path to reuse its EMT generator.
    spec = importlib.util.spec_from_file_location("atomtune_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


emt_structures = _root_conftest().emt_structures


@pytest.fixture
def emt_split():
    structures = emt_structures(16, seed=3)
    return structures[:12], structures[12:]


@pytest.fixture
def toy_backbone(monkeypatch):
    """Register the toy potential as backbone ``toy`` and return a fresh, seeded instance factory."""
    from toy_potential import ToyPotential

    from atomtune.models import registry

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return ToyPotential(seed=seed)

    return make


@pytest.fixture
def make_emt():
    """``make_emt(count, seed)`` → EMT-labelled Cu/Ni/Al cells (see tests/conftest.py)."""
    return emt_structures


_LOADED: dict = {}


@pytest.fixture
def backbone_potential(tiny_mace_file):
    """``backbone_potential(name)`` → a float32 Potential of ``chgnet`` / ``sevennet`` / ``mace`` (tiny), in its loaded
    state. Each is loaded once per session (SevenNet takes ~10 s) and reset before every use."""
    from torch.nn.utils import parametrize

    from atomtune.models import load_potential

    specs = {"chgnet": "chgnet-0.3.0", "sevennet": "sevennet-0", "mace": str(tiny_mace_file)}

    def get(name: str):
        if name not in _LOADED:
            potential = load_potential(specs[name], trust=True)
            state = {key: value.detach().clone() for key, value in potential.state_dict().items()}
            flags = {key: p.requires_grad for key, p in potential.named_parameters()}
            _LOADED[name] = (potential, state, flags)
        potential, state, flags = _LOADED[name]
        for module in potential.modules():  # a failed test may have left adapters on
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        potential.load_state_dict(state)
        for key, parameter in potential.named_parameters():
            parameter.requires_grad_(flags[key])
        if hasattr(potential, "set_native_element_shift"):
            potential.set_native_element_shift({})
        potential.training_history = []
        potential.train(False)
        return potential

    return get
