"""Phonon task: Cu in EMT against ASE's own finite-displacement phonons, acoustic modes at Γ, imaginary modes of bcc Cu,
records, compare and plot."""

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from ase.phonons import Phonons

from atomtune.tasks import phonons

FAST = {"band_points": 40, "dos_mesh": 15.0}


@pytest.fixture(scope="module")
def cu_emt():
    (record,) = phonons.run([bulk("Cu", "fcc", a=3.6)], EMT(), phonons.Settings(**FAST), progress=False)
    return record


def test_acoustic_modes_vanish_at_gamma_and_cu_is_stable(cu_emt):
    assert "error" not in cu_emt
    assert cu_emt["band_path"].startswith("GX")
    assert np.all(np.abs(cu_emt["frequencies_at_special_points_thz"]["G"]) < 0.05)
    assert not cu_emt["has_imaginary_modes"]
    assert cu_emt["min_frequency_thz"] > -0.05
    assert 6.0 < cu_emt["max_frequency_thz"] < 10.0  # EMT Cu: 8.1 THz at X (experiment 7.2)
    x = cu_emt["frequencies_at_special_points_thz"]["X"]
    assert x[0] == pytest.approx(x[1], abs=1e-6) and x[2] > x[1]  # two degenerate transverse, one longitudinal


def test_frequencies_match_ase_phonons(cu_emt, tmp_path):
    cu = bulk("Cu", "fcc", a=3.6)
    cu.calc = EMT()
    BFGS(FrechetCellFilter(cu), logfile=None).run(fmax=1e-4)
    reference = Phonons(cu, EMT(), supercell=(5, 5, 5), delta=0.01, name=str(tmp_path / "phonon"))
    reference.run()
    reference.read(acoustic=True)
    path = reference.get_band_structure(cu.cell.bandpath(path="GXL", npoints=3))
    energies_ev = np.sort(path.energies[0], axis=1)  # (q, branch) at Γ, X, L
    thz = energies_ev / (units._hplanck / units._e * 1e12)  # E = hν
    for index, label in ((1, "X"), (2, "L")):
        assert cu_emt["frequencies_at_special_points_thz"][label] == pytest.approx(thz[index], abs=0.05)


def test_bcc_copper_has_imaginary_modes():
    (record,) = phonons.run([bulk("Cu", "bcc", a=2.87)], EMT(), phonons.Settings(**FAST), progress=False)
    assert record["has_imaginary_modes"]
    assert record["min_frequency_thz"] < -0.5
    # the instability is at N = (0, 0, 1/2) of bcc (ASE's path labels it N)
    assert min(record["frequencies_at_special_points_thz"]["N"]) == pytest.approx(record["min_frequency_thz"], abs=0.3)


def test_bad_input_gives_error_records(toy_potential):
    from ase import Atoms

    fast = phonons.Settings(supercell_matrix=[2, 2, 2], relax=False, **FAST)
    records = phonons.run(
        [Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), bulk("Fe", "bcc", a=2.87), bulk("Cu", "fcc", a=3.6)],
        toy_potential.calculator(),
        fast,
        progress=False,
    )
    assert "not periodic" in records[0]["error"]
    assert "Fe" in records[1]["error"]
    assert "error" not in records[2]


def test_records_json_keys_compare_and_plot(cu_emt, toy_potential, tmp_path):
    # the toy potential's random pair term has no repulsion, so relaxing with it would collapse the cell
    settings = phonons.Settings(supercell_matrix=[3, 3, 3], relax=False, **FAST)
    toy = phonons.run([bulk("Cu", "fcc", a=3.6)], toy_potential, settings, progress=False)
    assert set(toy[0]) == set(cu_emt)
    shifted = json.loads(json.dumps(cu_emt))
    assert shifted == cu_emt
    shifted["frequencies_at_special_points_thz"] = {
        label: [f + 0.1 for f in values] for label, values in shifted["frequencies_at_special_points_thz"].items()
    }
    results = {"emt": [cu_emt], "shifted": [shifted], "toy": toy}
    rows = phonons.compare(results, reference="emt")
    mae = next(r for r in rows if r["property"] == "frequency_mae_thz" and r["id"] == "0")
    assert mae["shifted"] == pytest.approx(0.1) and mae["emt"] == 0.0 and mae["toy"] > 0
    paths = phonons.plot(results, tmp_path)
    assert [p.name for p in paths] == ["phonons_0.png", "phonons_thermal_0.png"]
    assert all(path.stat().st_size > 1000 for path in paths)
    assert {"helmholtz_free_energy_300k_ev_per_atom", "heat_capacity_300k_kb_per_atom"} <= {r["property"] for r in rows}


