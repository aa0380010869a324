"""SevenNet backbone on the real 7net-0 weights: agreement with sevenn's calculator, derivatives, batching, saving."""

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomtune.exceptions import UnsupportedElementsError

pytest.importorskip("sevenn")
warnings.filterwarnings("ignore", message="No tensor product accelerator")


@pytest.fixture(scope="module")
def potential():
    from atomtune.models import load_potential

    potential = load_potential("sevennet-0")  # the registry name; SevenNet-0 11Jul2024 from the sevenn wheel
    assert (potential.backbone, potential.checkpoint) == ("sevennet", "7net-0")
    return potential


@pytest.fixture(scope="module")
def native_calculator():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def cells():
    """Small cells: rock-salt (two elements), strained hcp (non-orthogonal), sheared fcc alloy (triclinic)."""
    rocksalt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rocksalt.rattle(0.05, seed=1)
    hcp = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 1, 1))
    hcp.set_cell(hcp.cell[:] @ np.diag([1.02, 0.99, 1.01]), scale_atoms=True)
    hcp.rattle(0.05, seed=2)
    alloy = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    alloy.symbols[[1, 4, 6]] = "Ni"
    alloy.set_cell(alloy.cell[:] + [[0.0, 0.2, 0.0], [0.0, 0.0, 0.1], [0.15, 0.0, 0.0]], scale_atoms=True)
    alloy.rattle(0.05, seed=3)
    return [rocksalt, hcp, alloy]


def native_results(calculator, structures):
    results = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        results.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)))
    return results


def test_matches_sevenn_calculator(potential, native_calculator):
    structures = cells()
    predicted = potential.predict(structures, batch_size=len(structures))
    native = native_results(native_calculator, structures)
    for atoms, record, (energy, forces, stress) in zip(structures, predicted, native):
        assert abs(record["energy"] - energy) / len(atoms) <= 1e-4
        np.testing.assert_allclose(record["forces"], forces, atol=1e-4)
        np.testing.assert_allclose(record["stress"], stress, atol=1e-5)  # 3×3, ASE sign
        assert np.abs(stress).max() > 1e-3  # the comparison is not between two zeros


def test_sevenn_convolution_path_gives_the_same_numbers(potential):
    atoms = cells()[2]
    fast = potential.predict([atoms])[0]
    potential.fast_convolution = False
    try:
        reference = potential.predict([atoms])[0]
    finally:
        potential.fast_convolution = True
    assert fast["energy"] == pytest.approx(reference["energy"], abs=1e-4)
    np.testing.assert_allclose(fast["forces"], reference["forces"], atol=1e-5)
    np.testing.assert_allclose(fast["stress"], reference["stress"], atol=1e-6)


def test_batched_equals_one_by_one(potential):
    structures = cells() + [bulk("Si", "diamond", a=5.43, cubic=True), bulk("Fe", "bcc", a=2.87).repeat((2, 2, 1))]
    batched = potential.predict(structures, batch_size=5)
    single = potential.predict(structures, batch_size=1)
    for a, b in zip(batched, single):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-4)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)
        np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-6)


@pytest.fixture
def float64_potential(potential):
    potential.model.double()  # float32 -> float64 -> float32 restores the weights exactly
    yield potential
    potential.model.float()


def test_float64_forces_and_stress_are_energy_derivatives(float64_potential):
    from ase.stress import voigt_6_to_full_3x3_stress

    atoms = cells()[2]
    calculator = float64_potential.calculator()
    atoms.calc = calculator

    def energy(positions=None, cell=None):
        probe = atoms.copy()
        if cell is not None:
            probe.set_cell(cell, scale_atoms=True)
        if positions is not None:
            probe.positions = positions
        probe.calc = calculator
        return probe.get_potential_energy()

    forces = atoms.get_forces()
    delta = 1e-4
    for index, axis in [(0, 0), (3, 2)]:
        shifted = [atoms.positions.copy(), atoms.positions.copy()]
        shifted[0][index, axis] += delta
        shifted[1][index, axis] -= delta
        finite_difference = -(energy(positions=shifted[0]) - energy(positions=shifted[1])) / (2 * delta)
        assert forces[index, axis] == pytest.approx(finite_difference, abs=1e-6)

    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    delta = 1e-5  # the strain derivative's truncation error at 1e-4 is ~4e-8 eV/Å³
    for a, b in [(0, 0), (1, 2)]:
        energies = []
        for sign in (1, -1):
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = sign * delta
            energies.append(energy(cell=atoms.cell[:] @ (np.eye(3) + strain)))
        expected = (energies[0] - energies[1]) / (2 * delta) / atoms.get_volume() / (1 if a == b else 2)
        assert stress[a, b] == pytest.approx(expected, abs=1e-9)


