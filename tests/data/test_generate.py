"""Structure generators make what they claim and record how in atoms.info."""

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list

from atomtune.data import generate
from atomtune.exceptions import AtomtuneError


@pytest.mark.parametrize(
    "prototype, elements, formula, n_atoms",
    [
        ("fcc", "Ni", "Ni", 1),
        ("bcc", "Fe", "Fe", 1),
        ("hcp", "Ti", "Ti2", 2),
        ("B2", ["Ni", "Al"], "AlNi", 2),
        ("L12", ["Ni", "Al"], "AlNi3", 4),
        ("rocksalt", ["Mg", "O"], "MgO", 2),
        ("perovskite", ["Sr", "Ti", "O"], "O3SrTi", 5),
    ],
)
def test_bulk_prototypes(prototype, elements, formula, n_atoms):
    atoms = generate.bulk_prototype(prototype, elements, 3.6)
    assert atoms.get_chemical_formula() == formula and len(atoms) == n_atoms
    assert atoms.info["generator"] == "bulk" and atoms.info["lattice_constant"] == 3.6 and atoms.info["id"]


def test_l12_nearest_neighbours_are_at_a_over_root_two():
    atoms = generate.bulk_prototype("L12", ["Ni", "Al"], 3.57)
    distances = neighbor_list("d", atoms, 2.6)
    assert np.allclose(distances, 3.57 / np.sqrt(2)) and len(distances) == 4 * 12


def test_bad_prototype_input_is_explained():
    with pytest.raises(AtomtuneError, match="unknown prototype"):
        generate.bulk_prototype("wurtzite", ["Zn", "O"], 3.2)
    with pytest.raises(AtomtuneError, match="takes 2 element"):
        generate.bulk_prototype("B2", ["Ni"], 2.9)


def test_supercell_and_provenance_chain():
    parent = generate.bulk_prototype("fcc", "Cu", 3.61, cubic=True)
    big = generate.supercell(parent, 2)
    assert len(big) == 32 and big.info["parent"] == parent.info["id"] and big.info["history"] == "bulk>supercell"
    assert generate.supercell(parent, [2, 1, 1]).get_volume() == pytest.approx(2 * parent.get_volume())


def test_substitution_hits_the_target_composition():
    host = generate.supercell(generate.bulk_prototype("fcc", "Ni", 3.55, cubic=True), 2)  # 32 sites
    alloy = generate.substitute(host, {"Ni": 0.75, "Cu": 0.25}, seed=1)
    symbols = alloy.get_chemical_symbols()
    assert symbols.count("Cu") == 8 and symbols.count("Ni") == 24
    other_seed = generate.substitute(host, {"Ni": 0.75, "Cu": 0.25}, seed=2)
    assert other_seed.get_chemical_symbols() != symbols  # random arrangement, same composition


def test_high_entropy_oxide_substitutes_only_the_cation_sublattice():
    rocksalt = generate.supercell(generate.bulk_prototype("rocksalt", ["Mg", "O"], 4.21, cubic=True), [2, 2, 1])
    cations = {symbol: 1.0 for symbol in ("Mg", "Co", "Ni", "Cu", "Zn")}
    heo = generate.substitute(rocksalt, cations, sublattice="Mg", seed=0)
    symbols = np.array(heo.get_chemical_symbols())
    anion_sites = np.array(rocksalt.get_chemical_symbols()) == "O"
    assert np.all(symbols[anion_sites] == "O")
    counts = [int(np.sum(symbols == s)) for s in cations]
    assert sum(counts) == 16 and max(counts) - min(counts) <= 1  # 16 cation sites over 5 species


def test_vacancy_and_antisite():
    b2 = generate.supercell(generate.bulk_prototype("B2", ["Ni", "Al"], 2.88), 2)
    empty = generate.vacancy(b2, 3)
    assert len(empty) == len(b2) - 1 and empty.info["element"] == b2[3].symbol
    swapped = generate.antisite(b2, 0, 1)
    assert swapped.get_chemical_formula() == b2.get_chemical_formula()
    assert swapped[0].symbol == b2[1].symbol and swapped[1].symbol == b2[0].symbol
    with pytest.raises(AtomtuneError, match="both Ni"):
        generate.antisite(b2, 0, 2)


