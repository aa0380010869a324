"""Exact chunked evaluation (atomtune.models.chunking): chunks with a ghost halo give the whole cell's energy, forces and
stress to float64 round-off, predict / the ASE calculator route large cells through it, and a cell too large even for one
chunk is refused with the estimate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from emt_data import alloy_cell

from atomtune.models import chunking

ENERGY_TOLERANCE = 1e-8  # eV/atom
FORCE_TOLERANCE = 1e-7  # eV/Å
STRESS_TOLERANCE = 1e-9  # eV/Å³


def water_lattice(n: int = 3, spacing: float = 7.0) -> Atoms:
    """n³ randomly oriented water molecules on a cubic lattice (81 atoms for n = 3): dilute, so that a halo of CHGNet's
    or SevenNet's 24–25 Å receptive field stays ~1,100 atoms per chunk."""
    rng = np.random.default_rng(0)
    atoms = Atoms()
    for corner in np.ndindex(n, n, n):
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3))
        water.translate(np.asarray(corner) * spacing + rng.normal(scale=0.3, size=3))
        atoms.extend(water)
    atoms.set_cell(np.eye(3) * spacing * n)
    atoms.pbc = True
    atoms.wrap()
    return atoms


def assert_same(chunked: dict, whole: dict, n_atoms: int) -> None:
    assert abs(chunked["energy"] - whole["energy"]) / n_atoms < ENERGY_TOLERANCE
    assert np.abs(chunked["forces"] - whole["forces"]).max() < FORCE_TOLERANCE
    assert np.abs(chunked["stress"] - whole["stress"]).max() < STRESS_TOLERANCE


def test_mace_chunks_equal_whole_cell(tiny_mace):
    atoms = alloy_cell(3)
    (whole,) = tiny_mace.predict([atoms])
    chunked = chunking.predict_chunked(tiny_mace, atoms, grid=(2, 2, 1))
    assert chunked["chunking"]["n_chunks"] == 4
    assert chunked["chunking"]["receptive_field_angstrom"] == pytest.approx(2 * 4.5, abs=0.1)  # 2 layers × r_max
    assert np.abs(whole["stress"]).max() > 1e-3  # a strained cell: the stress comparison means something
    assert_same(chunked, whole, len(atoms))
    energy_only = chunking.predict_chunked(tiny_mace, atoms, forces=False, stress=False, grid=(1, 2, 2))
    assert set(energy_only) == {"energy", "chunking"}
    assert abs(energy_only["energy"] - whole["energy"]) / len(atoms) < ENERGY_TOLERANCE


def test_mace_per_atom_energies_sum_to_energy_and_weights_select_atoms(tiny_mace):
    atoms = alloy_cell(2)
    (whole,) = tiny_mace.predict([atoms])
    data = tiny_mace.collate([tiny_mace.featurize(atoms)])
    output = tiny_mace.compute_atoms(data)
    assert float(output["energies"].detach().sum()) == pytest.approx(whole["energy"], abs=1e-9)
    assert np.abs(output["forces"].detach().numpy() - whole["forces"]).max() < 1e-10
    # the forces of one atom's energy alone sum to zero (translation invariance) and differ from the total forces
    weights = np.zeros(len(atoms))
    weights[0] = 1.0
    import torch

    one = tiny_mace.compute_atoms(data, weights=torch.as_tensor(weights))["forces"].detach().numpy()
    assert np.abs(one.sum(axis=0)).max() < 1e-10
    assert np.abs(one - whole["forces"]).max() > 1e-3


def test_a_halo_narrower_than_the_receptive_field_is_not_exact(tiny_mace):
    """The exactness test can fail: a halo of one cutoff (one layer of two) changes energies and forces."""
    atoms = alloy_cell(3)
    (whole,) = tiny_mace.predict([atoms])
    plan = chunking.plan(tiny_mace, atoms, grid=(2, 2, 1))
    plan.chunks = chunking.build_chunks(atoms, (2, 2, 1), tiny_mace.cutoff, vacuum=tiny_mace.cutoff + 1.0)
    truncated = chunking.evaluate(tiny_mace, atoms, plan)
    assert np.abs(truncated["forces"] - whole["forces"]).max() > 1e-4


def test_chunks_own_every_atom_once_and_images_carry_their_atom(tiny_mace):
    atoms = alloy_cell(3)
    chunks = chunking.build_chunks(atoms, (3, 2, 2), tiny_mace.receptive_field, vacuum=6.0)
    owned = np.concatenate([chunk.index[: chunk.n_owned] for chunk in chunks])
    assert sorted(owned.tolist()) == list(range(len(atoms)))
    for chunk in chunks:
        assert (chunk.cluster.numbers == atoms.numbers[chunk.index]).all()
        assert len(chunk.cluster) > chunk.n_owned  # the halo holds images of atoms of this cell (it is < 2R wide)


