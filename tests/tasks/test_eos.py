"""Equation of state: EMT Cu's known numbers, the GPa conversion, error records, EMT vs Potential records."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa

from atomtune.tasks import eos


def test_emt_copper_lattice_constant_and_bulk_modulus():
    primitive, cubic = eos.run([bulk("Cu", "fcc", a=3.7), bulk("Cu", "fcc", a=3.5, cubic=True)], EMT(), progress=False)
    for record in (primitive, cubic):
        assert "error" not in record
        assert record["lattice_constant"] == pytest.approx(3.590, abs=0.005)  # conventional a, from either cell
        assert record["bulk_modulus_gpa"] == pytest.approx(134.0, rel=0.02)
        assert 3.5 < record["bulk_modulus_derivative"] < 5.5
        assert record["volume_per_atom"] == pytest.approx(3.590**3 / 4, rel=0.005)
        assert record["fit_rmse_mev_per_atom"] < 0.5
    assert primitive["cell_lengths"][0] == pytest.approx(3.590 / np.sqrt(2), abs=0.005)


def test_bulk_modulus_in_gpa_matches_a_finite_difference_curvature():
    (record,) = eos.run([bulk("Cu", "fcc", a=3.6)], EMT(), eos.Settings(relax_first=False), progress=False)
    # B = V d²E/dV² at V₀, by central differences with EMT directly, converted to GPa independently of the task.
    volume = record["volume_per_atom"]
    energies = []
    for scale in (0.99, 1.0, 1.01):
        atoms = bulk("Cu", "fcc", a=(4 * volume * scale) ** (1 / 3))
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
    step = 0.01 * volume
    curvature = (energies[0] - 2 * energies[1] + energies[2]) / step**2
    assert record["bulk_modulus_gpa"] == pytest.approx(volume * curvature / GPa, rel=0.02)
    assert record["bulk_modulus_gpa"] * GPa * 160.21766 == pytest.approx(record["bulk_modulus_gpa"] * 1.0, rel=1e-4)


def test_bad_structure_gets_an_error_record_and_the_others_finish():
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    records = eos.run([molecule, bulk("Cu", "fcc", a=3.6)], EMT(), progress=False)
    assert "periodic" in records[0]["error"]
    assert "error" not in records[1] and records[1]["bulk_modulus_gpa"] > 100


def test_minimum_outside_the_sampled_volumes_is_flagged():
    settings = eos.Settings(relax_first=False, max_volume_strain=0.03, n_points=5)
    near, far = eos.run([bulk("Cu", "fcc", a=3.68), bulk("Cu", "fcc", a=4.2)], EMT(), settings, progress=False)
    assert "outside the sampled volumes" in near["error"]
    assert near["bulk_modulus_gpa"] > 0  # the numbers are kept, flagged
    assert "fit failed" in far["error"] or "outside the sampled volumes" in far["error"]
    assert len(far["energies_per_atom"]) == 5  # the curve is kept


def test_same_call_with_emt_and_a_potential_gives_comparable_records(tmp_path):
    from toy_potential import ToyPotential

    torch.manual_seed(0)
    structures = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Al", "fcc", a=4.05)]
    settings = eos.Settings(relax_first=False, n_points=7)
    by_emt = eos.run(structures, EMT(), settings, progress=False)
    toy = ToyPotential()
    by_potential = eos.run(structures, toy, settings, progress=False)
    by_calculator = eos.run(structures, toy.calculator(), settings, progress=False)
    assert [r["id"] for r in by_emt] == [r["id"] for r in by_potential] == ["0", "1"]
    # The toy potential is random (it may have no minimum here): same record shape, with "error" where its fit fails.
    for emt_record, toy_record in zip(by_emt, by_potential):
        assert "error" not in emt_record
        assert set(toy_record) - {"error"} <= set(emt_record)
        assert len(toy_record["energies_per_atom"]) == len(emt_record["energies_per_atom"]) == 7
    for a, b in zip(by_potential, by_calculator):
        assert set(a) == set(b)
        np.testing.assert_allclose(a["energies_per_atom"], b["energies_per_atom"], atol=1e-5)
    assert json.loads(json.dumps(by_potential)) == by_potential
    rows = eos.compare({"emt": by_emt, "toy": by_potential, "emt-again": by_emt}, reference="emt")
    assert {"lattice_constant", "bulk_modulus_gpa"} <= {row["property"] for row in rows}
    assert next(row for row in rows if row["id"] == "MAE")["emt-again"] == 0.0
    paths = eos.plot({"emt": by_emt, "toy": by_potential}, tmp_path)
    assert len(paths) >= 3 and all(p.stat().st_size > 1000 for p in paths)
