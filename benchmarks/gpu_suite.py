"""Every predict / fine-tune / batched-relaxation benchmark on one device in one call, within a time budget: one JSON and
one markdown table (``benchmarks/gpu.sh`` runs it with ``--device cuda``).

The benchmarks are the scripts next to this one (``bench_predict_{chgnet,sevennet,mace}.py``,
``bench_batched_relax.py``, ``bench_finetune_{chgnet,sevennet,mace}.py``), each run as its own process with ``--device`` and
sizes chosen so that the whole suite fits the budget (default 480 s, the 8 minutes a first GPU loan may last). Each
benchmark has a time cap (its share of the budget, never more than what is left); one that runs past it is killed with its
child processes and recorded as ``timed_out`` with the end of its log (the predict benchmarks print every pass, so the
numbers measured so far are in that log). The summary rows (rates, the batched-vs-one-by-one ratios and the ≥ 5× target
of batched inference and relaxation on a GPU, seconds per fine-tuning epoch, peak GPU memory) go to ``gpu.json`` (with
each benchmark's full result) and ``gpu.md`` in ``--out-dir``.

``--tiny`` uses sizes that run in seconds (2–5 structures, 1 pass) so that the suite can run on CPU in the test suite
(``tests/benchmarks/test_gpu_script.py``) and never rots; ``--in-process`` then runs the benchmarks in this interpreter
(``main(argv)`` of each script; no interpreter start per benchmark, no time caps).

    bash benchmarks/gpu.sh                                   # on a GPU machine: --device cuda, 480 s
    python benchmarks/gpu_suite.py --device cuda --budget-s 480 --out-dir benchmarks/results
    python benchmarks/gpu_suite.py --device cpu --tiny --in-process --out-dir /tmp/gpu-smoke   # smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).parent
#: the GPU target for batched inference and batched relaxation against one structure at a time on the same device
BATCHED_TARGET = 5.0


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script of the suite: its options at full size (on a GPU) and tiny (smoke runs), its time cap."""

    name: str
    script: str
    kind: str  # predict | relax | finetune
    full: tuple[str, ...]
    tiny: tuple[str, ...]
    cap_s: float


#: Sizes at full scale were chosen so that each benchmark ends well inside its cap on one GPU, with its model load and
#: CUDA start-up (~10–20 s a process) included; the caps add up to 475 s of the 480 s budget (MACE fine-tuning, added
#: last, took 5–10 s from each of the other caps: none of them has run on a GPU yet).
BENCHMARKS = (
    Benchmark("predict_chgnet", "bench_predict_chgnet.py", "predict",
              ("--structures", "128", "--repeats", "2", "--batch-sizes", "1,8,32,64"),
              ("--structures", "2", "--repeats", "1", "--batch-sizes", "1,2"), 65),
    Benchmark("predict_sevennet", "bench_predict_sevennet.py", "predict",
              ("--structures", "128", "--repeats", "2", "--batch-sizes", "1,8,32,64"),
              ("--structures", "2", "--repeats", "1", "--batch-sizes", "1,2"), 65),
    Benchmark("predict_mace", "bench_predict_mace.py", "predict",
              ("--model", "medium-like", "--structures", "128", "--repeats", "1", "--batch-sizes", "1,8,32,64"),
              ("--model", "tiny", "--structures", "2", "--repeats", "1", "--batch-sizes", "1,2"), 65),
    Benchmark("batched_relax", "bench_batched_relax.py", "relax",
              ("--model", "chgnet-0.3.0", "--structures", "32", "--batch-sizes", "1,8,32", "--max-steps", "150"),
              ("--model", "chgnet-0.3.0", "--structures", "2", "--batch-sizes", "2", "--max-steps", "2"), 90),
    Benchmark("finetune_chgnet", "bench_finetune_chgnet.py", "finetune",
              ("--structures", "100", "--epochs", "2", "--batch-size", "8"),
              ("--structures", "5", "--epochs", "1", "--batch-size", "2", "--in-process"), 65),
    Benchmark("finetune_sevennet", "bench_finetune_sevennet.py", "finetune",
              ("--structures", "100", "--epochs", "2", "--batch-size", "8"),
              ("--structures", "5", "--epochs", "1", "--batch-size", "2", "--in-process"), 65),
    # random weights at MACE-MP-medium size (the real file cannot be downloaded here); 40 = 32 train (4 batches of 8)
    Benchmark("finetune_mace", "bench_finetune_mace.py", "finetune",
              ("--model", "medium-like", "--structures", "40", "--epochs", "2", "--batch-size", "8"),
              ("--model", "tiny", "--structures", "5", "--epochs", "1", "--batch-size", "2", "--in-process"), 60),
)


