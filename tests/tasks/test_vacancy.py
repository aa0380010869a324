"""Vacancy task: the Cu EMT formation energy against a direct ASE calculation, distinct sites, bad input, records."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from atomtune.tasks import vacancy


def direct_cu_vacancy_formation_energy() -> float:
    """E_f of Cu in EMT from ASE alone: relaxed lattice, 3×3×3 conventional cell (108 atoms), relaxed vacancy."""
    unit = bulk("Cu", "fcc", a=3.6, cubic=True)
    unit.calc = EMT()
    BFGS(FrechetCellFilter(unit), logfile=None).run(fmax=1e-4)
    perfect = unit.repeat((3, 3, 3))
    perfect.calc = EMT()
    energy_perfect = perfect.get_potential_energy()
    defect = perfect.copy()
    del defect[0]
    defect.calc = EMT()
    BFGS(defect, logfile=None).run(fmax=0.001)
    n = len(perfect)
    return defect.get_potential_energy() - (n - 1) / n * energy_perfect


def test_cu_vacancy_matches_direct_ase_calculation():
    (record,) = vacancy.run([bulk("Cu", "fcc", a=3.6, cubic=True)], EMT(), progress=False)
    assert record["supercell"] == [3, 3, 3] and record["n_atoms_supercell"] == 108  # from min_supercell_width 10 Å
    assert record["multiplicity"] == 4 and record["converged"]
    assert 1.1 < record["vacancy_formation_energy"] < 1.3
    assert record["vacancy_formation_energy"] == pytest.approx(direct_cu_vacancy_formation_energy(), abs=2e-3)
    # relaxation lowers E_f, by little in a close-packed metal
    assert 0 < record["relaxation_energy"] < 0.1
    assert record["vacancy_formation_energy_unrelaxed"] == pytest.approx(
        record["vacancy_formation_energy"] + record["relaxation_energy"]
    )


def test_primitive_and_conventional_cells_agree():
    settings = vacancy.Settings(min_supercell_width=7.0)
    primitive, conventional = vacancy.run(
        [bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.6, cubic=True)], EMT(), settings, progress=False
    )
    assert primitive["n_atoms_supercell"] != conventional["n_atoms_supercell"]
    assert primitive["vacancy_formation_energy"] == pytest.approx(conventional["vacancy_formation_energy"], abs=0.03)


def test_one_record_per_distinct_site():
    cu3au = bulk("Au", "sc", a=3.75)  # L1_2 Cu3Au: Au on the cube corner, Cu on the face centres
    cu3au += Atoms("Cu3", scaled_positions=[[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], cell=cu3au.cell)
    cu3au.info["id"] = "Cu3Au"
    records = vacancy.run([cu3au], EMT(), vacancy.Settings(supercell=(2, 2, 2)), progress=False)
    sites = [(r["id"], r["element"], r["multiplicity"]) for r in records]
    assert sites == [("Cu3Au:Au0", "Au", 1), ("Cu3Au:Cu1", "Cu", 3)]
    assert all(r["n_atoms_supercell"] == 32 and "error" not in r for r in records)
    assert records[0]["vacancy_formation_energy"] != pytest.approx(records[1]["vacancy_formation_energy"], abs=0.05)


def test_bad_structures_give_error_records_and_the_others_finish(toy_potential):
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    iron = bulk("Fe", "bcc", a=2.87)
    copper = bulk("Cu", "fcc", a=3.6)
    fast = vacancy.Settings(supercell=(2, 2, 2), relax_bulk=False, relax=False)
    records = vacancy.run([molecule, iron, copper], toy_potential.calculator(), fast, progress=False)
    assert [r["id"] for r in records] == ["0", "1", "2:Cu0"]
    assert "not periodic" in records[0]["error"]
    assert "Fe" in records[1]["error"] and "does not support" in records[1]["error"]
    assert "error" not in records[2] and np.isfinite(records[2]["vacancy_formation_energy"])


def test_records_round_trip_json_and_keys_match_between_reference_and_model(toy_potential, tmp_path):
    structures = [bulk("Cu", "fcc", a=3.6)]
    # the toy potential's random pair term has no repulsion, so relaxing with it would collapse the cell
    settings = vacancy.Settings(supercell=(2, 2, 2), relax_bulk=False, relax=False)
    results = {
        "emt": vacancy.run(structures, EMT(), settings, progress=False),
        "toy": vacancy.run(structures, toy_potential, settings, progress=False),
    }
    assert set(results["emt"][0]) == set(results["toy"][0])
    assert json.loads(json.dumps(results)) == results
    rows = vacancy.compare(results, reference="emt")
    row = next(r for r in rows if r["id"] == "0:Cu0" and r["property"] == "vacancy_formation_energy")
    assert row["toy − emt"] == pytest.approx(row["toy"] - row["emt"])
    assert any(r["id"] == "MAE" for r in rows)
    paths = vacancy.plot(results, tmp_path)
    assert paths and all(p.stat().st_size > 1000 for p in paths)
