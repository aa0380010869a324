"""Cluster expansion with volume-only relaxation (``relax: "volume"``, the protocol a DFT reference can afford) and the
resume-safe single-point cache, on EMT Cu–Pd."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import cluster_expansion as ce


def _cu_pd():
    primitive = bulk("Cu", "fcc", a=3.75)
    primitive.info["id"] = "fcc"
    return primitive


class _Counting(EMT):
    """EMT that counts its calculations and can be told to die after some, as a killed DFT run would."""

    def __init__(self, die_after: int | None = None):
        super().__init__()
        self.calls = 0
        self.die_after = die_after

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        super().calculate(atoms, properties, system_changes)


def _direct_eos_minimum(atoms, volumes):
    energies = []
    for volume in volumes:
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell[:] * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        scaled.calc = EMT()
        energies.append(scaled.get_potential_energy())
    return EquationOfState(volumes, energies, eos="birchmurnaghan").fit()


def test_volume_relaxation_matches_a_direct_ase_eos_and_lowers_every_energy():
    settings = ce.Settings(species=["Cu", "Pd"], max_cell_size=3, relax="volume", cv_splits=3,
                           cutoff_candidates=[[4.0]])
    records = ce.run([_cu_pd()], EMT(), settings, progress=False)
    structures = {r["id"]: r for r in records if r["kind"] == "structure"}
    fixed = ce.run([_cu_pd()], EMT(), ce.Settings(species=["Cu", "Pd"], max_cell_size=3, relax=False, cv_splits=3,
                                                  cutoff_candidates=[[4.0]]), progress=False)
    assert not any(r.get("error") for r in structures.values())
    # Pd end member: its scan starts at Pd's own ASE volume (a = 3.89 Å, 14.7 Å³/atom), not at the Cu parent cell's,
    # and its minimum is where ASE's EOS puts it through the same volumes
    (pd,) = [r for r in structures.values() if r["formula"] == "Pd"]
    scan = pd["equation_of_state"]
    v0, e0, _ = _direct_eos_minimum(bulk("Pd", "fcc", a=3.75), np.array(scan["volumes_per_atom"]))
    assert pd["volume_per_atom"] == pytest.approx(v0, rel=1e-7) and pd["energy_per_atom"] == pytest.approx(e0, abs=1e-8)
    assert scan["volumes_per_atom"][0] < bulk("Pd").get_volume() < scan["volumes_per_atom"][-1]
    # a mixed structure scanned around its Vegard volume: the same minimum as a direct EOS of that cell
    mixed = next(r for r in structures.values() if r["n_atoms"] == 3)
    index = int(mixed["id"].rsplit("-", 1)[1])
    from icet.tools import enumerate_structures

    cell = list(enumerate_structures(_cu_pd(), range(1, 4), ["Cu", "Pd"]))[index]
    volumes = np.array(mixed["equation_of_state"]["volumes_per_atom"]) * len(cell)
    v0, e0, _ = _direct_eos_minimum(cell, volumes)
    # (to rounding: the task's cell was scaled to the Vegard volume first, the direct one from the enumerated cell)
    assert mixed["volume_per_atom"] * 3 == pytest.approx(v0, rel=1e-7)
    assert mixed["energy_per_atom"] * 3 == pytest.approx(e0, abs=1e-8)
    # relaxing the volume lowers the energy against the single point at the Vegard volume of the unrelaxed end members
    # (to the EOS fit's residual, < 1 meV/atom over ±10 %); the end members' own volumes move far (Pd: 13.2 → ~14.6
    # Å³/atom in EMT)
    fixed_energy = {r["id"]: r["energy_per_atom"] for r in fixed if r["kind"] == "structure"}
    lowered = [record["energy_per_atom"] < fixed_energy[key] - 1e-3 for key, record in structures.items()]
    for key, record in structures.items():
        assert record["energy_per_atom"] <= fixed_energy[key] + 1e-3
        assert record["single_points"] >= 5
    assert sum(lowered) >= len(lowered) // 2
    assert pd["volume_per_atom"] > 1.05 * bulk("Cu", "fcc", a=3.75).get_volume()


def test_a_minimum_outside_the_scan_is_scanned_again_or_recorded_as_failed():
    atoms = bulk("Cu", "fcc", a=3.3)  # 12 % compressed in length: the minimum lies ~40 % above this volume

    def energy(cell):
        cell.calc = EMT()
        return cell.get_potential_energy()

    found = ce.volume_scan(atoms, energy, points=5, volume_range=0.1, max_rescans=3)
    reference = bulk("Cu", "fcc", a=3.3)
    v0, _, _ = _direct_eos_minimum(reference, np.array(found["volumes_per_atom"]))
    assert found["scans"] > 1 and found["volume_per_atom"] == pytest.approx(v0, rel=1e-9)
    with pytest.raises(AtomtuneError, match="no E\\(V\\) minimum within the scanned volumes"):
        ce.volume_scan(atoms, energy, points=5, volume_range=0.05, max_rescans=0)


def test_single_points_are_cached_so_a_killed_run_resumes(tmp_path):
    settings = ce.Settings(species=["Cu", "Pd"], max_cell_size=2, relax="volume", cv_splits=2,
                           cutoff_candidates=[[3.0]], cache_dir=str(tmp_path / "cache"))
    killed = _Counting(die_after=12)
    with pytest.raises(KeyboardInterrupt):
        ce.run([_cu_pd()], killed, settings, progress=False)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 12
    resumed = _Counting()
    records = ce.run([_cu_pd()], resumed, settings, progress=False)
    fresh = ce.run([_cu_pd()], EMT(), ce.Settings(**{**vars(settings), "cache_dir": None}), progress=False)
    total = sum(r["single_points"] for r in records if r["kind"] == "structure")
    assert resumed.calls == total - 12  # the 12 finished single points were read back, not recomputed
    energies = [r.get("energy_per_atom") for r in records if r["kind"] == "structure"]
    assert energies == pytest.approx([r.get("energy_per_atom") for r in fresh if r["kind"] == "structure"], rel=1e-12)
    again = _Counting()
    ce.run([_cu_pd()], again, settings, progress=False)
    assert again.calls == 0
    # another calculator (other parameters) does not read this calculator's cache
    assert ce.calculator_fingerprint(EMT()) != ce.calculator_fingerprint(EMT(asap_cutoff=True))



@pytest.mark.parametrize("content", ["{\"energy\": -3.", "[1, 2]", "{\"energy\": \"x\"}"])
def test_a_damaged_cache_file_is_computed_again(tmp_path, content):
    """A cut-short, wrong-type or wrong-content cache file is a miss (computed again and overwritten), not a crash."""
    points = ce.SinglePoints(EMT(), tmp_path)
    atoms = bulk("Cu", "fcc", a=3.6)
    expected = points(atoms)
    (cached,) = tmp_path.glob("*.json")
    cached.write_text(content)
    again = ce.SinglePoints(EMT(), tmp_path)
    assert again(atoms) == pytest.approx(expected, rel=1e-12) and again.n_cached == 0
    assert again(atoms) == pytest.approx(expected, rel=1e-12) and again.n_cached == 1  # the file was rewritten


def test_bad_volume_settings_are_refused_before_any_work():
    for bad, match in (({"relax": "cell"}, "relax 'cell'"), ({"relax": "volume", "eos_points": 3}, "at least 5"),
                       ({"relax": "volume", "eos_volume_range": 0.7}, "eos_volume_range"),
                       ({"relax": "volume", "eos_type": "spline"}, "eos_type")):
        counting = _Counting()
        with pytest.raises(AtomtuneError, match=match):
            ce.run([_cu_pd()], counting, ce.Settings(species=["Cu", "Pd"], **bad), progress=False)
        assert counting.calls == 0


def test_one_point_pressure_correction_agrees_with_the_volume_scan():
    """``relax: "pressure"``: one single point with stress per structure lands within the harmonic approximation's error
    of the 5-point E(V) minimum (EMT Cu–Pd, volume changes of a few %), and well below the uncorrected single point."""
    common = {"species": ["Cu", "Pd"], "max_cell_size": 3, "cv_splits": 3, "cutoff_candidates": [[4.0]]}
    scanned = ce.run([_cu_pd()], EMT(), ce.Settings(relax="volume", **common), progress=False)
    corrected = ce.run([_cu_pd()], EMT(), ce.Settings(relax="pressure", **common), progress=False)
    scanned = {r["id"]: r for r in scanned if r["kind"] == "structure"}
    mixed = [r for r in corrected if r["kind"] == "structure" and 0 < r["concentration"] < 1]
    assert mixed and all(r["single_points"] == 1 for r in mixed)
    for record in mixed:
        state = record["equation_of_state"]
        assert record["energy_per_atom"] == pytest.approx(scanned[record["id"]]["energy_per_atom"], abs=1e-3)
        assert record["volume_per_atom"] == pytest.approx(scanned[record["id"]]["volume_per_atom"], rel=0.01)
        # the correction is E − P²V/2B: never positive, and what separates the result from the plain single point
        assert state["correction_mev_per_atom"] <= 0
        assert record["energy_per_atom"] == pytest.approx(
            state["energy_at_start_per_atom"] + state["correction_mev_per_atom"] / 1000, abs=1e-12)
    assert max(-r["equation_of_state"]["correction_mev_per_atom"] for r in mixed) > 1.0


class _PulayEMT(EMT):
    """EMT whose stress carries a constant extra pressure (GPa), as a plane-wave code's does at a finite cutoff (Pulay
    stress): the energy is EMT's, the stress is no longer its volume derivative."""

    def __init__(self, pressure_gpa: float):
        super().__init__()
        self.pressure_gpa = pressure_gpa

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        from ase.units import GPa

        super().calculate(atoms, properties, system_changes)
        if "stress" in self.results:
            stress = np.array(self.results["stress"], dtype=float)
            stress[:3] -= self.pressure_gpa * GPa  # ASE: compression is negative stress
            self.results["stress"] = stress