def test_predict_and_calculator_route_large_cells_through_chunks(tiny_mace, monkeypatch):
    """A ~100-atom cell forced into ≥ 4 chunks: predict and the ASE calculator give the whole-cell results.

    A cell smaller than twice the receptive field never needs chunks by the estimate (every chunk with its halo is larger
    than the cell), so "too large" is forced here and the budget is set to what a 2×2×1 split needs."""
    atoms = alloy_cell(3)
    (whole,) = tiny_mace.predict([atoms])
    heights = chunking._heights(atoms.cell.array)
    cluster = chunking._cluster_atoms_estimate(heights, (2, 2, 1), tiny_mace.receptive_field + chunking.HALO_MARGIN,
                                               chunking.number_density(atoms))
    tiny_mace.memory_budget = chunking.estimate_bytes(tiny_mace, cluster, chunking.number_density(atoms)) * 1.001
    monkeypatch.setattr(chunking, "needs_chunking", lambda potential, structure, budget=None: len(structure) > 50)
    small = bulk("Cu", "fcc", a=3.61, cubic=True)
    records = tiny_mace.predict([atoms, small])
    assert records[0]["chunking"]["n_chunks"] >= 4
    assert "chunking" not in records[1]
    assert_same(records[0], whole, len(atoms))
    atoms.calc = tiny_mace.calculator()
    assert abs(atoms.get_potential_energy() - whole["energy"]) / len(atoms) < ENERGY_TOLERANCE
    assert np.abs(atoms.get_forces() - whole["forces"]).max() < FORCE_TOLERANCE
    from ase.stress import full_3x3_to_voigt_6_stress

    assert np.abs(atoms.get_stress() - full_3x3_to_voigt_6_stress(whole["stress"])).max() < STRESS_TOLERANCE


def test_cell_too_large_even_for_one_chunk_is_refused_with_the_estimate(tiny_mace):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((20, 20, 20))  # 32,000 atoms, never featurised here
    tiny_mace.memory_budget = 50e6  # 50 MB: less than the receptive field around one atom needs
    with pytest.raises(chunking.CellTooLargeError) as error:
        tiny_mace.predict([atoms])
    message = str(error.value)
    assert "32000 atoms" in message and "72.2×72.2×72.2 Å" in message
    assert "GiB" in message and "budget" in message and "receptive field of 9 Å" in message
    assert "smaller cell" in message and "LAMMPS" in message


def test_budget_from_the_environment(tiny_mace, monkeypatch):
    monkeypatch.setenv("ATOMTUNE_MEMORY_BUDGET_GIB", "0.5")
    assert chunking.memory_budget_bytes(tiny_mace) == 0.5 * 2**30
    tiny_mace.memory_budget = 1e6  # the potential's own setting wins
    assert chunking.memory_budget_bytes(tiny_mace) == 1e6


def test_large_non_periodic_structure_is_refused_not_chunked(tiny_mace):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((8, 8, 8))
    atoms.pbc = False
    tiny_mace.memory_budget = 1e6
    with pytest.raises(chunking.CellTooLargeError, match="only 3D-periodic cells"):
        tiny_mace.predict([atoms])


def test_chgnet_ten_thousand_atom_cell_is_refused_with_the_estimate():
    """The estimates behind the refusals measured in benchmarks/bench_scale.py: a 10,976-atom Cu cell with CHGNet needs
    more than 2 GiB even with recomputed activations, and so does one chunk (the 24 Å receptive field around one atom,
    ~5,960 atoms); tests/models/test_checkpointed_inference.py has the budgets where it fits."""
    pytest.importorskip("chgnet")
    from atomtune.models.registry import load_potential

    potential = copy.deepcopy(load_potential("chgnet-0.3.0"))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((14, 14, 14))
    potential.memory_budget = 2 * 2**30
    with pytest.raises(chunking.CellTooLargeError) as error:
        potential.predict([atoms])
    assert "10976 atoms" in str(error.value) and "receptive field of 24 Å" in str(error.value)


@pytest.fixture(scope="module")
def chgnet_float64():
    pytest.importorskip("chgnet")
    from atomtune.models.registry import load_potential

    return copy.deepcopy(load_potential("chgnet-0.3.0")).double()


@pytest.fixture(scope="module")
def sevennet_float64():
    pytest.importorskip("sevenn")
    from atomtune.models.registry import load_potential

    potential = load_potential("sevennet-0")
    potential.model.double()
    yield potential
    potential.model.float()


@pytest.mark.parametrize("name", ["chgnet_float64", "sevennet_float64"])
def test_real_weights_chunks_equal_whole_cell(name, request):
    potential = request.getfixturevalue(name)
    atoms = water_lattice()
    (whole,) = potential.predict([atoms])
    data = potential.collate([potential.featurize(atoms)])
    energies = potential.compute_atoms(data, forces=False)["energies"].detach().double().sum().item()
    assert energies == pytest.approx(whole["energy"], abs=1e-8)
    chunked = chunking.predict_chunked(potential, atoms, grid=(2, 2, 1))
    assert chunked["chunking"]["n_chunks"] == 4
    expected_field = {"chgnet": 4 * 6.0, "sevennet": 5 * 5.0}[potential.backbone]
    assert chunked["chunking"]["receptive_field_angstrom"] == pytest.approx(expected_field, abs=0.1)
    assert_same(chunked, whole, len(atoms))
