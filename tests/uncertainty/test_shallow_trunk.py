"""A shallow committee runs its trunk once: the K readout heads on one trunk pass (Potential.run_trunk / run_readout)
give the same energies, forces, stresses and spreads as K full forwards, on CHGNet and SevenNet (real weights) and the
tiny MACE.

These are the tests that fail when a backbone's split is wrong (part of the readout left in the trunk, a head that is
not the one passed in, forces or stress from the wrong leaves, an E0 counted twice)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from atomtune.models import load_potential, registry
from atomtune.uncertainty.committee import CommitteePotential, readout_block
from atomtune.uncertainty.train import _perturb


@pytest.fixture(scope="module", params=["chgnet", "sevennet", "mace"])
def backbone(request):
    """(name, a Potential of that backbone): CHGNet 0.3.0 and SevenNet-0 from their wheels, the tiny MACE (float64)."""
    if request.param == "chgnet":
        return "chgnet", load_potential("chgnet-0.3.0")
    if request.param == "sevennet":
        return "sevennet", load_potential("sevennet-0")
    return "mace", load_potential(str(request.getfixturevalue("tiny_mace_file")), dtype="float64", trust=True)


def small_cells() -> list[Atoms]:
    """A rattled cubic Ni cell and a rattled, strained two-species primitive cell (non-orthogonal)."""
    nickel = bulk("Ni", "fcc", a=3.52, cubic=True)
    nickel.rattle(0.05, seed=1)
    alloy = bulk("Cu", "fcc", a=3.61).repeat((2, 1, 1))
    alloy[0].symbol = "Al"
    alloy.set_cell(alloy.cell[:] @ (np.eye(3) + [[0.02, 0.01, 0], [0, -0.01, 0], [0, 0, 0.015]]), scale_atoms=True)
    alloy.rattle(0.05, seed=2)
    return [nickel, alloy]


def shallow_members(potential, size: int = 3, noise: float = 0.1) -> list:
    """K copies of ``potential`` with their readout blocks perturbed differently (as train_committee starts heads)."""
    members = []
    for k in range(size):
        member = copy.deepcopy(potential)
        _perturb(readout_block(member), noise, seed=k)
        members.append(member)
    return members


def _tolerances(potential) -> dict:
    """Float round-off of the potential's least precise tensor (a float64 MACE rebuilt from its saved architecture
    keeps some float32 buffers)."""
    float32 = any(t.dtype == torch.float32 for t in potential.state_dict().values())
    return {"rtol": 1e-5, "atol": 1e-5} if float32 else {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("head_gradients", ["batched", "loop"])
def test_trunk_once_equals_k_forwards(backbone, head_gradients):
    name, potential = backbone
    members = shallow_members(potential)
    shallow = CommitteePotential(members, kind="shallow")
    shallow.head_gradients = head_gradients
    k_forwards = CommitteePotential([copy.deepcopy(m) for m in members], kind="full")  # every member its own forward
    trunk_passes = []
    real_trunk = shallow.members[0].run_trunk

    def counting_trunk(*args, **kwargs):
        trunk_passes.append(1)
        return real_trunk(*args, **kwargs)

    shallow.members[0].run_trunk = counting_trunk
    cells = small_cells()
    fast = shallow.predict(cells, batch_size=2, members=True)
    slow = k_forwards.predict(cells, batch_size=2, members=True)
    assert trunk_passes, f"{name}: the shallow committee did not take the trunk-once path"
    assert shallow.head_gradients == head_gradients, f"{name}: batched head gradients fell back to a loop"
    tolerance = _tolerances(potential)
    for a, b in zip(slow, fast):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], err_msg=f"{name} {key}", **tolerance)
        assert a["energy_std"] > 0 and a["forces_std"].max() > 0, "heads that do not differ test nothing"


@pytest.mark.parametrize(("forces", "stress"), [(False, False), (True, False), (False, True)])
def test_trunk_once_without_forces_or_stress(backbone, forces, stress):
    """Energies only (no gradient at all), forces without stress and stress without forces: the same leaves as K
    forwards take."""
    name, potential = backbone
    members = shallow_members(potential)
    shallow = CommitteePotential(members, kind="shallow")
    k_forwards = CommitteePotential([copy.deepcopy(m) for m in members], kind="full")
    fast = shallow.predict(small_cells(), batch_size=2, forces=forces, stress=stress)
    slow = k_forwards.predict(small_cells(), batch_size=2, forces=forces, stress=stress)
    for a, b in zip(slow, fast):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(b[key], a[key], err_msg=f"{name} {key}", **_tolerances(potential))


def test_identical_heads_have_zero_spread(backbone):
    _name, potential = backbone
    committee = CommitteePotential([copy.deepcopy(potential) for _ in range(3)], kind="shallow")
    single = potential.predict(small_cells(), batch_size=2)
    for record, alone in zip(committee.predict(small_cells(), batch_size=2), single):
        assert record["energy_std"] == 0.0
        np.testing.assert_allclose(record["forces_std"], 0.0, atol=1e-12)
        np.testing.assert_allclose(record["stress_std"], 0.0, atol=1e-12)
        np.testing.assert_allclose(record["energy"], alone["energy"], **_tolerances(potential))
        np.testing.assert_allclose(record["forces"], alone["forces"], **_tolerances(potential))


def test_members_with_different_trunks_run_k_forwards(backbone):
    """A 'shallow' committee whose trunks differ (here: after the committee was built, in place) is not run on member
    0's trunk: it falls back to K forwards and still gives the members' own mean."""
    _name, potential = backbone
    members = shallow_members(potential)
    committee = CommitteePotential(members, kind="shallow").eval()
    assert committee._runs_trunk_once()
    first_block = potential.blocks()[1][0]  # a block before the readout (the embeddings)
    with torch.no_grad():
        for parameter in dict(members[1].blocks())[first_block].parameters():
            parameter.mul_(1.01)
    assert not committee._runs_trunk_once()
    reference = CommitteePotential([copy.deepcopy(m) for m in members], kind="full").predict(small_cells())
    for a, b in zip(reference, committee.predict(small_cells())):
        np.testing.assert_allclose(b["energy"], a["energy"], **_tolerances(potential))
        np.testing.assert_allclose(b["forces_std"], a["forces_std"], **_tolerances(potential))


def test_saved_shallow_committee_loads_and_runs_its_trunk_once(backbone, tmp_path):
    """The committee format is unchanged (one trunk directory plus head tensors); a loaded shallow committee shares
    its trunk again and runs it once, with the K-forward numbers of its own members."""
    _name, potential = backbone
    committee = CommitteePotential(shallow_members(potential, size=2), kind="shallow", calibration={"forces": 1.5})
    committee.save(tmp_path / "committee")
    loaded = registry.load_potential(str(tmp_path / "committee")).eval()
    assert loaded.kind == "shallow" and loaded._runs_trunk_once()
    k_forwards = CommitteePotential(list(loaded.members), kind="full", calibration={"forces": 1.5})
    original = committee.predict(small_cells())
    for a, b, c in zip(k_forwards.predict(small_cells()), loaded.predict(small_cells()), original):
        for key in a:
            np.testing.assert_allclose(b[key], a[key], err_msg=key, **_tolerances(loaded.members[0]))
            # the backbone's own save / load round trip (MACE's rebuilt architecture differs by ~1e-7 eV)
            np.testing.assert_allclose(b[key], c[key], err_msg=key, rtol=1e-5, atol=1e-5)


def test_mace_trunk_leaves_no_hook_behind(tiny_mace_file):
    potential = load_potential(str(tiny_mace_file), dtype="float64", trust=True)
    batch = potential.make_batch(small_cells())
    trunk = potential.run_trunk(batch.data)
    assert not potential.model.readouts[-1]._forward_hooks
    # the trunk's energy plus its own readout is compute's energy
    energy = trunk.energy + potential.run_readout(trunk, readout_block(potential))
    expected = potential.compute(batch.data, forces=False, stress=False)["energy"]
    torch.testing.assert_close(energy, expected, rtol=1e-12, atol=1e-12)


def test_backbone_without_the_split_runs_k_forwards(monkeypatch, emt_dataset):
    from toy_potential import ToyPotential

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    base = ToyPotential(seed=0)
    committee = CommitteePotential([copy.deepcopy(base) for _ in range(2)], kind="shallow")
    assert ToyPotential(seed=0).run_trunk(None) is None
    records = committee.predict(list(emt_dataset)[:2])
    assert all(record["energy_std"] == 0.0 for record in records)