def test_unsupported_element_raises_before_compute(potential, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("compute must not run")

    monkeypatch.setattr(potential, "compute", fail)
    polonium = bulk("Po", "sc", a=3.35)  # not among SevenNet-0's 89 elements
    with pytest.raises(UnsupportedElementsError, match=r"sevennet:7net-0 does not support element\(s\) Po"):
        potential.predict([bulk("Cu"), polonium])
    with pytest.raises(UnsupportedElementsError):
        potential.featurize(polonium)


def test_blocks_cover_every_parameter_once(potential):
    blocks = potential.blocks()
    names = [name for name, _ in blocks]
    assert names[0] == "embedding" and names[-1] == "readout"
    assert names[1:-1] == [f"interaction_{i}" for i in range(5)]
    seen = [id(parameter) for _, block in blocks for parameter in block.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(parameter) for parameter in potential.parameters()}
    readout = dict(blocks)["readout"]
    assert "rescale_atomic_energy" in readout  # the per-element shift/scale lives in the readout block


def test_supported_elements_cutoff_and_checkpoint_queries(potential):
    from atomtune.models.sevennet import SevennetPotential

    assert len(potential.supported_elements) == 89 and {"Cu", "Ni", "Na", "Cl", "Ti"} <= potential.supported_elements
    assert "Po" not in potential.supported_elements
    assert potential.cutoff == 5.0
    assert SevennetPotential.checkpoint_available("7net-0") and SevennetPotential.checkpoint_available("7net-l3i5")
    assert not SevennetPotential.checkpoint_available("7net-unknown")
    assert SevennetPotential.checkpoint_elements("7net-0") == potential.supported_elements
    assert potential.backbone_version() == __import__("sevenn").__version__


def test_atom_features_are_last_layer_scalars(potential):
    structures = cells()
    features = potential.embed(structures)
    assert [f.shape for f in features] == [(len(atoms), 128) for atoms in structures]
    assert np.isfinite(np.concatenate(features)).all()


def test_training_mode_keeps_forces_differentiable_in_parameters(potential):
    batch = potential.make_batch(cells()[:2])
    potential.train()
    try:
        output = potential(batch, forces=True, stress=True)
        loss = output["forces"].pow(2).sum() + output["stress"].pow(2).sum()
        weights = potential.model._modules["2_convolution"].weight_nn.layer0.weight
        (gradient,) = torch.autograd.grad(loss, [weights])
    finally:
        potential.eval()
    assert gradient.abs().sum() > 0


def test_native_element_shift_moves_energy_per_atom(potential):
    atoms = cells()[2]  # 5 Cu, 3 Ni
    before = potential.predict([atoms])[0]["energy"]
    try:
        potential.set_native_element_shift({"Cu": -1.0, "Ni": 0.5})
        potential.set_native_element_shift({"Cu": -1.0, "Ni": 0.5})  # relative to the checkpoint: not cumulative
        after = potential.predict([atoms])[0]
    finally:
        potential.set_native_element_shift({})
    assert after["energy"] - before == pytest.approx(5 * -1.0 + 3 * 0.5, abs=1e-4)
    assert potential.predict([atoms])[0]["energy"] == pytest.approx(before, abs=1e-5)
    with pytest.raises(UnsupportedElementsError):
        potential.set_native_element_shift({"Po": 1.0})


@pytest.fixture
def finetuned_potential(potential):
    """The shared potential with changed weights, a native shift and an atomtune shift; restored afterwards."""
    weight = potential.model._modules["reduce_hidden_to_energy"].linear.weight
    original = weight.detach().clone()
    with torch.no_grad():  # stand-in for a fine-tune: the saved weights differ from the shipped ones
        weight.mul_(1.01)
    potential.set_native_element_shift({"Cu": -0.25})
    potential.set_element_energy_shift({"Ni": -2.0})
    yield potential
    with torch.no_grad():
        weight.copy_(original)
    potential.set_native_element_shift({})
    potential.set_element_energy_shift({})


def test_save_load_round_trip_and_sevenn_reads_the_checkpoint(finetuned_potential, tmp_path):
    from sevenn.calculator import SevenNetCalculator

    from atomtune.models import load_potential
    from atomtune.models.sevennet import NATIVE_CHECKPOINT_FILE

    structures = cells()
    expected = finetuned_potential.predict(structures)
    finetuned_potential.save(tmp_path / "model")

    loaded = load_potential(str(tmp_path / "model"))
    assert loaded.native_element_shift == {"Cu": -0.25}
    assert loaded.get_element_energy_shift() == {"Ni": -2.0}
    for a, b in zip(expected, loaded.predict(structures)):
        assert a["energy"] == b["energy"]
        np.testing.assert_array_equal(a["forces"], b["forces"])
        np.testing.assert_array_equal(a["stress"], b["stress"])

    # sevenn's own calculator loads the saved checkpoint: it carries the weights and the native shift, not the
    # atomtune-only element_energy_shift
    native = SevenNetCalculator(str(tmp_path / "model" / NATIVE_CHECKPOINT_FILE), device="cpu")
    alloy = structures[2].copy()
    alloy.calc = native
    n_nickel = alloy.get_chemical_symbols().count("Ni")
    assert alloy.get_potential_energy() == pytest.approx(expected[2]["energy"] + 2.0 * n_nickel, abs=1e-4)
    np.testing.assert_allclose(alloy.get_forces(), expected[2]["forces"], atol=1e-4)


@pytest.mark.slow
def test_l3i5_matches_sevenn_calculator():
    from sevenn.calculator import SevenNetCalculator

    from atomtune.models import load_potential

    potential = load_potential("sevennet-l3i5")
    structures = cells()[1:]
    predicted = potential.predict(structures)
    native = native_results(SevenNetCalculator("7net-l3i5", device="cpu"), structures)
    for atoms, record, (energy, forces, stress) in zip(structures, predicted, native):
        assert abs(record["energy"] - energy) / len(atoms) <= 1e-4
        np.testing.assert_allclose(record["forces"], forces, atol=1e-4)
        np.testing.assert_allclose(record["stress"], stress, atol=1e-5)


def test_singular_or_missing_cell_is_a_clear_error(potential):
    """Issue 16: a zero-volume cell or a periodic direction without a cell vector was a LinAlgError from the graph builder."""
    from ase import Atoms

    from atomtune.exceptions import AtomtuneError

    flat = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], cell=[[3.6, 0, 0], [0, 3.6, 0], [3.6, 3.6, 0]], pbc=True)
    flat.info["id"] = "flat-cell"
    with pytest.raises(AtomtuneError, match=r"flat-cell.*cell is singular"):
        potential.predict([flat])
    no_cell = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], pbc=True)
    with pytest.raises(AtomtuneError, match=r"Cu2.*cell vector 1 is zero"):
        potential.predict([no_cell])


def test_errors_on_a_molecule_among_bulk_keep_the_bulk_stress(potential):
    """Issue 16: with a molecule in the set, every stress row vanished from the errors table without comment."""
    from ase.build import molecule

    from atomtune.data.dataset import attach_labels
    from atomtune.tasks import errors

    structures = []
    for k, atoms in enumerate(cells()):
        atoms.calc = None
        attach_labels(atoms, -3.0 * len(atoms), np.zeros((len(atoms), 3)), np.zeros(6))
        atoms.info["id"] = f"bulk-{k}"
        structures.append(atoms)
    water = molecule("H2O")
    attach_labels(water, -14.0, np.zeros((3, 3)))
    water.info["id"] = "water"
    records = errors.run([structures[0], water, *structures[1:]], potential, progress=False)
    assert ["stress_pred" in r for r in records] == [True, False, True, True]
    result = errors.metrics(records)
    assert result["n_structures_stress"] == 3 and result["stress_mae_gpa"] > 0
    assert "water" in result["stress_note"] and "not periodic" in result["stress_note"]
    alone = errors.run(structures, potential, progress=False)  # the molecule changes nothing for the bulk cells
    np.testing.assert_allclose(records[2]["stress_pred"], alone[1]["stress_pred"], atol=1e-6)
