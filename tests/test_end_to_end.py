"""End to end: the real CLI, real foundation-model weights (from the PyPI wheels) and the shipped GPAW dataset."""

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

SHIPPED = Path(str(files("atomtune") / "resources" / "ni_alloy"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ATOMTUNE_THREADS": "1"}


def atomtune(*arguments, cwd=None, timeout=1200):
    command = [sys.executable, "-m", "atomtune", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def test_models_lists_the_offline_checkpoints():
    result = atomtune("models")
    assert result.returncode == 0, result.stderr
    for name in ("chgnet-0.3.0", "sevennet-0", "mace-mp-0"):
        assert name in result.stdout


def test_errors_cli_with_chgnet_and_sevennet_on_shipped_gpaw_data(tmp_path):
    from atomtune.data.dataset import Dataset

    test = Dataset.read(SHIPPED / "ni_alloy_pbe.extxyz")[:6]
    path = test.write(tmp_path / "test.extxyz")
    result = atomtune("errors", "--data", path, "--model", "chgnet-0.3.0", "--model", "sevennet-0",
                      "--out", tmp_path / "out", "--align-e0", "--threads", "1")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "errors.json").read_text())
    for model in ("chgnet-0.3.0", "sevennet-0"):
        metrics = record["models"][model]
        # GPAW PBE vs the MPtrj-trained models: absolute energies differ by a per-element offset, which alignment removes
        assert metrics["aligned_energy_mae_mev_per_atom"] < metrics["energy_mae_mev_per_atom"]
        assert set(metrics["per_element"]) <= {"Al", "Ni", "Cu"}
    assert "E0-aligned" in result.stdout and (tmp_path / "out" / "parity_sevennet-0.png").exists()


def test_bad_input_is_one_clear_message_without_traceback(tmp_path):
    broken = tmp_path / "broken.extxyz"
    broken.write_text("not an xyz file\n")
    result = atomtune("errors", "--data", broken, "--model", "chgnet-0.3.0")
    assert result.returncode == 2
    assert "broken.extxyz: could not read as extxyz" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_campaign_end_to_end_and_rerun_from_cache(tmp_path):
    result = atomtune("demo", "--out", tmp_path / "demo", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = tmp_path / "demo" / "report.html"
    text = report.read_text()
    for section in ("summary", "data", "errors", "finetune", "tasks", "task-eos", "task-vacancy", "task-relax"):
        assert f"id='{section}'" in text
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["failures"] == [], results["failures"]
    for model in ("chgnet-0.3.0", "sevennet-0"):
        for strategy in ("full", "freeze", "lora"):
            assert f"{model}+{strategy}" in results["errors"]
    dry = atomtune("demo", "--out", tmp_path / "demo", "--dry-run")
    assert "will run" not in dry.stdout and "cached" in dry.stdout
