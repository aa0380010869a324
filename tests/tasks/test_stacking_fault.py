"""Stacking-fault task: EMT values against the fcc/hcp energy difference, layer convergence, the curve's shape, bad
input, records."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import stacking_fault

FAST = {"layers": 6, "fractions": [0.0, 0.5, 1.0]}


def hcp_fcc_estimate_mj_per_m2(element: str) -> float:
    """Intrinsic SFE from the hcp–fcc energy difference, γ_isf ≈ 2 (E_hcp − E_fcc) / A per {111} atom (the ANNNI
    estimate; exact for a potential whose range does not reach third-nearest {111} planes, like EMT's)."""
    fcc = bulk(element, "fcc", a=4.0)
    fcc.calc = EMT()
    BFGS(FrechetCellFilter(fcc), logfile=None).run(fmax=1e-4)
    a = (4 * fcc.get_volume()) ** (1 / 3)
    hcp = bulk(element, "hcp", a=a / np.sqrt(2), c=a / np.sqrt(2) * np.sqrt(8 / 3))  # same neighbour distance
    hcp.calc = EMT()
    area = (a / np.sqrt(2)) ** 2 * np.sqrt(3) / 2
    difference = hcp.get_potential_energy() / 2 - fcc.get_potential_energy()
    return 2 * difference / area * 16.0217663 * 1000


def test_cu_intrinsic_fault_is_small_and_matches_hcp_fcc_difference():
    (record,) = stacking_fault.run([bulk("Cu", "fcc", a=3.6)], EMT(), stacking_fault.Settings(**FAST), progress=False)
    assert record["converged"] and record["lattice_constant"] == pytest.approx(3.590, abs=2e-3)
    assert record["partial_burgers_vector"] == pytest.approx(record["lattice_constant"] / np.sqrt(6))
    isf = record["intrinsic_stacking_fault_energy_mj_per_m2"]
    # ASE's EMT puts hcp Cu 0.9 meV/atom *below* fcc, so its Cu fault is small and slightly negative (−5.4 mJ/m²;
    # experiment: +45 mJ/m²); what a correct fault geometry must reproduce is that difference
    assert abs(isf) < 20
    assert isf == pytest.approx(hcp_fcc_estimate_mj_per_m2("Cu"), abs=0.5)
    assert record["intrinsic_stacking_fault_energy_j_per_m2"] == pytest.approx(isf / 1000)
    assert 100 < record["unstable_stacking_fault_energy_mj_per_m2"] < 250  # EMT Cu: 156 mJ/m²
    assert record["gsfe_mj_per_m2"][0] == pytest.approx(0.0, abs=1e-9)


def test_silver_intrinsic_fault_is_small_and_positive():
    (record,) = stacking_fault.run([bulk("Ag", "fcc", a=4.1)], EMT(), stacking_fault.Settings(**FAST), progress=False)
    isf = record["intrinsic_stacking_fault_energy_mj_per_m2"]
    assert 0 < isf < 30  # EMT Ag: 7.0 mJ/m² (experiment ~16)
    assert isf == pytest.approx(hcp_fcc_estimate_mj_per_m2("Ag"), abs=0.5)


def test_curve_shape_layer_convergence_and_relaxation():
    fractions = [0.0, 0.25, 0.5, 0.75, 1.0]

    def cu(**settings):
        (record,) = stacking_fault.run(
            [bulk("Cu", "fcc", a=3.6)], EMT(), stacking_fault.Settings(fractions=fractions, **settings), progress=False
        )
        return record

    thin, thick, rigid = cu(layers=6), cu(layers=12), cu(layers=6, relax=False)
    curve = np.array(thin["gsfe_mj_per_m2"])
    assert np.argmax(curve) == 2  # γ_us at half the partial
    assert thin["unstable_stacking_fault_energy_mj_per_m2"] == pytest.approx(curve.max())
    assert thick["unstable_stacking_fault_energy_mj_per_m2"] == pytest.approx(
        thin["unstable_stacking_fault_energy_mj_per_m2"], rel=0.01
    )
    # relaxing normal to the fault can only lower the energy of each shifted configuration
    assert np.all(curve <= np.array(rigid["gsfe_mj_per_m2"]) + 1e-6)
    assert rigid["relaxation_steps"] == [0] * len(fractions)


def test_non_fcc_structures_give_error_records_and_the_others_finish():
    from ase import Atoms

    structures = [
        bulk("Fe", "bcc", a=2.87),
        bulk("NaCl", "rocksalt", a=5.6),
        Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]),
        bulk("Cu", "fcc", a=3.6),
    ]
    records = stacking_fault.run(structures, EMT(), stacking_fault.Settings(**FAST), progress=False)
    assert "space group 229" in records[0]["error"] and "fcc" in records[0]["error"]
    assert "not an elemental fcc" in records[1]["error"]
    assert "not periodic" in records[2]["error"]
    assert "error" not in records[3]
    with pytest.raises(AtomtuneError, match="multiple of 3"):
        stacking_fault.run(structures, EMT(), stacking_fault.Settings(layers=8), progress=False)


def test_records_json_keys_compare_and_plot(toy_potential, tmp_path):
    # the toy potential's random pair term has no repulsion, so relaxing with it would collapse the cell
    settings = stacking_fault.Settings(relax_bulk=False, relax=False, **FAST)
    structures = [bulk("Cu", "fcc", a=3.6)]
    results = {
        "emt": stacking_fault.run(structures, EMT(), settings, progress=False),
        "toy": stacking_fault.run(structures, toy_potential, settings, progress=False),
    }
    assert set(results["emt"][0]) == set(results["toy"][0])
    assert json.loads(json.dumps(results)) == results
    rows = stacking_fault.compare(results, reference="emt")
    assert {r["property"] for r in rows} == set(stacking_fault.PROPERTIES)
    paths = stacking_fault.plot(results, tmp_path)
    assert {p.name for p in paths} >= {"stacking_fault_gsfe_0.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
