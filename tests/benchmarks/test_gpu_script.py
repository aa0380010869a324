"""benchmarks/gpu.sh and gpu_suite.py, the one-call GPU benchmark: it runs on CPU at tiny sizes so that it never rots,
its time caps kill a benchmark with its child processes, and gpu.sh refuses a machine without CUDA in one clear line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", BENCHMARKS / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_runs_tiny_on_cpu_and_lands_in_one_json_and_table(tmp_path, tiny_mace_file):
    suite = load_suite()
    record = suite.main(["--device", "cpu", "--tiny", "--in-process", "--out-dir", str(tmp_path),
                         "--mace-model", str(tiny_mace_file)])

    names = [benchmark.name for benchmark in suite.BENCHMARKS]
    assert {script.name for script in BENCHMARKS.glob("bench_predict_*.py")} | {
        "bench_batched_relax.py", "bench_finetune_chgnet.py", "bench_finetune_sevennet.py"
    } <= {benchmark.script for benchmark in suite.BENCHMARKS}
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert [outcome["name"] for outcome in written["benchmarks"]] == names
    failed = {o["name"]: o["log_tail"][-2000:] for o in written["benchmarks"] if o["status"] != "ok"}
    assert not failed, failed
    assert written == json.loads(json.dumps(record))
    outcomes = {outcome["name"]: outcome for outcome in written["benchmarks"]}
    for name in ("predict_chgnet", "predict_sevennet", "predict_mace"):
        result, summary = outcomes[name]["result"], outcomes[name]["summary"]
        assert result["device"] == "cpu"
        native = result["native_structures_per_s"]
        # the target row: the best batched rate over the native calculator's one-by-one rate, from the same run
        assert summary["batched_vs_native_one_by_one"] == pytest.approx(summary["atomtune_best_structures_per_s"] / native)
        assert summary["best_batch_size"] in (1, 2) and summary["atomtune_batch_1_structures_per_s"] > 0
    relax = outcomes["batched_relax"]
    assert relax["result"]["device"] == "cpu" and relax["summary"]["batched_vs_native_one_by_one"] > 0
    for name in ("finetune_chgnet", "finetune_sevennet"):
        summary = outcomes[name]["summary"]
        assert outcomes[name]["result"]["settings"]["device"] == "cpu"
        assert summary["speedup_per_epoch"] == pytest.approx(
            summary["native_seconds_per_epoch"] / summary["atomtune_seconds_per_epoch"])
    table = (tmp_path / "gpu.md").read_text()
    for name in names:
        assert f"| {name}" in table
    assert "≥ 5× target" in table and "tiny sizes (smoke run, not a measurement)" in table


def test_a_benchmark_past_its_cap_is_killed_with_its_children(tmp_path):
    suite = load_suite()
    child_pid_file = tmp_path / "child.pid"
    script = tmp_path / "sleepy.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(child_pid_file)!r}, "w").write(str(child.pid))
        print("pass 1: 3.0 structures/s", flush=True)
        time.sleep(60)
    """))
    benchmark = suite.Benchmark("sleepy", str(script), "predict", (), (), 60)
    started = time.perf_counter()
    status, seconds = suite.run_in_subprocess(benchmark, [], cap_s=3, log=tmp_path / "sleepy.log")
    assert status == "timed_out" and 3 <= seconds < 30 and time.perf_counter() - started < 30
    assert "pass 1: 3.0 structures/s" in (tmp_path / "sleepy.log").read_text()  # what was measured before the cap
    child = int(child_pid_file.read_text())
    for _ in range(50):  # the killed child is reaped by init; give it a moment
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"child process {child} of the timed-out benchmark still runs")


def test_gpu_sh_refuses_a_machine_without_cuda_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: gpu.sh would run the suite")
    completed = subprocess.run(["bash", str(BENCHMARKS / "gpu.sh"), "--out-dir", str(tmp_path)],
                               capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith("benchmarks/gpu.sh: torch")
    assert "sees no CUDA device" in completed.stderr and not (tmp_path / "gpu.json").exists()


def test_full_sizes_use_only_options_the_tiny_run_exercises():
    # the GPU run itself cannot run here: at least every option it passes is one the tiny CPU run above passes too
    for benchmark in load_suite().BENCHMARKS:
        full = {argument for argument in benchmark.full if argument.startswith("--")}
        tiny = {argument for argument in benchmark.tiny if argument.startswith("--")}
        assert full <= tiny, (benchmark.name, full - tiny)
    assert sum(benchmark.cap_s for benchmark in load_suite().BENCHMARKS) <= 480
