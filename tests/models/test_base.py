"""The Potential protocol's shared machinery, checked on the toy potential (fast)."""

import numpy as np
import pytest
from ase.build import bulk, molecule

from atomtune.exceptions import UnsupportedElementsError


def test_forces_match_finite_differences(toy_potential, emt_dataset):
    atoms = emt_dataset[2].copy()
    calc = toy_potential.double().calculator()
    atoms.calc = calc
    forces = atoms.get_forces()
    delta = 1e-4
    for index, axis in [(0, 0), (1, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[index, axis] += delta
        minus.positions[index, axis] -= delta
        plus.calc = calc
        e_plus = plus.get_potential_energy()
        minus.calc = calc
        e_minus = minus.get_potential_energy()
        assert forces[index, axis] == pytest.approx(-(e_plus - e_minus) / (2 * delta), abs=1e-6)


def test_stress_matches_strain_derivative(toy_potential):
    from ase.stress import voigt_6_to_full_3x3_stress

    atoms = bulk("Cu", "fcc", a=3.5, cubic=True)
    atoms.rattle(0.05, seed=1)
    calc = toy_potential.double().calculator()
    atoms.calc = calc
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    delta = 1e-5
    for a, b in [(0, 0), (0, 1)]:
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = sign * delta
            strained.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        factor = 1 if a == b else 2
        expected = (energies[0] - energies[1]) / (2 * delta) / atoms.get_volume() / factor
        assert stress[a, b] == pytest.approx(expected, abs=1e-7)


def test_batched_equals_one_by_one(toy_potential, emt_dataset):
    batched = toy_potential.predict(list(emt_dataset), batch_size=5)
    single = toy_potential.predict(list(emt_dataset), batch_size=1)
    for a, b in zip(batched, single):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-5)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-5)
        np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-6)


def test_element_energy_shift_adds_per_atom(toy_potential, emt_dataset):
    before = toy_potential.predict([emt_dataset[0]])[0]["energy"]
    toy_potential.set_element_energy_shift({"Cu": -1.0, "Ni": -2.0, "Al": -3.0})
    after = toy_potential.predict([emt_dataset[0]])[0]["energy"]
    symbols = emt_dataset[0].get_chemical_symbols()
    expected = -1.0 * symbols.count("Cu") - 2.0 * symbols.count("Ni") - 3.0 * symbols.count("Al")
    assert after - before == pytest.approx(expected, abs=1e-5)


def test_unsupported_element_names_element_and_backbone(toy_potential):
    with pytest.raises(UnsupportedElementsError, match=r"toy:toy does not support element\(s\) Fe.*structure 1"):
        toy_potential.predict([bulk("Cu"), bulk("Fe")])


def test_save_and_load_round_trip(toy_potential, emt_dataset, tmp_path, monkeypatch):
    from toy_potential import ToyPotential

    from atomtune.models import registry

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    toy_potential.set_element_energy_shift({"Cu": -3.5})
    toy_potential.save(tmp_path / "model")
    loaded = registry.load_potential(str(tmp_path / "model"))
    assert isinstance(loaded, ToyPotential)
    assert loaded.get_element_energy_shift() == {"Cu": -3.5}
    a = toy_potential.predict([emt_dataset[0]])[0]
    b = loaded.predict([emt_dataset[0]])[0]
    assert a["energy"] == pytest.approx(b["energy"], abs=1e-6)


def test_non_periodic_molecule_energy_and_forces(toy_potential):
    water = molecule("H2O")
    record = toy_potential.predict([water], stress=False)[0]
    assert np.isfinite(record["energy"]) and record["forces"].shape == (3, 3)


def test_cell_relaxation_evaluates_the_model_once_per_step(toy_potential):
    """A cell filter asks forces, then stress, of every new state: the calculator computes stress with the forces once
    it has been asked for, instead of evaluating the model a second time for the stress."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    calls = []
    potential = toy_potential.double()
    predict = potential.predict

    def counting(structures, **kwargs):
        calls.append(kwargs.get("stress"))
        return predict(structures, **kwargs)

    potential.predict = counting
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.calc = potential.calculator()
    optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
    optimizer.run(fmax=1e-3, steps=5)
    states = optimizer.nsteps + 1
    assert len(calls) <= states + 1  # the first state may be computed twice (forces first, stress asked after)
    assert all(calls[1:])