@dataclass
class Outcome:
    """What one benchmark of the suite gave: ``status`` ok | failed | timed_out | skipped, its wall seconds, the
    summary row (see :func:`summarise`), its full result and the end of its log."""

    name: str
    status: str
    seconds: float
    cap_s: float
    command: list[str]
    summary: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    log_tail: str = ""


def arguments(benchmark: Benchmark, device: str, threads: int, tiny: bool, mace_model: str | None = None) -> list[str]:
    """The benchmark script's options: its sizes, ``--device``, ``--threads`` (``--out`` is added by the runner);
    ``mace_model`` replaces the MACE model of ``predict_mace`` and ``finetune_mace`` (a ``.model`` file, ``tiny`` or
    ``medium-like``)."""
    sizes = list(benchmark.tiny if tiny else benchmark.full)
    if mace_model is not None and "--model" in sizes and benchmark.name in ("predict_mace", "finetune_mace"):
        sizes[sizes.index("--model") + 1] = mace_model
    return [*sizes, "--device", device, "--threads", str(threads)]


def run_in_subprocess(benchmark: Benchmark, argv: list[str], cap_s: float, log: Path) -> tuple[str, float]:
    """Run the script as its own process group, killed with its children after ``cap_s``; (status, seconds)."""
    command = [sys.executable, str(HERE / benchmark.script), *argv]
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            returncode = process.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the fine-tune benchmarks run each side as a child process
            process.wait()
            return "timed_out", time.perf_counter() - started
    return ("ok" if returncode == 0 else "failed"), time.perf_counter() - started


def run_in_process(benchmark: Benchmark, argv: list[str], log: Path) -> tuple[str, float]:
    """Call the script's ``main(argv)`` in this interpreter (smoke runs); (status, seconds)."""
    import contextlib

    started = time.perf_counter()
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"gpu_suite_{benchmark.name}", HERE / benchmark.script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    with log.open("w") as handle, contextlib.redirect_stdout(handle):
        try:
            spec.loader.exec_module(module)
            module.main(argv)
            status = "ok"
        except BaseException:  # noqa: BLE001  (a benchmark's SystemExit too: the suite records it and goes on)
            traceback.print_exc(file=handle)
            status = "failed"
    return status, time.perf_counter() - started


def summarise(kind: str, result: dict) -> dict:
    """The numbers of a benchmark's result that go into the table (rates in structures/s, times in s)."""
    gpu_memory = result.get("peak_gpu_memory_mib")
    if kind == "predict":
        if isinstance(result.get("atomtune"), list):  # bench_predict_mace.py: one row per batch size
            rates = {int(row["batch_size"]): row["structures_per_s"] for row in result["atomtune"]}
        else:
            rates = {int(size): rate for size, rate in result["atomtune_structures_per_s"].items()}
        best = max(rates, key=rates.get)
        native = result["native_structures_per_s"]
        return {
            "one_by_one_native_structures_per_s": native,
            "atomtune_batch_1_structures_per_s": rates.get(1),
            "best_batch_size": best,
            "atomtune_best_structures_per_s": rates[best],
            "batched_vs_native_one_by_one": rates[best] / native,
            "batched_vs_atomtune_batch_1": rates[best] / rates[1] if 1 in rates else None,
            "peak_gpu_memory_mib": gpu_memory,
        }
    if kind == "relax":
        wall = {key: min(values) for key, values in result["seconds_per_pass"].items()}
        batched = {key: value for key, value in wall.items() if key != "ase"}
        best = min(batched, key=batched.get)
        return {
            "one_by_one_ase_seconds": wall["ase"],
            "atomtune_batch_1_seconds": wall.get("batched_1"),
            "best_batch_size": int(best.removeprefix("batched_")),
            "atomtune_best_seconds": batched[best],
            "batched_vs_native_one_by_one": wall["ase"] / batched[best],
            "batched_vs_atomtune_batch_1": wall["batched_1"] / batched[best] if "batched_1" in wall else None,
            "peak_gpu_memory_mib": gpu_memory,
        }
    native_side = next(side for side in result["best"] if side != "atomtune")
    native, ours = result["best"][native_side], result["best"]["atomtune"]
    return {
        "native_trainer": native_side,
        "native_seconds_per_epoch": native["seconds_per_epoch"],
        "atomtune_seconds_per_epoch": ours["seconds_per_epoch"],
        "speedup_per_epoch": result["speedup_per_epoch"],
        "peak_gpu_memory_mib": {side: run.get("peak_gpu_memory_mib") for side, run in result["best"].items()},
    }


