"""Potential.weights_without_gradients (models/base.py; used by the UMA and MatterSim adapters' forward): in eval mode the
weights stop requiring gradients inside and get them back after, frozen weights stay frozen, train mode is untouched."""

from __future__ import annotations

import pytest


def test_eval_mode_turns_weight_gradients_off_inside_and_back_on_after(toy_potential):
    parameters = list(toy_potential.parameters())
    assert len(parameters) >= 2
    parameters[0].requires_grad_(False)  # a frozen block stays frozen
    before = [p.requires_grad for p in parameters]
    toy_potential.eval()
    with toy_potential.weights_without_gradients():
        assert not any(p.requires_grad for p in parameters)
    assert [p.requires_grad for p in parameters] == before
    with pytest.raises(RuntimeError), toy_potential.weights_without_gradients():
        raise RuntimeError("a failing forward")
    assert [p.requires_grad for p in parameters] == before  # restored on errors too


def test_train_mode_keeps_weight_gradients(toy_potential):
    toy_potential.train()
    with toy_potential.weights_without_gradients():
        assert all(p.requires_grad for p in toy_potential.parameters())