# -- issue 16: thermodynamic output, no deprecated phonopy calls ---------------------------------------------------------


def test_thermal_properties_follow_from_the_mesh_frequencies(cu_emt):
    """F, S and C_V against the harmonic formulas evaluated here on the task's own mesh, Dulong–Petit, S = −dF/dT."""
    temperatures = np.asarray(cu_emt["thermal_temperatures_k"])
    free_energy = np.asarray(cu_emt["helmholtz_free_energy_ev_per_atom"])
    entropy = np.asarray(cu_emt["entropy_kb_per_atom"])
    heat_capacity = np.asarray(cu_emt["heat_capacity_kb_per_atom"])
    assert temperatures[0] == 0.0 and temperatures[-1] == 1000.0 and len(temperatures) == len(free_energy)
    # F(0) is the zero-point energy; EMT Cu: ħω̄/2 ≈ 3 × ½ h × ~5 THz ≈ 0.03 eV/atom
    assert free_energy[0] == pytest.approx(cu_emt["zero_point_energy_ev_per_atom"], rel=1e-6)
    assert 0.01 < free_energy[0] < 0.05
    assert heat_capacity[-1] == pytest.approx(3.0, abs=0.05)  # Dulong–Petit at 1000 K (Θ_D of Cu ≈ 340 K)
    assert entropy[0] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(entropy) > 0)
    # S = −∂F/∂T (central differences on the 10 K grid, accurate where S is smooth: above ~100 K)
    kb = units.kB
    ds = -np.gradient(free_energy, temperatures) / kb
    warm = (temperatures >= 100.0) & (temperatures < temperatures[-1])
    np.testing.assert_allclose(ds[warm], entropy[warm], rtol=2e-3)
    # the harmonic free energy at 300 K from the mesh frequencies, summed here independently of phonopy
    frequencies_thz = np.asarray(cu_emt["mesh_frequencies_thz"])
    weights = np.asarray(cu_emt["mesh_weights"], dtype=float)
    energies = np.asarray(frequencies_thz) * 1e12 * units._hplanck / units._e  # E = hν, eV
    energies[energies <= 1e-6] = np.nan  # the three acoustic modes at Γ are left out, as in the task
    kt = kb * 300.0
    per_mode = energies / 2 + kt * np.log1p(-np.exp(-energies / kt))
    by_hand = np.nansum(per_mode * weights[:, None]) / weights.sum() / cu_emt["n_atoms_primitive"]
    assert cu_emt["helmholtz_free_energy_300k_ev_per_atom"] == pytest.approx(by_hand, rel=1e-4)
    index = int(np.argmin(np.abs(temperatures - 300.0)))
    assert free_energy[index] == pytest.approx(cu_emt["helmholtz_free_energy_300k_ev_per_atom"], rel=1e-9)


def test_unstable_crystal_thermal_properties_are_flagged():
    (record,) = phonons.run([bulk("Cu", "bcc", a=2.87)], EMT(), phonons.Settings(**FAST), progress=False)
    assert "imaginary" in record["thermal_properties_note"]


def test_no_phonopy_deprecation_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        settings = phonons.Settings(supercell_matrix=[2, 2, 2], relax=False, **FAST)
        (record,) = phonons.run([bulk("Cu", "fcc", a=3.6)], EMT(), settings, progress=False)
    assert "error" not in record, record.get("error")