def run_suite(device: str, threads: int, tiny: bool, in_process: bool, budget_s: float, out_dir: Path,
              only: list[str] | None = None, mace_model: str | None = None) -> dict:
    """Run the benchmarks in order within ``budget_s`` seconds and write ``gpu.json`` and ``gpu.md`` into ``out_dir``
    (after every benchmark, so that a run stopped from outside still leaves what was measured)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix="atomtune-gpu-suite-"))
    started = time.perf_counter()
    record = {
        "benchmark": "gpu_suite",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "tiny": tiny,
        "threads": threads,
        "budget_s": budget_s,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        "batched_target": BATCHED_TARGET,
        "benchmarks": [],
    }
    for benchmark in BENCHMARKS:
        if only and benchmark.name not in only:
            continue
        out, log = parts / f"{benchmark.name}.json", parts / f"{benchmark.name}.log"
        command = [benchmark.script, *arguments(benchmark, device, threads, tiny, mace_model)]
        argv = [*command[1:], "--out", str(out)]
        left = budget_s - (time.perf_counter() - started)
        cap = min(benchmark.cap_s, left)
        print(f"== {benchmark.name}: {' '.join(command)} (cap {cap:.0f} s)", flush=True)
        if cap < 15 and not in_process:
            outcome = Outcome(benchmark.name, "skipped", 0.0, cap, command, log_tail="budget spent")
        else:
            if in_process:
                status, seconds = run_in_process(benchmark, argv, log)
            else:
                status, seconds = run_in_subprocess(benchmark, argv, cap, log)
            outcome = Outcome(benchmark.name, status, seconds, cap, command)
            lines = log.read_text(errors="replace").splitlines()
            outcome.log_tail = "\n".join(lines[-40:])
            if status == "ok":
                try:
                    outcome.result = json.loads(out.read_text())
                    outcome.summary = summarise(benchmark.kind, outcome.result)
                except (OSError, ValueError, KeyError) as error:
                    outcome.status, outcome.log_tail = "failed", f"{outcome.log_tail}\nresult unreadable: {error!r}"
        print(f"   {outcome.status} in {outcome.seconds:.1f} s", flush=True)
        if outcome.status != "ok":
            print(outcome.log_tail[-3000:], flush=True)
        record["benchmarks"].append(asdict(outcome))
        record["gpu"] = next((o["result"].get("gpu") for o in record["benchmarks"] if o["result"].get("gpu")), None)
        record["total_seconds"] = time.perf_counter() - started
        write(record, out_dir)
    return record


def write(record: dict, out_dir: Path) -> None:
    """``gpu.json`` (everything) and ``gpu.md`` (the table) in ``out_dir``."""
    (out_dir / "gpu.json").write_text(json.dumps(record, indent=1) + "\n")
    (out_dir / "gpu.md").write_text(markdown(record))


def _number(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def markdown(record: dict) -> str:
    """The suite's tables: predict and relaxation (one by one, batch 1, best batch, ratios, the ≥ 5× target) and
    fine-tuning (seconds per epoch, speed-up), with the run's device, load and status of each benchmark."""
    lines = [
        f"# Benchmarks on {record['device']}" + (f" ({record['gpu']})" if record.get("gpu") else ""),
        "",
        (
            f"{record['date']}; {'tiny sizes (smoke run, not a measurement); ' if record['tiny'] else ''}"
            f"{record['threads']} CPU thread(s); load average before {record['machine']['load_average'][0]:.1f}; "
            f"total {record.get('total_seconds', 0):.0f} s of a {record['budget_s']:.0f} s budget."
        ),
        "",
        "## Inference and relaxation: batched vs one structure at a time, same device",
        "",
        (
            "| benchmark | one by one (native) | atomtune batch 1 | atomtune best (batch) | batched / native one by one "
            f"| batched / batch 1 | ≥ {BATCHED_TARGET:g}× target | peak GPU MiB |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for outcome in record["benchmarks"]:
        summary, name = outcome["summary"], outcome["name"]
        if not name.startswith(("predict", "batched")):
            continue
        if outcome["status"] != "ok":
            lines.append(f"| {name} | {outcome['status']} ({outcome['seconds']:.0f} s of {outcome['cap_s']:.0f}) "
                         "| | | | | | |")
            continue
        if name.startswith("predict"):
            cells = [f"{summary['one_by_one_native_structures_per_s']:.1f} /s",
                     _number(summary["atomtune_batch_1_structures_per_s"], 1, " /s"),
                     f"{summary['atomtune_best_structures_per_s']:.1f} /s ({summary['best_batch_size']})"]
        else:
            cells = [f"{summary['one_by_one_ase_seconds']:.1f} s", _number(summary["atomtune_batch_1_seconds"], 1, " s"),
                     f"{summary['atomtune_best_seconds']:.1f} s ({summary['best_batch_size']})"]
        ratio = summary["batched_vs_native_one_by_one"]
        met = "yes" if ratio >= BATCHED_TARGET else "no"
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio:.2f}× | {_number(summary['batched_vs_atomtune_batch_1'])}× "
                     f"| {met} | {_number(summary['peak_gpu_memory_mib'], 0)} |")
    lines += [
        "",
        "## Fine-tuning: one epoch (training + validation), atomtune vs the backbone's own trainer",
        "",
        "| benchmark | native trainer s/epoch | atomtune s/epoch | speed-up | peak GPU MiB (native / atomtune) |",
        "|---|---|---|---|---|",
    ]
    for outcome in record["benchmarks"]:
        summary, name = outcome["summary"], outcome["name"]
        if not name.startswith("finetune"):
            continue
        if outcome["status"] != "ok":
            lines.append(f"| {name} | {outcome['status']} ({outcome['seconds']:.0f} s of {outcome['cap_s']:.0f}) | | | |")
            continue
        memory = summary["peak_gpu_memory_mib"]
        native = summary["native_trainer"]
        lines.append(f"| {name} ({native}) | {summary['native_seconds_per_epoch']:.2f} "
                     f"| {summary['atomtune_seconds_per_epoch']:.2f} | {summary['speedup_per_epoch']:.2f}× "
                     f"| {_number(memory.get(native), 0)} / {_number(memory.get('atomtune'), 0)} |")
    lines += ["", "Commands (in benchmarks/, each with `--out`):", ""]
    lines += [f"- `{' '.join(outcome['command'])}`" for outcome in record["benchmarks"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device: cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds per benchmark): a smoke run")
    parser.add_argument("--in-process", action="store_true", help="run the benchmarks in this interpreter, no caps")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall seconds for the whole suite (default 480)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per benchmark (default 4 on cuda, for graph building; 1 on cpu)")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    parser.add_argument("--mace-model", default=None,
                        help="MACE model of predict_mace and finetune_mace: a .model file, tiny or medium-like "
                             "(default: medium-like; tiny with --tiny)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="where gpu.json and gpu.md go")
    args = parser.parse_args(argv)
    threads = args.threads or (4 if args.device.startswith("cuda") else 1)
    only = args.only.split(",") if args.only else None
    unknown = set(only or []) - {benchmark.name for benchmark in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in BENCHMARKS]}")
    record = run_suite(args.device, threads, args.tiny, args.in_process, args.budget_s, args.out_dir, only,
                       args.mace_model)
    print((args.out_dir / "gpu.md").read_text())
    print(f"wrote {args.out_dir / 'gpu.json'} and {args.out_dir / 'gpu.md'}")
    return record


if __name__ == "__main__":
    sys.exit(0 if all(o["status"] == "ok" for o in main()["benchmarks"]) else 1)
