"""Labelling: cache resume, per-structure failures, bad calculator specs, and one real GPAW run."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.data import generate
from atomtune.data.label import CalculatorSpec, LabelCache, kpoint_mesh, label
from atomtune.exceptions import AtomtuneError


def _cu_frames(count=3):
    return generate.rattles(generate.bulk_prototype("fcc", "Cu", 3.61, cubic=True), count, 0.05)


def test_emt_labels_match_direct_emt(tmp_path):
    frames = _cu_frames(2)
    data, failures = label(frames, "emt", tmp_path, progress=False)
    assert failures == [] and len(data) == 2
    direct = frames[0].copy()
    direct.calc = EMT()
    assert data[0].get_potential_energy() == pytest.approx(direct.get_potential_energy())
    assert np.allclose(data[0].get_forces(), direct.get_forces())
    assert data[0].info["id"] == frames[0].info["id"] and data[0].info["generator"] == "rattle"
    data.validate(require=("energy", "forces", "stress"))


def test_second_run_does_no_work(tmp_path, monkeypatch):
    frames = _cu_frames(3)
    first, _ = label(frames, "emt", tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 3

    def no_calculation(*args, **kwargs):
        raise AssertionError("a cached structure was computed again")

    monkeypatch.setattr("atomtune.data.label.compute_record", no_calculation)
    second, failures = label(frames, "emt", tmp_path, progress=False)
    assert failures == [] and second.fingerprint() == first.fingerprint()


def test_interrupted_run_resumes_with_only_the_missing_structures(tmp_path, monkeypatch):
    frames = _cu_frames(3)
    label(frames[:2], "emt", tmp_path, progress=False)
    (tmp_path / ".partial.tmp").write_text("{")  # what a kill -9 mid-write leaves: ignored
    import atomtune.data.label as label_module

    computed = []
    original = label_module.compute_record
    monkeypatch.setattr(
        label_module, "compute_record", lambda atoms, spec, name: computed.append(name) or original(atoms, spec, name)
    )
    data, _ = label(frames, "emt", tmp_path, progress=False)
    assert computed == [frames[2].info["id"]] and len(data) == 3


def test_settings_change_is_a_cache_miss(tmp_path):
    frames = _cu_frames(1)
    label(frames, "emt", tmp_path, progress=False)
    label(frames, CalculatorSpec("emt", {"asap_cutoff": True}), tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_failing_structure_is_recorded_and_the_rest_finish(tmp_path):
    good = _cu_frames(2)
    bad = Atoms("U2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[4, 4, 4], pbc=True)  # EMT has no uranium
    bad.info["id"] = "uranium-dimer"
    data, failures = label([good[0], bad, good[1]], "emt", tmp_path, progress=False)
    assert len(data) == 2 and len(failures) == 1
    assert failures[0].id == "uranium-dimer" and "uranium-dimer" in failures[0].message
    assert failures[0].error_type == "NotImplementedError"
    failed = [json.loads(path.read_text()) for path in tmp_path.glob("*.json")]
    assert sorted(record["status"] for record in failed) == ["failed", "ok", "ok"]
    # the failure is cached like a result: a rerun reports it without recomputing
    _, failures_again = label([bad], "emt", tmp_path, progress=False)
    assert [f.id for f in failures_again] == ["uranium-dimer"]


def test_unknown_calculator_name_says_what_to_use(tmp_path):
    with pytest.raises(AtomtuneError, match="unknown calculator 'vasp'.*gpaw.*emt.*module:Class"):
        label(_cu_frames(1), "vasp", tmp_path, progress=False)


def test_import_path_calculator_with_kwargs(tmp_path):
    spec = CalculatorSpec.parse("ase.calculators.lj:LennardJones", {"sigma": 2.3, "epsilon": 0.1})
    data, failures = label(_cu_frames(1), spec, tmp_path, progress=False)
    assert failures == [] and np.isfinite(data[0].get_potential_energy())
    with pytest.raises(AtomtuneError, match="cannot import module 'not_a_module'"):
        CalculatorSpec.parse("not_a_module:Calc")
    with pytest.raises(AtomtuneError, match="has no 'Nope'"):
        CalculatorSpec.parse("ase.calculators.emt:Nope")


def test_gpaw_missing_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_gpaw(name, *args, **kwargs):
        if name == "gpaw" or name.startswith("gpaw."):
            raise ImportError("No module named 'gpaw'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_gpaw)
    with pytest.raises(AtomtuneError, match=r"pip install 'atomtune\[gpaw\]'.*libxc-dev.*GPAW_CONFIG"):
        CalculatorSpec.parse("gpaw")


def test_unknown_gpaw_setting_is_rejected():
    pytest.importorskip("gpaw")
    with pytest.raises(AtomtuneError, match="unknown GPAW setting"):
        CalculatorSpec.parse("gpaw", {"ecut": 400})


def test_pinned_kpoint_mesh_is_part_of_the_cache_key(tmp_path):
    atoms = bulk("Al", "fcc", a=4.05)
    cache = LabelCache(tmp_path, CalculatorSpec("emt"))
    pinned = atoms.copy()
    pinned.info["kpts"] = [4, 4, 4]
    assert cache.path(atoms) != cache.path(pinned)
    assert kpoint_mesh(atoms, 2.5) == [7, 7, 7]  # 2π·√3/4.05 Å⁻¹ × 2.5 = 6.7 → 7


def test_dask_local_cluster_gives_the_same_labels(tmp_path):
    pytest.importorskip("dask.distributed")
    frames = _cu_frames(2)
    serial, _ = label(frames, "emt", tmp_path / "serial", progress=False)
    parallel, failures = label(frames, "emt", tmp_path / "dask", workers=2, progress=False)
    assert failures == [] and parallel.fingerprint() == serial.fingerprint()


@pytest.mark.gpaw
def test_gpaw_labels_one_aluminium_atom(tmp_path):
    pytest.importorskip("gpaw")
    atoms = bulk("Al", "fcc", a=4.05)
    spec = CalculatorSpec("gpaw", {"cutoff": 200, "kpoint_density": 1.0, "smearing": 0.2})
    data, failures = label([atoms], spec, tmp_path, progress=False)
    assert failures == []
    energy = data[0].get_potential_energy()
    assert -5.0 < energy < -2.0  # PBE Al cohesive-scale total energy relative to GPAW's atomic reference
    assert np.allclose(data[0].get_forces(), 0.0, atol=1e-3)
    assert data[0].get_stress().shape == (6,)


@pytest.mark.gpaw
def test_gpaw_element_without_setup_is_a_clear_failure(tmp_path, monkeypatch):
    pytest.importorskip("gpaw")
    import gpaw.setup_data

    def missing(name, *args, **kwargs):
        raise FileNotFoundError(f'Could not find required PAW dataset file "{name}".')

    monkeypatch.setattr(gpaw.setup_data, "search_for_file", missing)
    atoms = bulk("Al", "fcc", a=4.05)
    atoms.info["id"] = "al-no-setup"
    _, failures = label([atoms], CalculatorSpec("gpaw", {"cutoff": 200}), tmp_path, progress=False)
    assert len(failures) == 1 and "no GPAW PBE PAW setup for element(s) Al" in failures[0].message


def _cli():
    import typer

    from atomtune.cli import generate as generate_cli
    from atomtune.cli import label as label_cli

    app = typer.Typer()
    generate_cli.register(app)
    label_cli.register(app)
    return app


def test_cli_generate_then_label_with_emt(tmp_path):
    from typer.testing import CliRunner

    from atomtune.data.dataset import Dataset

    runner, app = CliRunner(), _cli()
    bulk_file, rattled, labelled = tmp_path / "cu.extxyz", tmp_path / "r.extxyz", tmp_path / "l.extxyz"
    steps = [
        ["generate", "bulk", "--prototype", "fcc", "--elements", "Cu", "--a", "3.61", "--cubic", "--out", str(bulk_file)],
        ["generate", "rattle", "--data", str(bulk_file), "--count", "2", "--out", str(rattled)],
        ["label", "--calculator", "emt", "--data", str(rattled), "--out", str(labelled), "--cache", str(tmp_path / "c")],
    ]
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, result.output
    data = Dataset.read(labelled, require=("energy", "forces", "stress"))
    assert len(data) == 2 and data[0].info["generator"] == "rattle"
    for command in (["label", "--help"], ["generate", "slab", "--help"]):
        assert "Example: atomtune" in runner.invoke(app, command).output


def test_cli_label_bad_calculator_raises_atomtune_error(tmp_path):
    from typer.testing import CliRunner

    structures = tmp_path / "s.extxyz"
    from atomtune.data.dataset import Dataset

    Dataset([generate.bulk_prototype("fcc", "Cu", 3.61)]).write(structures)
    result = CliRunner().invoke(_cli(), ["label", "--calculator", "nosuch", "--data", str(structures), "--out", "x"])
    assert isinstance(result.exception, AtomtuneError) and "unknown calculator 'nosuch'" in str(result.exception)


def test_kwargs_json_errors_are_explained():
    with pytest.raises(AtomtuneError, match="not valid JSON"):
        CalculatorSpec.from_json("emt", "{bad")
    with pytest.raises(AtomtuneError, match="must be a JSON object"):
        CalculatorSpec.from_json("emt", "[1, 2]")
    assert CalculatorSpec.from_json("emt", "{}").name == "emt"


@pytest.mark.gpaw
def test_gpaw_scf_non_convergence_is_recorded_with_the_structure_id(tmp_path):
    pytest.importorskip("gpaw")
    atoms = bulk("Al", "fcc", a=4.05)
    atoms.info["id"] = "al-two-iterations"
    spec = CalculatorSpec("gpaw", {"cutoff": 200, "kpoint_density": 1.0, "max_scf_iterations": 2})
    data, failures = label([atoms], spec, tmp_path, progress=False)
    assert len(data) == 0 and failures[0].error_type == "KohnShamConvergenceError"
    assert "al-two-iterations" in failures[0].message and "did not converge" in failures[0].message


@pytest.mark.gpaw
def test_force_consistent_gpaw_reports_the_free_energy_like_the_labels():
    pytest.importorskip("gpaw")
    from ase.build import bulk

    spec = CalculatorSpec("gpaw", {"cutoff": 200, "kpoint_density": 1.0, "smearing": 0.2})
    atoms = bulk("Al", "fcc", a=4.05)
    atoms.calc = spec.build(atoms, force_consistent=True)
    energy = atoms.get_potential_energy()
    gpaw_calculator = atoms.calc.calculator
    assert energy == pytest.approx(gpaw_calculator.get_potential_energy(atoms, force_consistent=True))
    assert energy != pytest.approx(gpaw_calculator.get_potential_energy(atoms), abs=1e-6)  # σ→0 differs at 0.2 eV


def test_task_calculator_gives_each_cell_family_its_own_kpoint_mesh():
    """A vacancy supercell or slab made by a task gets a mesh from its own cell; strained copies keep their parent's."""
    pytest.importorskip("gpaw")
    spec = CalculatorSpec("gpaw", {"kpoint_density": 2.5})
    primitive = bulk("Ni", "fcc", a=3.52)
    primitive.info["kpts"] = [9, 9, 9]  # pinned for this family only
    calculator = spec.task_calculator(primitive)
    assert calculator.kpoint_mesh_for(primitive) == [9, 9, 9]
    strained = primitive.copy()
    strained.set_cell(primitive.cell[:] * 1.03, scale_atoms=True)
    assert calculator.calculator_for(strained) is calculator.calculator_for(primitive)
    supercell = primitive.repeat((2, 2, 2))  # inherits info["kpts"] from the primitive cell
    assert supercell.info["kpts"] == [9, 9, 9]
    mesh = calculator.kpoint_mesh_for(supercell)
    assert mesh == kpoint_mesh(bulk("Ni", "fcc", a=3.52).repeat((2, 2, 2)), 2.5) and mesh != [9, 9, 9]
    assert len(calculator.families) == 2
    assert spec.task_calculator(primitive) is not calculator  # one per input structure
    assert isinstance(CalculatorSpec("emt").task_calculator(primitive), EMT)


