"""``atomtune baseline`` end to end on EMT data (regression fast; mace-scratch slow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from atomtune.cli import app
from atomtune.data.dataset import Dataset
from emt_data import emt_structures

runner = CliRunner()


def test_regression_fit_then_evaluate(tmp_path):
    data = Dataset(emt_structures(20, seed=21)).write(tmp_path / "labelled.extxyz")
    out = tmp_path / "reg"
    result = runner.invoke(app, ["baseline", "--kind", "regression", "--data", str(data), "--features", "composition",
                                 "--estimator", "ridge", "--estimator", "knn", "--sizes", "8,all", "--out", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["estimators"]) == {"ridge", "knn"} and (out / "parity.png").exists()
    assert summary["estimators"]["ridge"]["metrics"]["n_test"] == 4
    assert [p["n_train"] for p in summary["learning_curves"]["knn"]] == [8, 16] and (out / "learning_curve.png").exists()
    new = Dataset(emt_structures(6, seed=22)).write(tmp_path / "new.extxyz")
    result = runner.invoke(app, ["baseline", "--kind", "regression", "--evaluate", str(out / "ridge"), "--data",
                                 str(new), "--out", str(tmp_path / "scored")])
    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "scored" / "errors.json").read_text())
    assert scored["metrics"]["n_structures"] == 6 and "force_mae_mev_per_a" not in scored["metrics"]


def test_bad_input(tmp_path):
    result = runner.invoke(app, ["baseline", "--kind", "nequip", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "mace-scratch, nequip-scratch or regression" in str(result.exception or result.output)
    result = runner.invoke(app, ["baseline", "--kind", "nequip-scratch", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "needs --train" in str(result.exception or result.output)
    (tmp_path / "spec.yaml").write_text("num_chanels: 8\n")
    data = Dataset(emt_structures(4, seed=23)).write(tmp_path / "t.extxyz")
    result = runner.invoke(app, ["baseline", "--kind", "mace-scratch", "--train", str(data), "--settings",
                                 str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "m")])
    assert "unknown field(s) num_chanels" in str(result.exception)


@pytest.mark.slow  # one more mace_run_train run
def test_mace_scratch_command_writes_a_loadable_model(tmp_path):
    structures = emt_structures(16, seed=24)
    train = Dataset(structures[:12]).write(tmp_path / "train.extxyz")
    valid = Dataset(structures[12:]).write(tmp_path / "valid.extxyz")
    (tmp_path / "spec.yaml").write_text("num_channels: 8\nr_max: 4.0\ncorrelation: 2\n")
    out = tmp_path / "scratch"
    result = runner.invoke(app, ["baseline", "--kind", "mace-scratch", "--train", str(train), "--valid", str(valid),
                                 "--epochs", "1", "--settings", str(tmp_path / "spec.yaml"), "--out", str(out),
                                 "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    errors = runner.invoke(app, ["errors", "--data", str(valid), "--model", str(out), "--out", str(tmp_path / "e")])
    assert errors.exit_code == 0, errors.output
