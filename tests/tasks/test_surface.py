"""Surface task: Cu(111) in EMT against a direct ASE slab calculation, thickness convergence, units, bad input."""

import json

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from atomtune.tasks import surface


def direct_cu111_surface_energy(layers: int = 5) -> float:
    """γ of EMT Cu(111) in J/m² from ASE alone: relaxed bulk, ase.build.fcc111 slab, relaxed."""
    cu = bulk("Cu", "fcc", a=3.6)
    cu.calc = EMT()
    BFGS(FrechetCellFilter(cu), logfile=None).run(fmax=1e-4)
    a = (4 * cu.get_volume()) ** (1 / 3)
    slab = fcc111("Cu", (1, 1, layers), a=a, vacuum=8.0, periodic=True)
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.001)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    return (slab.get_potential_energy() - len(slab) * cu.get_potential_energy()) / (2 * area) * 16.0217663


def test_unit_conversion_to_joule_per_square_metre():
    # 1 eV/Å² = 1.602176634e-19 J / 1e-20 m² = 16.02 J/m²
    assert surface.surface_energy_j_per_m2(2.0, 0, 0.0, 1.0) == pytest.approx(16.0217663, rel=1e-6)
    assert 1.0 / surface.J_PER_M2 == pytest.approx(units._e / 1e-20, rel=1e-9)


def test_cu111_matches_direct_ase_slab_and_is_independent_of_thickness():
    def cu111(thickness):
        settings = surface.Settings(miller_indices=[(1, 1, 1)], min_slab_thickness=thickness, fmax=0.001)
        (record,) = surface.run([bulk("Cu", "fcc", a=3.6)], EMT(), settings, progress=False)
        return record

    five, seven = cu111(9.0), cu111(13.0)
    assert (five["n_layers"], seven["n_layers"]) == (5, 7)
    assert five["symmetric"] and five["converged"] and five["id"] == "0:(1,1,1)"
    assert five["surface_energy_j_per_m2"] == pytest.approx(direct_cu111_surface_energy(5), abs=2e-3)
    assert 0.9 < five["surface_energy_j_per_m2"] < 1.2  # EMT Cu(111): 1.04 J/m²
    assert seven["surface_energy_j_per_m2"] == pytest.approx(five["surface_energy_j_per_m2"], rel=0.03)
    assert five["surface_energy_unrelaxed_j_per_m2"] >= five["surface_energy_j_per_m2"] - 1e-9


def test_low_index_surfaces_order_and_fixed_layers():
    settings = surface.Settings(miller_indices=[(1, 1, 1), (1, 0, 0), (1, 1, 0)], min_slab_thickness=8)
    records = {r["id"]: r for r in surface.run([bulk("Cu", "fcc", a=3.6, cubic=True)], EMT(), settings, progress=False)}
    gamma = {key: r["surface_energy_j_per_m2"] for key, r in records.items()}
    # the close-packed face is the lowest, the open (110) the highest, in EMT as in experiment
    assert gamma["0:(1,1,1)"] < gamma["0:(1,0,0)"] < gamma["0:(1,1,0)"]
    fixed = surface.Settings(miller_indices=[(1, 1, 0)], min_slab_thickness=8, fixed_bottom_layers=2)
    (half_relaxed,) = surface.run([bulk("Cu", "fcc", a=3.6, cubic=True)], EMT(), fixed, progress=False)
    relaxed = records["0:(1,1,0)"]
    assert relaxed["surface_energy_j_per_m2"] < half_relaxed["surface_energy_j_per_m2"]
    assert half_relaxed["surface_energy_j_per_m2"] < half_relaxed["surface_energy_unrelaxed_j_per_m2"]


def test_bad_input_gives_error_records_and_the_others_finish(toy_potential):
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    settings = surface.Settings(miller_indices=[(0, 0, 0), (1, 1, 1)], min_slab_thickness=6)
    records = surface.run([molecule, bulk("Cu", "fcc", a=3.6)], EMT(), settings, progress=False)
    assert [r["id"] for r in records] == ["0", "1:(0,0,0)", "1:(1,1,1)"]
    assert "not periodic" in records[0]["error"]
    assert "(0, 0, 0)" in records[1]["error"]
    assert "error" not in records[2] and records[2]["surface_energy_j_per_m2"] > 0
    iron = surface.run([bulk("Fe", "bcc", a=2.87)], toy_potential.calculator(), settings, progress=False)
    assert len(iron) == 1 and "Fe" in iron[0]["error"]


def test_records_round_trip_json_and_keys_match_between_reference_and_model(toy_potential, tmp_path):
    # the toy potential's random pair term has no repulsion, so relaxing with it would collapse the cell
    settings = surface.Settings(miller_indices=[(1, 1, 1)], min_slab_thickness=6, relax_bulk=False, relax=False)
    structures = [bulk("Cu", "fcc", a=3.6)]
    results = {
        "emt": surface.run(structures, EMT(), settings, progress=False),
        "toy": surface.run(structures, toy_potential, settings, progress=False),
    }
    assert set(results["emt"][0]) == set(results["toy"][0])
    assert json.loads(json.dumps(results)) == results
    rows = surface.compare(results, reference="emt")
    assert {r["property"] for r in rows} == set(surface.PROPERTIES)
    assert [r["toy"] for r in rows if r["id"] == "MAE"]
    paths = surface.plot(results, tmp_path)
    assert paths and all(p.stat().st_size > 1000 for p in paths)