def test_strains():
    atoms = generate.bulk_prototype("fcc", "Al", 4.05, cubic=True)
    expanded = generate.strain(atoms, 0.01)
    assert expanded.get_volume() == pytest.approx(atoms.get_volume() * 1.01**3)
    assert np.allclose(expanded.get_scaled_positions(), atoms.get_scaled_positions())
    sheared = generate.strain(atoms, [0, 0, 0, 0, 0, 0.02])  # Voigt xy engineering shear
    assert sheared.cell[0, 1] == pytest.approx(4.05 * 0.01)
    frames = generate.random_strains(atoms, 4, max_strain=0.02, seed=3)
    assert len(frames) == 4 and all(f.info["generator"] == "random_strain" for f in frames)
    assert len({f.info["id"] for f in frames}) == 4
    assert [f.info["strain"] for f in generate.isotropic_strains(atoms, [-0.01, 0.0])] == [-0.01, 0.0]
    with pytest.raises(AtomtuneError, match="symmetric"):
        generate.strain(atoms, np.array([[0, 0.1, 0], [0, 0, 0], [0, 0, 0]]))


def test_rattle_moves_atoms_by_about_stdev_and_is_reproducible():
    atoms = generate.supercell(generate.bulk_prototype("fcc", "Cu", 3.61, cubic=True), 3)
    moved = generate.rattle(atoms, 0.05, seed=4)
    displacement = moved.positions - atoms.positions
    assert displacement.std() == pytest.approx(0.05, rel=0.15)
    assert np.allclose(generate.rattle(atoms, 0.05, seed=4).positions, moved.positions)
    assert len({a.info["id"] for a in generate.rattles(atoms, 3, 0.05)}) == 3


def test_slab_has_the_layers_and_vacuum_asked_for():
    ni = generate.bulk_prototype("fcc", "Ni", 3.52)
    slab = generate.slab(ni, (1, 1, 1), layers=4, vacuum=10.0)
    assert len(slab) == 4 and slab.pbc.all()
    heights = slab.positions[:, 2]
    thickness = heights.max() - heights.min()
    assert thickness == pytest.approx(3 * 3.52 / np.sqrt(3), abs=1e-3)  # three (111) spacings
    assert slab.cell[2, 2] - thickness == pytest.approx(10.0, abs=1e-6)
    assert slab.info["surface_area"] == pytest.approx(np.sqrt(3) / 4 * (3.52**2 / 2) * 2, rel=1e-6)
    assert slab.info["miller"] == [1, 1, 1]


def test_stacking_fault_cell_keeps_nearest_neighbours_and_costs_energy():
    perfect = generate.stacking_fault("Al", 4.05, layers=6, fraction=0.0)
    fault = generate.stacking_fault("Al", 4.05, layers=6, fraction=1.0)
    unstable = generate.stacking_fault("Al", 4.05, layers=6, fraction=0.5)
    nearest = 4.05 / np.sqrt(2)
    # the intrinsic fault keeps every atom's 12 nearest neighbours (it only changes the stacking), the unstable one not
    for atoms, kept in ((perfect, True), (fault, True), (unstable, False)):
        distances = neighbor_list("d", atoms, nearest * 1.01)
        assert (len(distances) == 12 * len(atoms) and np.allclose(distances, nearest)) == kept
    energies = []
    for atoms in (perfect, fault, unstable):
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    assert fault.info["fault"] == "intrinsic" and fault.info["fault_area"] > 0
    assert energies[0] < energies[1] < energies[2]  # EMT Al: positive intrinsic, larger unstable fault energy
    with pytest.raises(AtomtuneError, match="multiple of 3"):
        generate.stacking_fault("Al", 4.05, layers=4)


@pytest.mark.parametrize("site", ["top", "bridge", "hollow"])
def test_adsorbate_sits_above_the_surface(site):
    slab = generate.supercell(generate.slab(generate.bulk_prototype("fcc", "Cu", 3.61), (1, 1, 1), 3, 10.0), [2, 2, 1])
    adsorbed = generate.adsorbate(slab, "O", site, height=1.8)
    assert len(adsorbed) == len(slab) + 1 and adsorbed[-1].symbol == "O"
    assert adsorbed.positions[-1, 2] == pytest.approx(slab.positions[:, 2].max() + 1.8, abs=1e-6)
    assert adsorbed.info["site"] == ("ontop" if site == "top" else site)
    surface_distances = np.linalg.norm(slab.positions - adsorbed.positions[-1], axis=1)
    assert surface_distances.min() >= 1.8 - 1e-6


def test_md_snapshots_driven_by_a_calculator():
    atoms = generate.supercell(generate.bulk_prototype("fcc", "Cu", 3.61, cubic=True), 2)
    frames = generate.md_snapshots(atoms, EMT(), count=3, interval=5, temperature_k=300, seed=0)
    assert len(frames) == 3 and [f.info["step"] for f in frames] == [5, 10, 15]
    assert all(f.calc is None for f in frames) and frames[0].info["driver"] == "EMT"
    assert not np.allclose(frames[0].positions, frames[1].positions)
