"""Elastic constants: EMT Cu's Cᵢⱼ, B from Cᵢⱼ = B from the EOS, strain convention, EMT vs Potential records."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.tasks import elastic, eos


@pytest.fixture(scope="module")
def copper():
    (record,) = elastic.run([bulk("Cu", "fcc", a=3.6)], EMT(), progress=False)
    return record


def test_emt_copper_elastic_constants(copper):
    assert "error" not in copper
    tensor = np.array(copper["elastic_tensor_gpa"])
    assert copper["c11_gpa"] == pytest.approx(172.0, abs=3.0)
    assert copper["c12_gpa"] == pytest.approx(115.1, abs=3.0)
    assert copper["c44_gpa"] == pytest.approx(89.6, abs=3.0)
    # cubic: C11 = C22 = C33, C12 = C13 = C23, C44 = C55 = C66, no coupling between normal and shear
    np.testing.assert_allclose(np.diag(tensor)[:3], copper["c11_gpa"], rtol=1e-3)
    np.testing.assert_allclose(np.diag(tensor)[3:], copper["c44_gpa"], rtol=1e-3)
    assert np.abs(tensor[:3, 3:]).max() < 0.5
    assert copper["mechanically_stable"]
    assert copper["shear_modulus_reuss_gpa"] <= copper["shear_modulus_vrh_gpa"] <= copper["shear_modulus_voigt_gpa"]


def test_bulk_modulus_from_elastic_constants_equals_the_eos_one(copper):
    cubic_bulk_modulus = (copper["c11_gpa"] + 2 * copper["c12_gpa"]) / 3
    assert copper["bulk_modulus_vrh_gpa"] == pytest.approx(cubic_bulk_modulus, rel=1e-6)
    (curve,) = eos.run([bulk("Cu", "fcc", a=3.6)], EMT(), progress=False)
    assert cubic_bulk_modulus == pytest.approx(curve["bulk_modulus_gpa"], rel=0.015)


def test_strain_uses_engineering_shear():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    sheared = elastic.strained(atoms, 5, 0.02)  # Voigt 6 = xy, γ = 0.02 → ε_xy = ε_yx = 0.01
    deformation = np.linalg.solve(atoms.cell[:], sheared.cell[:])
    expected = np.eye(3)
    expected[0, 1] = expected[1, 0] = 0.01
    np.testing.assert_allclose(deformation, expected, atol=1e-12)
    stretched = elastic.strained(atoms, 2, -0.01)
    assert stretched.cell[2, 2] == pytest.approx(3.6 * 0.99)


def test_same_call_with_emt_and_a_potential_gives_comparable_records(tmp_path):
    from ase import Atoms
    from toy_potential import ToyPotential

    torch.manual_seed(0)
    structures = [bulk("Cu", "fcc", a=3.6), Atoms("Cu", positions=[[0, 0, 0]])]
    settings = elastic.Settings(relax_first=False, strains=(0.01,))
    by_emt = elastic.run(structures, EMT(), settings, progress=False)
    by_potential = elastic.run(structures, ToyPotential(), settings, progress=False)
    assert set(by_emt[0]) == set(by_potential[0])
    assert "periodic" in by_emt[1]["error"] and "periodic" in by_potential[1]["error"]
    assert json.loads(json.dumps(by_potential)) == by_potential
    rows = elastic.compare({"emt": by_emt, "toy": by_potential}, reference="emt")
    assert {row["property"] for row in rows} == set(elastic.PROPERTIES)
    paths = elastic.plot({"emt": by_emt, "toy": by_potential}, tmp_path)
    assert any("elastic_tensor" in p.name for p in paths)