def test_pressure_protocol_subtracts_the_end_members_stress_offset():
    """A constant stress offset (5 GPa, GPAW's size at 450 eV) is measured at the end members' E(V) minima, recorded, and
    taken out: the mixing energies are EMT's own. Without the subtraction the offset would be read as a volume
    mismatch and lower every energy by up to ~(P + 5 GPa)²V/2B. EMT's own stress is its energy's derivative: its
    offsets are ~0 (the E(V) fit's error)."""
    common = {"species": ["Cu", "Pd"], "max_cell_size": 3, "cv_splits": 3, "cutoff_candidates": [[4.0]],
              "relax": "pressure"}
    plain = ce.run([_cu_pd()], EMT(), ce.Settings(**common), progress=False)
    shifted = ce.run([_cu_pd()], _PulayEMT(5.0), ce.Settings(**common), progress=False)
    (plain_summary,), (shifted_summary,) = ce.expansion_records(plain), ce.expansion_records(shifted)
    assert set(plain_summary["pressure_offsets_gpa"]) == {"Cu", "Pd"}
    for symbol, offset in plain_summary["pressure_offsets_gpa"].items():
        assert abs(offset) < 0.05
        assert shifted_summary["pressure_offsets_gpa"][symbol] == pytest.approx(offset + 5.0, abs=1e-9)
    plain = {r["id"]: r for r in plain if r["kind"] == "structure"}
    mixed = [r for r in shifted if r["kind"] == "structure" and 0 < r["concentration"] < 1]
    assert mixed
    naive = []
    for record in mixed:
        state = record["equation_of_state"]
        assert state["pressure_gpa"] == pytest.approx(plain[record["id"]]["equation_of_state"]["pressure_gpa"] + 5.0,
                                                      abs=1e-9)
        assert record["mixing_energy_per_atom"] == pytest.approx(plain[record["id"]]["mixing_energy_per_atom"], abs=1e-9)
        assert record["volume_per_atom"] == pytest.approx(plain[record["id"]]["volume_per_atom"], rel=1e-9)
        # what ignoring the offset would give: the same single point corrected with the raw pressure
        from ase.units import GPa

        volume = state["volume_at_start_per_atom"]
        naive.append(state["energy_at_start_per_atom"]
                     - (state["pressure_gpa"] * GPa) ** 2 * volume / (2 * state["bulk_modulus_gpa"] * GPa))
    differences = [abs(e - r["energy_per_atom"]) for e, r in zip(naive, mixed)]
    assert max(differences) > 2e-3  # eV/atom: the bias the subtraction removes


def test_volume_modes_pass_the_task_settings_check_and_a_quoted_number_still_does_not():
    """`atomtune bench` and campaign files read task settings through TaskRun: the words a bool-or-string field takes
    (relax "volume" / "pressure") go through; a quoted number for a numeric field is still refused."""
    from atomtune.tasks.spec import TaskRun, TaskSettingsError

    for mode in ("volume", "pressure"):
        assert TaskRun(task="cluster_expansion", settings={"relax": mode}).task_settings().relax == mode
    with pytest.raises(TaskSettingsError, match="'eos_points' must be a whole number"):
        TaskRun(task="cluster_expansion", settings={"relax": "pressure", "eos_points": "5"})
    with pytest.raises(AtomtuneError, match="relax 'presure'"):
        TaskRun(task="cluster_expansion", settings={"relax": "presure"}).task_settings().check()