def test_cell_family_calculator_passes_results_through(monkeypatch):
    """Energy / forces / stress come from the family's calculator (EMT stands in for GPAW here)."""
    from atomtune.data.label import CellFamilyCalculator

    spec = CalculatorSpec("emt")
    built = []

    def build(self, atoms, force_consistent=False):
        built.append(len(atoms))
        return EMT()

    monkeypatch.setattr(CalculatorSpec, "build", build)
    monkeypatch.setattr("atomtune.data.label.GPAWSettings", lambda **kwargs: type("S", (), {"spin": False, "kpoint_density": 2.0})())
    calculator = CellFamilyCalculator(spec, bulk("Cu", "fcc", a=3.6))
    for cell in (bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.62), bulk("Cu", "fcc", a=3.6, cubic=True)):
        cell.rattle(0.02, seed=1)
        direct = cell.copy()
        direct.calc = EMT()
        cell.calc = calculator
        assert cell.get_potential_energy() == pytest.approx(direct.get_potential_energy())
        np.testing.assert_allclose(cell.get_forces(), direct.get_forces())
        np.testing.assert_allclose(cell.get_stress(), direct.get_stress())
    assert built == [1, 4]  # one calculator per family: the 1-atom cells share one


@pytest.mark.gpaw
def test_gpaw_runs_without_point_group_symmetry_when_the_grid_would_blow_up(tmp_path):
    """An fcc (111) stacking-fault cell: GPAW would grow 12×12×54 to 54×54×54 for its symmetry; atomtune turns point-group
    symmetry off instead (4 s instead of 23 s of CPU at these settings) and says so in the record; the property-task
    calculator does the same per cell family and warns."""
    pytest.importorskip("gpaw")
    fault = generate.stacking_fault("Al", 4.04, layers=6, fraction=1.0)
    spec = CalculatorSpec("gpaw", {"cutoff": 250, "kpoint_density": 1.5, "smearing": 0.1})
    labelled, failures = label([fault], spec, tmp_path, progress=False)
    assert not failures
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert "point-group symmetry off" in record["note"] and "(54, 54, 54)" in record["note"]
    assert labelled[0].get_potential_energy() == pytest.approx(-21.7001, abs=0.01)  # the symmetric run: −21.7012 eV
    np.testing.assert_allclose(labelled[0].get_forces().sum(axis=0), 0.0, atol=1e-3)

    task_cell = fault.copy()
    task_cell.calc = spec.task_calculator(fault)
    with pytest.warns(UserWarning, match="point-group symmetry off"):
        energy = task_cell.get_potential_energy()
    assert energy == pytest.approx(labelled[0].get_potential_energy(), abs=1e-6)
