"""Benchmark: 1 vs 2 torch intra-op threads, and 2 processes × 1 thread, for predict and fine-tuning steps (CPU).

The same work three ways, as throughput (structures per second of wall time):

- ``1x1``: one process, 1 thread, all the work;
- ``1x2``: one process, 2 intra-op threads (``torch.set_num_threads(2)``, OpenMP/BLAS 2), all the work;
- ``2x1``: two processes with 1 thread each, started together, each half the work (what a Dask cluster of single-thread
  workers, or two fine-tunes side by side, do).

Work: ``predict`` on ``--structures`` random fcc Ni–Al cells of ``--atoms`` atoms (batch 1), and ``--steps`` fine-tuning
steps at batch 1 (the Trainer's step: forward with forces and stress, the backbone's default loss, backward, AdamW; the
cells featurised beforehand). Every process loads its model and warms up first and then waits, so that the timed parts of
the two ``2x1`` processes start together; times exclude loading. The configurations run one after the other, so load from
other processes on a shared machine changes between them: the numbers mean something only on an otherwise idle machine
(the load average is recorded before and after each). Results go to ``benchmarks/results/threads.json``.

    python benchmarks/bench_threads.py --models chgnet-0.3.0,sevennet-0 --atoms 108 --structures 8 --steps 4
    python benchmarks/bench_threads.py --models chgnet-0.3.0 --atoms 4 --structures 2 --steps 1 --out /tmp/t.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory_scaling import REPEATS, fine_tuning_step, nial_cell  # noqa: E402  (a sibling script, not a package)

RESULTS = Path(__file__).parent / "results" / "threads.json"
#: (label, processes, threads per process)
CONFIGURATIONS = (("1x1", 1, 1), ("1x2", 1, 2), ("2x1", 2, 1))


def worker(model: str, work: str, atoms: int, count: int, threads: int, seed: int) -> None:
    """In a child process: load, warm up, say READY, wait for GO on stdin, do ``count`` units of ``work``, print the
    timed seconds as JSON."""
    import torch

    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.loss import EnergyForceStressLoss, default_loss_weights
    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    potential = load_potential(model, dtype="float32", trust=True)
    cells = [nial_cell(atoms, seed=seed + k) for k in range(count)]
    if work == "predict":
        potential.predict(cells[:1], batch_size=1)

        def run():
            potential.predict(cells, batch_size=1)
    else:
        loss_function = EnergyForceStressLoss(default_loss_weights(potential.backbone))
        optimizer = torch.optim.AdamW([p for p in potential.parameters() if p.requires_grad], lr=1e-6)
        featurized = [FeaturizedSet.build(f"cell-{k}", [cell], potential) for k, cell in enumerate(cells)]
        fine_tuning_step(potential, loss_function, optimizer, featurized[0])

        def run():
            for one in featurized:
                fine_tuning_step(potential, loss_function, optimizer, one)

    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    cpu_started = time.process_time()
    run()
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - started,
                                  "cpu_seconds": time.process_time() - cpu_started}), flush=True)


def run_configuration(model: str, work: str, atoms: int, count: int, processes: int, threads: int) -> dict:
    """Start ``processes`` workers of ``threads`` threads sharing ``count`` units; release them together; wall time of
    the whole (first start to last end) and each worker's own seconds."""
    shares = [count // processes + (1 if k < count % processes else 0) for k in range(processes)]
    environment = {**os.environ, **{name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                     "MKL_NUM_THREADS")}}
    children = [
        subprocess.Popen([sys.executable, __file__, "--worker", model, work, str(atoms), str(share), str(threads),
                          str(1000 * k)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
        for k, share in enumerate(shares)
    ]
    for child in children:
        for line in child.stdout:
            if line.startswith("READY"):
                break
        else:
            raise SystemExit(f"worker {child.args} ended before it was ready (exit {child.wait()})")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for child in children:
        child.stdin.write("GO\n")
        child.stdin.flush()
    results = []
    for child in children:
        output = child.stdout.read()
        if child.wait() != 0 or "RESULT " not in output:
            raise SystemExit(f"worker {child.args} failed (exit {child.returncode})")
        results.append(json.loads(output.split("RESULT ", 1)[1]))
    wall = time.perf_counter() - started
    return {
        "processes": processes,
        "threads_per_process": threads,
        "units": count,
        "wall_seconds": wall,
        "units_per_second": count / wall,
        "worker_seconds": [r["seconds"] for r in results],
        "worker_cpu_seconds": [r["cpu_seconds"] for r in results],
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="chgnet-0.3.0,sevennet-0", help="comma-separated model names")
    parser.add_argument("--atoms", type=int, default=108, help=f"atoms per Ni–Al cell, of {sorted(REPEATS)}")
    parser.add_argument("--structures", type=int, default=8, help="cells to predict (split between processes in 2x1)")
    parser.add_argument("--steps", type=int, default=4, help="fine-tuning steps (split between processes in 2x1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)  # internal: MODEL WORK ATOMS COUNT THREADS SEED
    args = parser.parse_args(argv)
    if args.worker:
        model, work, atoms, count, threads, seed = args.worker
        worker(model, work, int(atoms), int(count), int(threads), int(seed))
        return {}
    if args.structures < 2 or args.steps < 2:
        parser.error("--structures and --steps must be at least 2 (the 2x1 configuration splits them)")

    result = {
        "benchmark": "threads",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "atoms": args.atoms,
        "note": "configurations run one after the other; valid only on an otherwise idle machine",
        "runs": {},
    }
    for model in args.models.split(","):
        for work, count in (("predict", args.structures), ("fine_tuning_step", args.steps)):
            runs = {}
            for label, processes, threads in CONFIGURATIONS:
                runs[label] = run_configuration(model, work, args.atoms, count, processes, threads)
                print(f"{model:13s} {work:16s} {label}: {runs[label]['units_per_second']:7.3f} /s "
                      f"(load {runs[label]['load_average_before_after'][0]:.1f})", flush=True)
            base = runs["1x1"]["units_per_second"]
            result["runs"][f"{model}/{work}"] = {
                "configurations": runs,
                "throughput_relative_to_1x1": {label: run["units_per_second"] / base for label, run in runs.items()},
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
