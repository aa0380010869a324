"""Committees: zero spread for identical members, σ > 0 for distinct ones, mean = members' mean, save / load without
unpickling (full and shallow), bad input (K < 2, mixed backbones, different E0s), calculator results and the HAL bias."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from toy_potential import ToyPotential

from atomtune.models import registry
from atomtune.uncertainty.committee import (
    CommitteeError,
    CommitteePotential,
    readout_block,
    sigma_energy_gradient,
)


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")


def _distinct_members(count=3):
    members = []
    for seed in range(count):
        torch.manual_seed(0)  # the toy's linear layers start from torch's global generator
        member = ToyPotential(seed=0)
        with torch.no_grad():  # same embedding (seed 0), different readouts: like K fine-tunes of one model
            generator = torch.Generator().manual_seed(100 + seed)
            member.readout.weight.add_(0.2 * torch.randn(member.readout.weight.shape, generator=generator))
        members.append(member)
    return members


def test_identical_members_have_zero_spread(emt_dataset):
    torch.manual_seed(0)
    base = ToyPotential(seed=0)
    committee = CommitteePotential([copy.deepcopy(base) for _ in range(3)])
    records = committee.predict(list(emt_dataset)[:4])
    single = base.predict(list(emt_dataset)[:4])
    for record, alone in zip(records, single):
        assert record["energy_std"] == 0.0
        assert np.all(record["forces_std"] == 0.0)
        assert np.all(record["stress_std"] == 0.0)
        assert record["energy"] == pytest.approx(alone["energy"], rel=1e-6)
        np.testing.assert_allclose(record["forces"], alone["forces"], atol=1e-6)


def test_distinct_members_give_spread_and_the_mean(emt_dataset):
    members = _distinct_members(3)
    committee = CommitteePotential(members)
    structures = list(emt_dataset)[:5]
    records = committee.predict(structures, members=True)
    each = [m.predict(structures) for m in members]
    for k, record in enumerate(records):
        energies = np.array([e[k]["energy"] for e in each])
        assert record["energy"] == pytest.approx(energies.mean(), rel=1e-6)
        assert record["energy_std"] == pytest.approx(energies.std(ddof=1), rel=1e-4)
        assert record["energy_std"] > 0
        forces = np.stack([e[k]["forces"] for e in each])
        expected = np.sqrt(forces.var(axis=0, ddof=1).mean(axis=1))
        np.testing.assert_allclose(record["forces_std"], expected, rtol=1e-4, atol=1e-9)
        assert record["forces_std"].shape == (len(structures[k]),)
        assert record["stress_std"].shape == (3, 3)
        assert record["energy_members"].shape == (3,)


def test_calibration_scales_the_reported_spread(emt_dataset):
    structures = list(emt_dataset)[:3]
    raw = CommitteePotential(_distinct_members(2)).predict(structures)
    scaled = CommitteePotential(_distinct_members(2), calibration={"energy": 2.0, "forces": 3.0}).predict(structures)
    for a, b in zip(raw, scaled):
        assert b["energy_std"] == pytest.approx(2.0 * a["energy_std"])
        np.testing.assert_allclose(b["forces_std"], 3.0 * a["forces_std"])
        np.testing.assert_allclose(b["stress_std"], a["stress_std"])


@pytest.mark.parametrize("kind", ["full", "shallow"])
def test_save_and_load_round_trip_without_unpickling(kind, tmp_path, emt_dataset, monkeypatch):
    members = _distinct_members(3)
    if kind == "shallow":  # a shallow committee's members share everything but the readout
        for member in members[1:]:
            member.embedding.load_state_dict(members[0].embedding.state_dict())
            member.interaction.load_state_dict(members[0].interaction.state_dict())
    committee = CommitteePotential(members, kind=kind, calibration={"forces": 1.7})
    committee.save(tmp_path / "committee")
    if kind == "shallow":
        assert sorted(p.name for p in (tmp_path / "committee" / "heads").iterdir()) == ["head-0.pt", "head-1.pt",
                                                                                        "head-2.pt"]
    real_load = torch.load

    def safe_only(*args, **kwargs):
        assert kwargs.get("weights_only", True) is not False, "a committee file was unpickled"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", safe_only)
    loaded = registry.load_potential(str(tmp_path / "committee"))
    assert isinstance(loaded, CommitteePotential)
    assert loaded.kind == kind and loaded.size == 3 and loaded.calibration == {"forces": 1.7}
    structures = list(emt_dataset)[:3]
    for a, b in zip(committee.predict(structures), loaded.predict(structures)):
        assert b["energy"] == pytest.approx(a["energy"], rel=1e-6)
        np.testing.assert_allclose(b["forces_std"], a["forces_std"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", ["full", "shallow"])
def test_float64_committee_reloads_in_float64_without_rounding(kind, tmp_path, emt_dataset):
    members = [member.double() for member in _distinct_members(2)]
    if kind == "shallow":
        members[1].embedding.load_state_dict(members[0].embedding.state_dict())
        members[1].interaction.load_state_dict(members[0].interaction.state_dict())
    with torch.no_grad():  # weights that float32 cannot hold exactly
        for member in members:
            member.readout.weight.add_(1e-12)
    committee = CommitteePotential(members, kind=kind)
    committee.save(tmp_path / "committee")
    loaded = registry.load_potential(str(tmp_path / "committee"), dtype="float64")
    for original, reloaded in zip(committee.members, loaded.members):
        for (name, a), b in zip(original.state_dict().items(), reloaded.state_dict().values()):
            assert b.dtype == torch.float64 and torch.equal(a, b), name


def test_shallow_head_holds_only_the_readout():
    member = ToyPotential(seed=0)
    assert set(readout_block(member).state_dict()) == {"weight", "bias"}


def test_bad_committees_are_refused():
    with pytest.raises(CommitteeError, match="at least 2 members"):
        CommitteePotential([ToyPotential()])
    with pytest.raises(CommitteeError, match="differ in backbone"):
        CommitteePotential([ToyPotential("toy"), ToyPotential("other-toy")])
    shifted = ToyPotential()
    shifted.set_element_energy_shift({"Cu": -3.0})
    with pytest.raises(CommitteeError, match="different per-element E0s.*Cu"):
        CommitteePotential([ToyPotential(), shifted])
    with pytest.raises(CommitteeError, match="kind"):
        CommitteePotential([ToyPotential(), ToyPotential()], kind="deep")


def test_calculator_reports_spreads(emt_dataset):
    committee = CommitteePotential(_distinct_members(2))
    atoms = list(emt_dataset)[0].copy()
    atoms.calc = committee.calculator()
    energy = atoms.get_potential_energy()
    stress = atoms.get_stress()
    (record,) = committee.predict([atoms])
    assert energy == pytest.approx(record["energy"], rel=1e-6)
    assert atoms.calc.results["energy_std"] == pytest.approx(record["energy_std"], rel=1e-5)
    assert atoms.calc.results["forces_std"].shape == (len(atoms),)
    assert atoms.calc.results["stress_std"].shape == (6,) and stress.shape == (6,)


def test_hal_bias_force_is_minus_the_gradient_of_the_biased_energy(emt_dataset):
    committee = CommitteePotential(_distinct_members(3)).double()
    atoms = list(emt_dataset)[1].copy()
    atoms.calc = committee.calculator(bias_tau=0.5)
    forces = atoms.get_forces()
    step = 1e-4
    for index, axis in ((0, 0), (2, 1)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[index, axis] += sign * step
            moved.calc = committee.calculator(bias_tau=0.5)
            energies.append(moved.get_potential_energy())
        assert forces[index, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-3, abs=1e-6)


def test_sigma_gradient_is_zero_without_spread():
    assert np.all(sigma_energy_gradient(np.ones(3), np.ones((3, 2, 3))) == 0.0)
