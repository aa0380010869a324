"""Cluster expansion on EMT: the fitted hull is EMT's own hull; failures are recorded and counted; bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import cluster_expansion as ce


def _cu_pd():
    primitive = bulk("Cu", "fcc", a=3.75)
    primitive.info["id"] = "fcc"
    return primitive


def test_hull_matches_emt_hull_on_the_enumerated_set(tmp_path):
    """EMT Cu–Pd orders (L1₀-like and Immm phases); single points at the Vegard volume keep this test fast."""
    settings = ce.Settings(species=["Cu", "Pd"], max_cell_size=4, relax=False)
    records = ce.run([_cu_pd()], EMT(), settings, progress=False)
    (summary,) = ce.expansion_records(records)
    structures = [r for r in records if r["kind"] == "structure"]
    assert summary["n_enumerated"] == len(structures) == 29 and summary["n_failed"] == 0
    assert 0 < summary["cv_rmse_mev_per_atom"] < 5.0  # CV error reported (EMT is smooth: a few meV/atom)
    assert summary["hull_matches_reference"]  # the same ground-state concentrations as EMT's own hull
    assert summary["hull_energy_rmse_mev_per_atom"] < 2 * summary["cv_rmse_mev_per_atom"]
    on_hull = {r["concentration"] for r in structures if r["on_hull"]}
    assert on_hull == {g["concentration"] for g in summary["ground_states"]} and {0.0, 0.5, 1.0} <= on_hull
    # EMT's own energies: every structure's mixing energy is at or above EMT's hull, the hull vertices on it
    for record in structures:
        assert record["distance_to_hull_mev_per_atom"] >= -1e-6
    # the expansion round-trips through plain JSON and predicts what the record says
    data = json.loads(json.dumps(summary["expansion"]))
    rebuilt = ce.expansion_from_dict(data)
    probe = bulk("Cu", "fcc", a=3.75, cubic=True)
    probe.symbols[1:] = "Pd"
    hull_record = next(r for r in structures if r["formula"] == "CuPd3" and r["space_group"] == "Pm-3m")
    assert rebuilt.predict(probe) == pytest.approx(hull_record["predicted_mixing_energy_per_atom"], abs=1e-9)
    assert ce.plot({"emt": records}, tmp_path)[0].exists()
    rows = ce.compare({"emt": records, "again": records}, reference="emt")
    assert any(row["property"] == "CV RMSE (meV/atom)" for row in rows)


class _FailsOnPdRich(EMT):
    """EMT that refuses Pd-rich cells, as an SCF that does not converge would."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if atoms is not None and 2 * atoms.get_chemical_symbols().count("Pd") > len(atoms) > 1:
            raise RuntimeError("SCF not converged")
        super().calculate(atoms, properties, system_changes)


def test_failed_relaxations_are_recorded_left_out_and_counted():
    settings = ce.Settings(species=["Cu", "Pd"], max_cell_size=3, relax=True, max_steps=30, cv_splits=3,
                           cutoff_candidates=[[4.0]])
    records = ce.run([_cu_pd()], _FailsOnPdRich(), settings, progress=False)
    (summary,) = ce.expansion_records(records)
    failed = [r for r in records if r.get("kind") == "structure" and r.get("error")]
    assert failed and all(not r["in_fit"] and r["mixing_energy_per_atom"] is None for r in failed)
    assert "SCF not converged" in failed[0]["error"]
    assert summary["n_failed"] == len(failed) and summary["n_fitted"] + summary["n_failed"] == summary["n_enumerated"]
    assert summary["relax_seconds"] > 0 and summary["fit_seconds"] > 0


class _FailsOnPurePd(EMT):
    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if atoms is not None and set(atoms.get_chemical_symbols()) == {"Pd"}:
            raise RuntimeError("SCF not converged")
        super().calculate(atoms, properties, system_changes)


def test_an_end_member_that_fails_gives_an_error_record(tmp_path):
    settings = ce.Settings(species=["Cu", "Pd"], max_cell_size=2, relax=False, cv_splits=2, cutoff_candidates=[[3.0]])
    records = ce.run([_cu_pd()], _FailsOnPurePd(), settings, progress=False)
    (summary,) = ce.expansion_records(records)
    assert "end member" in summary["error"] and "SCF not converged" in summary["error"]
    assert ce.plot({"emt": records}, tmp_path) == [] and ce.compare({"emt": records})


def test_bad_input(toy_potential):
    class Counting(EMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Counting.calls += 1
            super().calculate(*args, **kwargs)

    with pytest.raises(AtomtuneError, match="more than 10 structures.*nothing was relaxed"):
        ce.run([_cu_pd()], Counting(), ce.Settings(species=["Cu", "Pd"], max_cell_size=4, max_structures=10),
               progress=False)
    assert Counting.calls == 0  # said so before starting
    with pytest.raises(AtomtuneError, match="Fe, which toy:toy does not support"):
        ce.run([_cu_pd()], toy_potential, ce.Settings(species=["Cu", "Fe"]), progress=False)
    with pytest.raises(AtomtuneError, match="exactly two species"):
        ce.run([_cu_pd()], EMT(), ce.Settings(species=["Cu", "Pd", "Au"]), progress=False)
    with pytest.raises(AtomtuneError, match="cutoff"):
        ce.run([_cu_pd()], EMT(), ce.Settings(cutoff_candidates=[]), progress=False)


def test_shape_strain_measures_leaving_the_lattice():
    cubic = np.eye(3) * 3.6
    assert ce.shape_strain(cubic, cubic * 1.07) == pytest.approx(0.0, abs=1e-12)  # a volume change is not a shape change
    bain = np.diag([1.0, 1.0, 1 / np.sqrt(2)]) @ cubic  # fcc → bcc along the Bain path
    assert ce.shape_strain(cubic, bain) == pytest.approx(0.185, abs=0.002)
    assert ce.shape_strain(cubic, bain) > ce.Settings().max_shape_strain
