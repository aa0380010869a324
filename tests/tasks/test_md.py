"""Molecular dynamics: a stable EMT run, the exploded flag, RDF/ADF normalisation, distances between models."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import md

SHORT = dict(steps=60, nve_steps=30, timestep_fs=2.0, sample_interval=5, equilibration_fraction=0.3)


@pytest.fixture(scope="module")
def copper_run():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    return md.run([atoms], EMT(), md.Settings(**SHORT), progress=False)


def test_emt_copper_nvt_is_stable_and_conserves_energy(copper_run):
    (record,) = copper_run
    assert record["exploded"] is False and "error" not in record
    assert record["steps_completed"] == record["steps_requested"] == 90
    assert abs(record["nve_energy_drift_ev_per_atom_per_ps"]) < 5e-3
    assert record["nve_energy_fluctuation_ev_per_atom"] < 2e-3
    assert 2.2 < record["min_interatomic_distance"] < 2.55
    assert record["mean_density_g_per_cm3"] == pytest.approx(8.93, rel=0.02)  # fcc Cu at a = 3.61 Å
    assert 50 < record["mean_temperature_k"] < 600
    trace = record["trace"]
    # t = 0, every 5 steps of the 60 thermostatted ones, the NVE start (same state), every 5 of the 30 NVE steps
    assert len(trace["time_ps"]) == len(trace["temperature_k"]) == 1 + 12 + 1 + 6
    assert trace["phase"][-1] == "nve"
    first_peak = record["rdf"]["r"][int(np.argmax(record["rdf"]["g"]))]
    assert first_peak == pytest.approx(3.61 / np.sqrt(2), abs=0.1)
    angles = np.array(record["adf"]["angle_deg"])
    density = np.array(record["adf"]["density"])
    assert angles[int(np.argmax(density))] == pytest.approx(60, abs=6)  # fcc first-shell angles 60, 90, 120, 180
    assert json.loads(json.dumps(copper_run)) == copper_run


def test_radial_distribution_counts_twelve_first_neighbours_in_fcc():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    rdf = md.radial_distribution([atoms], max_distance=3.0, bins=60)
    r, g = np.array(rdf["r"]), np.array(rdf["g"])
    density = len(atoms) / atoms.get_volume()
    half = (r[1] - r[0]) / 2
    shells = 4 / 3 * np.pi * ((r + half) ** 3 - (r - half) ** 3)
    coordination = np.sum(density * g * shells)  # ∫ ρ g(r) 4πr² dr over the first shell
    assert coordination == pytest.approx(12.0, abs=1e-6)
    adf = md.angular_distribution([atoms], cutoff_factor=1.2, bins=90)
    assert np.sum(adf["density"]) * 2.0 == pytest.approx(1.0)


def test_exploding_run_is_stopped_and_flagged():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[6, 6, 6], pbc=True)
    (record,) = md.run([atoms], EMT(), md.Settings(**SHORT), progress=False)
    assert record["exploded"] is True
    assert "exploded at" in record["error"]
    assert record["steps_completed"] < record["steps_requested"]


def test_npt_and_other_thermostats_run():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    for settings in (
        md.Settings(**SHORT, ensemble="npt", barostat="mtk"),
        md.Settings(**SHORT, ensemble="npt", barostat="berendsen", bulk_modulus_gpa=140),
        md.Settings(**SHORT, thermostat="bussi"),
    ):
        (record,) = md.run([atoms], EMT(), settings, progress=False)
        assert not record["exploded"], settings
        assert record["mean_density_g_per_cm3"] == pytest.approx(8.93, rel=0.05)
    with pytest.raises(AtomtuneError, match="thermostat"):
        md.run([atoms], EMT(), md.Settings(thermostat="andersen"), progress=False)


def test_compare_distances_between_models(copper_run, tmp_path):
    from toy_potential import ToyPotential

    torch.manual_seed(0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    toy = md.run([atoms], ToyPotential(), md.Settings(**SHORT), progress=False)
    assert set(toy[0]) - {"error"} <= set(copper_run[0]) | {"mean_density_g_per_cm3"}
    rows = md.compare({"emt": copper_run, "emt-again": copper_run, "toy": toy}, reference="emt")
    distances = {row["property"]: row for row in rows if "(vs emt)" in row["property"]}
    assert set(distances) == {
        "rdf_wasserstein_angstrom (vs emt)",
        "rdf_jensen_shannon (vs emt)",
        "adf_wasserstein_deg (vs emt)",
        "adf_jensen_shannon (vs emt)",
    }
    for row in distances.values():
        assert row["emt-again"] == pytest.approx(0.0, abs=1e-12)
        if row["toy"] is not None:
            assert row["toy"] > 0
    paths = md.plot({"emt": copper_run, "toy": toy}, tmp_path)
    assert len(paths) >= 2 and all(p.stat().st_size > 1000 for p in paths)
