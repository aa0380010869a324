"""``atomtune finetune`` end to end on the toy potential (saved as a model directory): strategies, a scan, bad input,
and the fine-tuned directory used as ``--model`` by ``atomtune errors``."""

import json

import pytest
from typer.testing import CliRunner

from atomtune.cli import app
from atomtune.exceptions import AtomtuneError


@pytest.fixture
def files(toy_backbone, make_emt, tmp_path):
    from atomtune.data.dataset import Dataset

    structures = make_emt(14, seed=3)
    Dataset(structures[:10]).write(tmp_path / "train.extxyz")
    Dataset(structures[10:]).write(tmp_path / "valid.extxyz")
    toy_backbone().save(tmp_path / "toy-model")
    return tmp_path


def _invoke(*arguments):
    return CliRunner().invoke(app, ["finetune", *map(str, arguments)], catch_exceptions=True)


def _common(files):
    return ["--model", files / "toy-model", "--train", files / "train.extxyz", "--valid", files / "valid.extxyz",
            "--epochs", 2, "--learning-rate", 0.01, "--no-progress", "--threads", 1]


def test_finetune_lora_writes_a_model_that_errors_can_use(files):
    result = _invoke(*_common(files), "--strategy", "lora", "--lora-rank", 2, "--out", files / "ft")
    assert result.exit_code == 0, result.output
    assert "trainable parameters: 59 of 1,164" in result.output
    assert "zero-shot + E0" in result.output
    metadata = json.loads((files / "ft" / "atomtune.json").read_text())
    assert metadata["training_history"][0]["strategy"]["lora_rank"] == 2
    errors = CliRunner().invoke(
        app, ["errors", "--model", str(files / "ft"), "--model", str(files / "toy-model"),
              "--data", str(files / "valid.extxyz"), "--out", str(files / "errors"), "--threads", "1"]
    )
    assert errors.exit_code == 0, errors.output
    assert len(json.loads((files / "errors" / "errors.json").read_text())["models"]) == 2


def test_scan_freeze_depth_writes_table_and_plot(files):
    result = _invoke(*_common(files), "--strategy", "freeze", "--scan", "freeze-depth=1,all", "--out", files / "scan")
    assert result.exit_code == 0, result.output
    record = json.loads((files / "scan" / "scan.json").read_text())
    assert [row["value"] for row in record["rows"]] == [1, "all"]
    assert record["rows"][0]["trainable_parameters"] == 9 and record["rows"][1]["trainable_parameters"] == 1105
    assert (files / "scan" / "scan.png").exists()
    assert (files / "scan" / "scan" / "freeze-depth=all" / "atomtune.json").exists()
    assert "lowest force RMSE" in result.output
    again = _invoke(*_common(files), "--strategy", "freeze", "--scan", "freeze-depth=1,all", "--out", files / "scan",
                    "--resume")
    assert again.exit_code == 0 and again.output.count("finished earlier") == 2


def test_replay_and_split_without_valid(files):
    arguments = ["--model", files / "toy-model", "--train", files / "train.extxyz", "--epochs", 1, "--no-progress",
                 "--strategy", "replay", "--replay-generate", 3, "--replay-base", "freeze", "--freeze-depth", 1,
                 "--general-data", files / "valid.extxyz", "--out", files / "ft"]
    result = _invoke(*arguments)
    assert result.exit_code == 0, result.output
    assert "held out 1 of 10" in result.output and "forgetting on the general set" in result.output


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--learning-rate", 0], "--learning-rate: Input should be greater than 0"),
        (["--epochs", 0], "--epochs: Input should be greater than 0"),
        (["--strategy", "adapter"], "--strategy: Input should be 'full', 'freeze'"),
        (["--replay-data", "x.extxyz"], "need strategy 'replay'"),
        (["--scan", "depth=1,2"], "cannot scan 'depth'"),
        (["--scan", "lora-rank=two"], "not a valid value"),
    ],
)
def test_bad_options_raise_atomtune_errors(files, extra, match):
    arguments = _common(files) + ["--out", files / "ft"]
    for k in range(0, len(extra), 2):  # later options win in typer, but keep the list readable: replace in place
        if extra[k] in arguments:
            arguments[arguments.index(extra[k]) + 1] = extra[k + 1]
        else:
            arguments += extra[k : k + 2]
    if "--replay-data" in extra:
        (files / "x.extxyz").write_text((files / "valid.extxyz").read_text())
        arguments[arguments.index("--replay-data") + 1] = files / "x.extxyz"
    result = _invoke(*arguments)
    assert isinstance(result.exception, AtomtuneError), result.output
    assert match in str(result.exception)


def test_committee_option_writes_a_committee_model(files):
    result = _invoke(*_common(files), "--strategy", "lora", "--lora-rank", 2, "--committee", 2,
                     "--committee-kind", "full", "--out", files / "committee")
    assert result.exit_code == 0, result.output
    from atomtune.models import load_potential

    committee = load_potential(str(files / "committee"))
    (record,) = committee.predict([__import__("ase.build", fromlist=["bulk"]).bulk("Cu", "fcc", a=3.6)])
    assert record["energy_std"] > 0  # two members trained with different seeds and resamples disagree


def test_two_runs_into_one_out_refused(files):
    """The reported race: the second `finetune --out DIR` must not overwrite the first run's model."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", f"from atomtune.files import OutputLock\nimport time\n"
                               f"with OutputLock({str(files / 'ft')!r}, 'fine-tuning'):\n    print('x', flush=True)\n"
                               f"    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        result = _invoke(*_common(files), "--out", files / "ft")
        assert isinstance(result.exception, AtomtuneError) and f"pid {holder.pid}" in str(result.exception)
    finally:
        holder.kill()
        holder.wait()
    # the lock is free again once the holder died
    assert _invoke(*_common(files), "--out", files / "ft").exit_code == 0


def test_auto_strategy_from_the_command_line(files):
    result = _invoke("--model", files / "toy-model", "--train", files / "train.extxyz", "--valid",
                     files / "valid.extxyz", "--no-progress", "--threads", 1, "--strategy", "auto", "--budget", "40s",
                     "--out", files / "auto")
    assert result.exit_code == 0, result.output
    assert "strategy search" in result.output and "winner" in result.output
    assert (files / "auto" / "search.png").exists()
