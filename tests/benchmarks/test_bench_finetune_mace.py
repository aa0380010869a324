"""benchmarks/bench_finetune_mace.py at tiny size: atomtune's Trainer and mace_run_train both fine-tune the tiny MACE on
the same cells, each epoch is timed on both sides, and the record says what was compared, so the benchmark does not
rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load_benchmark():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_finetune_mace", BENCHMARKS / "bench_finetune_mace.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~20–30 s (a mace_run_train process); tests/benchmarks/test_gpu_script.py runs the script tiny too
def test_both_trainers_fine_tune_the_same_tiny_model_for_the_timed_epochs(tmp_path, tiny_mace_file):
    benchmark = load_benchmark()
    out = tmp_path / "finetune_mace.json"
    record = benchmark.main(["--model", str(tiny_mace_file), "--structures", "5", "--epochs", "2", "--batch-size", "2",
                             "--in-process", "--out", str(out), "--scratch", str(tmp_path / "scratch")])

    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["settings"]["dtype"] == "float32" and record["atoms_per_structure"][1] <= 32
    mace, atomtune = record["best"]["mace"], record["best"]["atomtune"]
    for side in (mace, atomtune):
        assert len(side["seconds_per_epoch_all"]) == 2  # one time per epoch, each training + validation
        assert side["seconds_per_epoch"] == min(side["seconds_per_epoch_all"]) > 0
    assert record["speedup_per_epoch"] == pytest.approx(mace["seconds_per_epoch"] / atomtune["seconds_per_epoch"])
    assert record["speedup_per_epoch_cpu_time"] == pytest.approx(
        min(mace["cpu_seconds_per_epoch_all"]) / min(atomtune["cpu_seconds_per_epoch_all"]))
    for side in (mace, atomtune):  # one CPU time per epoch, about the wall time or less for a 1-thread process
        assert len(side["cpu_seconds_per_epoch_all"]) == 2
        assert all(0 < cpu <= wall * 1.5 + 0.1 for cpu, wall in zip(side["cpu_seconds_per_epoch_all"],
                                                                       side["seconds_per_epoch_all"]))
    # mace_run_train got the file as its foundation model, kept its elements and trained E, F and stress
    for option in ("--foundation_model " + str(Path(tiny_mace_file).resolve()), "--loss stress",
                   "--foundation_model_elements True", "--multiheads_finetuning False", "--default_dtype float32"):
        assert option in mace["command"]
    assert mace["peak_rss_mib"] > 0  # its own process: a real peak
    # both sides trained: the validation force error moved on atomtune's side and is a number on mace's
    assert atomtune["valid_forces_mae_after"] != atomtune["valid_forces_mae_before"]
    assert mace["valid_forces_mae_after"] > 0


def test_a_training_set_that_mace_would_cut_short_is_refused(tmp_path, capsys):
    benchmark = load_benchmark()
    with pytest.raises(SystemExit):
        benchmark.main(["--model", "tiny", "--structures", "5", "--batch-size", "3", "--out", str(tmp_path / "x.json")])
    assert "not a multiple of --batch-size 3" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="multiple of 4"):
        benchmark.main(["--model", "tiny", "--atoms", "30", "--out", str(tmp_path / "x.json")])
