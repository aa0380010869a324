"""mace's own multihead replay fine-tuning behind ``--strategy mace-multihead``, offline on the tiny MACE model: the
replay head trains on generated structures pseudo-labelled by the foundation model, and the result is an atomtune model
directory on the fine-tuned head."""

import json

from typer.testing import CliRunner

from atomtune.cli import app


def test_mace_multihead_cli_writes_an_atomtune_model(tiny_mace_file, make_emt, tmp_path):
    from atomtune.data.dataset import Dataset
    from atomtune.models import load_potential

    structures = make_emt(12, seed=4)
    Dataset(structures[:9]).write(tmp_path / "train.extxyz")
    Dataset(structures[9:]).write(tmp_path / "valid.extxyz")
    result = CliRunner().invoke(app, [
        "finetune", "--model", str(tiny_mace_file), "--trust-model", "--train", str(tmp_path / "train.extxyz"),
        "--valid", str(tmp_path / "valid.extxyz"), "--strategy", "mace-multihead", "--replay-generate", "6",
        "--epochs", "2", "--out", str(tmp_path / "ft"), "--threads", "1", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "ft" / "atomtune.json").read_text())
    record = metadata["training_history"][-1]
    assert record["strategy"]["strategy"] == "mace-multihead"
    assert "--multiheads_finetuning=True" in record["command"] and "--E0s=estimated" in record["command"]
    assert record["data"]["replay"]["structures"] == 6
    potential = load_potential(str(tmp_path / "ft"))
    assert potential.backbone == "mace" and potential.head.lower() == "default" and "pt_head" in potential.heads
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["final"]["valid"]["forces_mae"] > 0 and "valid" in metrics["zero_shot"]
    assert "fine-tuned" in result.output
