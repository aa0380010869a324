"""Grain boundaries: the Σ3 coherent twin of EMT Cu equals a direct ASE construction, γ_GB does not depend on the cell
length along the normal once converged, invalid CSL specifications are refused, records compare and plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import grain_boundary as gb
from atomtune.tasks import load_task
from atomtune.tasks.surface import J_PER_M2

TWIN = {"sigma": 3, "rotation_axis": [1, -1, 0], "plane": [1, 1, 1]}
SIGMA5_310 = {"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [3, 1, 0]}


def direct_twin_energy(lattice_constant: float, energy_per_atom: float, layers: int = 12) -> float:
    """γ of the coherent twin, J/m², from a stack ABCABC|BACBAC… built layer by layer with ASE (two twins per cell)."""
    reference = fcc111("Cu", (1, 1, 3), a=lattice_constant, periodic=True)
    in_plane = {k: reference.positions[k, :2] for k in range(3)}  # the A, B and C sites of a {111} layer
    half = layers // 2
    sequence = [k % 3 for k in range(half)] + [(1 - k) % 3 for k in range(half)]  # ABCABC then BACBAC (mirror)
    spacing = lattice_constant / np.sqrt(3)
    cell = np.array(reference.cell[:])
    cell[2] = [0.0, 0.0, layers * spacing]
    twin = Atoms(
        f"Cu{layers}", positions=[[*in_plane[s], i * spacing] for i, s in enumerate(sequence)], cell=cell, pbc=True
    )
    twin.calc = EMT()
    area = np.linalg.norm(np.cross(cell[0], cell[1]))
    return (twin.get_potential_energy() - layers * energy_per_atom) / (2 * area) / J_PER_M2


@pytest.mark.parametrize("relax", [False, True])
def test_sigma3_twin_in_emt_copper_matches_a_direct_ase_construction(relax):
    (record,) = gb.run(
        [bulk("Cu", "fcc", a=3.6)],
        EMT(),
        gb.Settings(boundaries=[TWIN], expand_times=2, translations=1, relax=relax),
        progress=False,
    )
    assert "error" not in record and record["boundary"] == "Σ3(111)[1-10]"
    assert record["rotation_angle_deg"] == pytest.approx(70.5288, abs=1e-3)
    reference_bulk = bulk("Cu", "fcc", a=record["lattice_constant"])
    reference_bulk.calc = EMT()
    direct = direct_twin_energy(record["lattice_constant"], reference_bulk.get_potential_energy())
    # EMT puts hcp Cu 0.9 meV/atom below fcc, so its twin energy is slightly negative (−2.7 mJ/m²); both agree
    assert record["gamma_gb_j_per_m2"] == pytest.approx(direct, rel=0.01, abs=2e-5)
    assert json.loads(json.dumps(record)) == record


def test_twin_energy_does_not_depend_on_the_cell_length_along_the_normal():
    settings = dict(boundaries=[TWIN], translations=1)
    short, long = (
        gb.run([bulk("Cu", "fcc", a=3.6)], EMT(), gb.Settings(expand_times=n, **settings), progress=False)[0]
        for n in (2, 4)
    )
    assert long["cell_length_normal"] > 1.9 * short["cell_length_normal"]
    assert long["gamma_gb_j_per_m2"] == pytest.approx(short["gamma_gb_j_per_m2"], rel=0.01)


@pytest.mark.slow
def test_sigma5_energy_converges_with_the_cell_length_and_the_translation_scan_finds_lower_states():
    settings = dict(boundaries=[SIGMA5_310], translations=1)
    records = [
        gb.run([bulk("Cu", "fcc", a=3.6)], EMT(), gb.Settings(expand_times=n, **settings), progress=False)[0]
        for n in (2, 3)
    ]
    assert all("error" not in record for record in records)
    # EAM/EMT-level Σ5(310) energies of Cu are ~0.9–1.0 J/m² (e.g. Tschopp & McDowell, Phil. Mag. 87, 3871 (2007))
    assert 0.8 < records[0]["gamma_gb_j_per_m2"] < 1.1
    assert records[1]["gamma_gb_j_per_m2"] == pytest.approx(records[0]["gamma_gb_j_per_m2"], rel=0.01)
    sigma5_210 = {"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [2, 1, 0]}
    (scanned,) = gb.run(
        [bulk("Cu", "fcc", a=3.6)],
        EMT(),
        gb.Settings(boundaries=[sigma5_210], expand_times=2, translations=2),
        progress=False,
    )
    gammas = scanned["gamma_per_translation_j_per_m2"]
    assert len(gammas) == 4 and scanned["gamma_gb_j_per_m2"] == min(gammas) < gammas[0] - 0.05


def test_invalid_coincidence_site_lattices_are_refused():
    with pytest.raises(
        AtomtuneError, match=r"Σ7 is not a coincidence-site lattice for rotation axis \[1, -1, 0\].*\[3\]"
    ):
        gb.Settings(boundaries=[{"sigma": 7, "rotation_axis": [1, -1, 0], "plane": [1, 1, 1]}]).check()
    with pytest.raises(AtomtuneError, match="not a symmetric tilt plane"):
        gb.Settings(boundaries=[{"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [1, 1, 0]}]).check()
    with pytest.raises(AtomtuneError, match="does not contain the rotation axis"):
        gb.Settings(boundaries=[{"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [3, 1, 1]}]).check()
    with pytest.raises(AtomtuneError, match="give sigma"):
        gb.Settings(boundaries=[{"sigma": 5, "plane": [3, 1, 0]}]).check()


def test_non_cubic_or_compound_structures_get_an_error_record():
    records = gb.run([bulk("Mg", "hcp", a=3.21, c=5.21)], EMT(), gb.Settings(boundaries=[TWIN]), progress=False)
    assert "not a cubic elemental crystal" in records[0]["error"]


def test_task_is_registered_and_compares_and_plots(tmp_path):
    assert load_task("grain_boundary") is gb
    record = {"id": "Cu Σ3(111)[1-10]", "gamma_gb_mj_per_m2": -2.7, "excess_volume_angstrom": 0.0}
    rows = gb.compare({"emt": [record], "model": [dict(record, gamma_gb_mj_per_m2=10.0)]}, reference="emt")
    assert any(row["property"].startswith("gamma_gb") for row in rows)
    paths = gb.plot({"emt": [record]}, tmp_path)
    assert paths and all(path.exists() for path in paths)
