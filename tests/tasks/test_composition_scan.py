"""Composition scan: end members at zero formation energy, lattice constant between the end members, error records."""

import json

import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.tasks import composition_scan

SETTINGS = dict(solute="Cu", fractions=(0.25, 0.5), supercell=(2, 1, 1), n_configurations=2, fmax=0.01)


@pytest.fixture(scope="module")
def emt_records():
    parent = bulk("Ni", "fcc", a=3.52, cubic=True)
    parent.info["id"] = "ni"
    return composition_scan.run([parent], EMT(), composition_scan.Settings(**SETTINGS), progress=False)


def test_scan_of_ni_cu_with_emt(emt_records):
    assert [r["x"] for r in emt_records] == [0.0, 0.25, 0.25, 0.5, 0.5, 1.0]
    assert all(r["converged"] and "error" not in r for r in emt_records)
    ends = {r["x"]: r for r in emt_records if r["x"] in (0.0, 1.0)}
    assert ends[0.0]["formation_energy_per_atom"] == ends[1.0]["formation_energy_per_atom"] == 0.0
    # EMT equilibrium lattice constants: Ni 3.487 Å, Cu 3.590 Å (from the eos task)
    assert ends[0.0]["lattice_constant"] == pytest.approx(3.487, abs=0.005)
    assert ends[1.0]["lattice_constant"] == pytest.approx(3.590, abs=0.005)
    for record in emt_records:
        assert 3.48 <= record["lattice_constant"] <= 3.60
        assert record["formation_energy_per_atom"] > -1e-9  # EMT Ni–Cu mixes endothermically
    summary = composition_scan.scan_summary(emt_records)
    assert [row["x"] for row in summary] == [0.0, 0.25, 0.5, 1.0]
    assert summary[1]["n_configurations"] == 2
    assert json.loads(json.dumps(emt_records)) == emt_records


def test_compare_rows_per_composition_and_plot(emt_records, tmp_path):
    rows = composition_scan.compare({"emt": emt_records, "again": emt_records}, reference="emt")
    formation = [row for row in rows if row["property"] == "formation_energy_per_atom"]
    assert [row["id"] for row in formation] == ["ni x=0", "ni x=0.25", "ni x=0.5", "ni x=1", "MAE"]
    assert formation[-1]["again"] == 0.0
    (path,) = composition_scan.plot({"emt": emt_records}, tmp_path)
    assert path.stat().st_size > 1000


def test_bad_input_gives_error_records():
    compound = bulk("NiO", "rocksalt", a=4.2)
    records = composition_scan.run([compound], EMT(), composition_scan.Settings(solute="Cu"), progress=False)
    assert "set Settings.host" in records[0]["error"]
    records = composition_scan.run([bulk("Ni")], EMT(), composition_scan.Settings(), progress=False)
    assert "solute is not set" in records[0]["error"]
