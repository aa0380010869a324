"""Recomputed activations (activation checkpointing) in CHGNet's and SevenNet's inference pass: the same energies,
forces and stress as keeping the activations, applied when asked or when the memory estimate needs it, never while
training; and the memory estimates and refusals that count on it (atomtune.models.chunking)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.utils.checkpoint
from ase.build import bulk
from emt_data import alloy_cell

from atomtune.models import chunking

# float32 round-off: slices sum their scatter in a different order than one pass over all rows
ENERGY_TOLERANCE = 1e-6  # eV/atom
FORCE_TOLERANCE = 1e-5  # eV/Å
STRESS_TOLERANCE = 1e-6  # eV/Å³


@pytest.fixture(scope="module")
def chgnet():
    pytest.importorskip("chgnet")
    from atomtune.models.registry import load_potential

    return copy.deepcopy(load_potential("chgnet-0.3.0"))


@pytest.fixture(scope="module")
def sevennet():
    pytest.importorskip("sevenn")
    from atomtune.models.registry import load_potential

    return copy.deepcopy(load_potential("sevennet-0"))


@pytest.fixture
def checkpoint_calls(monkeypatch):
    """Counts torch.utils.checkpoint.checkpoint calls (what recomputation runs through)."""
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


def small_slices(monkeypatch, potential) -> None:
    """Several slices per convolution on a 108-atom cell, so that slicing is exercised, not just one checkpoint."""
    if potential.backbone == "chgnet":
        import atomtune.models.chgnet as module

        monkeypatch.setattr(module, "ROWS_PER_SLICE", 2_000)
    else:
        import atomtune.models.sevennet as module

        monkeypatch.setattr(module, "EDGES_PER_SLICE", 1_000)


def predict_with(potential, monkeypatch, atoms, recompute):
    monkeypatch.setattr(potential, "recompute_activations", recompute)
    monkeypatch.setattr(potential, "memory_budget", 1e15)  # never chunked here
    (record,) = potential.predict([atoms])
    return record


def assert_same(first: dict, second: dict, n_atoms: int) -> None:
    assert abs(first["energy"] - second["energy"]) / n_atoms < ENERGY_TOLERANCE
    assert np.abs(first["forces"] - second["forces"]).max() < FORCE_TOLERANCE
    assert np.abs(first["stress"] - second["stress"]).max() < STRESS_TOLERANCE


@pytest.mark.slow  # 27–32 s each at load ~10; the fast suite compares numbers in the predict test below
@pytest.mark.parametrize("name", ["chgnet", "sevennet"])
def test_recomputed_activations_give_the_same_numbers(name, request, monkeypatch, checkpoint_calls):
    potential = request.getfixturevalue(name)
    small_slices(monkeypatch, potential)
    atoms = alloy_cell(3)
    kept = predict_with(potential, monkeypatch, atoms, False)
    assert checkpoint_calls == []  # not applied when not asked
    recomputed = predict_with(potential, monkeypatch, atoms, True)
    # applied when asked, non-reentrant (the only kind that works under torch.autograd.grad), in several slices per
    # convolution: CHGNet 4 atom + 3 bond + 3 angle convolutions, SevenNet 5 layers of one convolution each
    assert checkpoint_calls and set(checkpoint_calls) == {False}
    assert len(checkpoint_calls) > {"chgnet": 2 * 10, "sevennet": 2 * 5}[name]
    assert np.abs(kept["forces"]).max() > 0.1 and np.abs(kept["stress"]).max() > 1e-3  # the comparison means something
    assert_same(recomputed, kept, len(atoms))


@pytest.mark.parametrize("name", ["chgnet", "sevennet"])
def test_a_wrong_recomputation_would_be_caught(name, request, monkeypatch):
    """The comparison above can fail: dropping every slice but the first changes forces far beyond the tolerance."""
    potential = request.getfixturevalue(name)
    small_slices(monkeypatch, potential)
    atoms = alloy_cell(3)
    kept = predict_with(potential, monkeypatch, atoms, False)
    original = chunking.over_row_slices

    def first_slice_only(function, tensors, n_rows, rows_per_slice, combine, recompute, **options):
        if not recompute or combine == "cat":
            return original(function, tensors, n_rows, rows_per_slice, combine, recompute, **options)
        return original(function, tensors, min(n_rows, rows_per_slice), rows_per_slice, combine, recompute, **options)

    monkeypatch.setattr(chunking, "over_row_slices", first_slice_only)
    broken = predict_with(potential, monkeypatch, atoms, True)
    assert np.abs(broken["forces"] - kept["forces"]).max() > 100 * FORCE_TOLERANCE


@pytest.mark.parametrize("name", ["chgnet", "sevennet"])
def test_predict_recomputes_when_the_estimate_exceeds_the_budget(name, request, monkeypatch, checkpoint_calls):
    """recompute_activations None (the default): a budget between the estimates with and without recomputation makes
    predict evaluate the cell whole with recomputed activations, not in chunks; the same numbers."""
    potential = request.getfixturevalue(name)
    atoms = alloy_cell(3)
    kept = predict_with(potential, monkeypatch, atoms, False)
    density = chunking.number_density(atoms)
    keeping = chunking.estimate_bytes(potential, len(atoms), density, recompute=False)
    recomputing = chunking.estimate_bytes(potential, len(atoms), density, recompute=True)
    assert recomputing < keeping / 2
    monkeypatch.setattr(potential, "recompute_activations", None)
    monkeypatch.setattr(potential, "memory_budget", 2 * recomputing)
    assert not chunking.needs_chunking(potential, atoms)
    assert chunking.estimate_bytes(potential, len(atoms), density) == pytest.approx(recomputing)
    (record,) = potential.predict([atoms])
    assert checkpoint_calls
    assert "chunking" not in record
    assert_same(record, kept, len(atoms))
    checkpoint_calls.clear()
    monkeypatch.setattr(potential, "memory_budget", 2 * keeping)  # fits with kept activations: nothing recomputed
    potential.predict([atoms])
    assert checkpoint_calls == []


def test_never_recomputed_while_training_or_without_autograd(chgnet, monkeypatch):
    monkeypatch.setattr(chgnet, "recompute_activations", True)
    chgnet.eval()
    assert chunking.recompute_wanted(chgnet, 10)
    with torch.no_grad():
        assert not chunking.recompute_wanted(chgnet, 10)
    chgnet.train()
    try:
        assert not chunking.recompute_wanted(chgnet, 10)
    finally:
        chgnet.eval()
    monkeypatch.setattr(chgnet, "recompute_activations", None)
    monkeypatch.setattr(chgnet, "memory_budget", 1e15)
    assert not chunking.recompute_wanted(chgnet, 10**6)
    monkeypatch.setattr(chgnet, "memory_budget", 1e6)
    assert chunking.recompute_wanted(chgnet, 10**6)


def test_ten_thousand_atoms_fit_with_recomputation_and_the_refusal_says_so(chgnet, sevennet, monkeypatch):
    """10,976 fcc Cu atoms: over a 16 GiB budget with kept activations, within it recomputed (evaluated whole; measured
    in benchmarks/bench_scale.py); a budget below even the smallest recomputing chunk is refused with the estimate."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((14, 14, 14))  # never featurised here
    density = chunking.number_density(atoms)
    for potential in (chgnet, sevennet):
        monkeypatch.setattr(potential, "memory_budget", 16 * 2**30)
        assert chunking.estimate_bytes(potential, len(atoms), density, recompute=False) > 16 * 2**30
        assert not chunking.needs_chunking(potential, atoms)
        monkeypatch.setattr(potential, "memory_budget", 0.5 * 2**30)
        with pytest.raises(chunking.CellTooLargeError) as error:
            potential.predict([atoms])
        message = str(error.value)
        assert "10976 atoms" in message and "recomputed" in message and "receptive field of 2" in message
        kilobytes = chunking.bytes_per_edge(potential, recompute=True) / 1e3
        assert f"× {kilobytes:.0f} kB each" in message
