"""``atomtune bench``: reference and models through one task, JSON records, compare table and plots."""

import json

import pytest
import torch
from ase.build import bulk
from ase.io import write
from typer.testing import CliRunner

from atomtune.exceptions import AtomtuneError


@pytest.fixture
def toy_registry(monkeypatch):
    from atomtune.models import registry

    torch.manual_seed(0)
    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    monkeypatch.setattr(
        registry, "CHECKPOINTS", registry.CHECKPOINTS + [registry.CheckpointInfo("toy-1", "toy", "toy", True, "toy")]
    )


@pytest.fixture
def structures(tmp_path):
    path = tmp_path / "bulk.extxyz"
    cu, al = bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.05)
    cu.info["id"], al.info["id"] = "cu", "al"
    write(path, [cu, al])
    return path


def test_bench_eos_with_emt_reference_and_a_model(structures, tmp_path, toy_registry):
    from atomtune.cli import app

    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        ["bench", "--task", "eos", "--data", str(structures), "--reference", "emt", "--model", "toy-1",
         "--settings", '{"n_points": 7, "relax_first": false}', "--out", str(out), "--threads", "1", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    task_dir = out / "eos"
    emt = json.loads((task_dir / "records_emt.json").read_text())
    toy = json.loads((task_dir / "records_toy-1.json").read_text())
    assert [r["id"] for r in emt] == [r["id"] for r in toy] == ["cu", "al"]
    assert emt[0]["bulk_modulus_gpa"] == pytest.approx(134, rel=0.03)
    compare = json.loads((task_dir / "compare.json").read_text())
    assert compare["reference"] == "emt"
    assert {"emt", "toy-1"} <= set(compare["rows"][0])
    assert list(task_dir.glob("*.png"))
    assert "bulk_modulus_gpa" in result.output and "toy-1" in result.output


def test_bench_relax_settings_file_and_reference_only(structures, tmp_path):
    from atomtune.cli import app

    settings = tmp_path / "relax.yaml"
    settings.write_text("fmax: 0.02\nrattle_stdev: 0.03\n")
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["bench", "--task", "relax", "--data", str(structures), "--reference", "emt", "--settings", str(settings),
              "--out", str(out), "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    records = json.loads((out / "relax" / "records_emt.json").read_text())
    assert all(r["converged"] and r["max_force"] < 0.02 for r in records)
    assert "fraction_converged" in result.output


def test_bench_refuses_bad_input_with_a_message(structures, tmp_path):
    from atomtune.cli import app

    runner = CliRunner()
    unknown_setting = runner.invoke(
        app, ["bench", "--task", "eos", "--data", str(structures), "--reference", "emt", "--settings", '{"npoints": 5}']
    )
    assert isinstance(unknown_setting.exception, AtomtuneError)
    assert "unknown eos setting 'npoints'. Did you mean 'n_points'" in str(unknown_setting.exception)
    unknown_task = runner.invoke(app, ["bench", "--task", "eoss", "--data", str(structures), "--reference", "emt"])
    assert "Did you mean eos" in str(unknown_task.exception)
    nothing = runner.invoke(app, ["bench", "--task", "eos", "--data", str(structures)])
    assert "at least one --model" in str(nothing.exception)


@pytest.mark.parametrize("settings, match", [
    ('{"fmax": "0.01"}', "setting 'fmax' must be a number .*got the string '0.01'"),
    ('{"fmax": [1, 2]}', "fmax: Input should be a valid number"),
    ('{"fmx": 0.01}', "unknown relax setting 'fmx'. Did you mean 'fmax'"),
])
def test_bench_task_settings_of_the_wrong_type_are_refused_before_work(structures, tmp_path, settings, match):
    """Issue: --settings '{"fmax":"0.01"}' gave rc 0 and an empty table, the error only inside the records."""
    from atomtune.cli import app

    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["bench", "--task", "relax", "--data", str(structures), "--reference", "emt",
                                      "--settings", settings, "--out", str(out), "--no-progress"])
    assert isinstance(result.exception, AtomtuneError), result.output
    assert __import__("re").search(match, str(result.exception))
    assert not out.exists()  # nothing ran


def test_bench_help_lists_every_task_setting_with_its_default():
    """Issue: a user had to read the source to find a task's settings and their defaults."""
    import dataclasses

    from atomtune.cli import app
    from atomtune.tasks import TASKS, load_task

    output = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "400"}).output
    for name in TASKS:
        assert f"{name}:" in output
    assert "fmax=0.01" in output and "n_points=11" in output
    for field in dataclasses.fields(load_task("eos").Settings):
        assert field.name in output
