"""Benchmark: the cross-environment calculator (atomtune.envs.worker.WorkerCalculator, i-PI over a Unix socket) against
the same calculator in-process, on an MD run of a 32-atom cell; plus the build time and disk size of every family
environment built on this machine (read from each environment's atomtune-env.json, written by ``atomtune env build``).

The model is CHGNet 0.3.0 (in the chgnet wheel) by default or any ``--model`` atomtune loads; the worker runs it with the
main environment's interpreter, so the difference is the i-PI socket round trip (the worker's start-up is reported
apart). The two MD runs alternate in chunks of 10 steps so that both see the same load on a shared machine. Results go to ``benchmarks/results/envs.json``.

    python benchmarks/bench_envs.py --steps 1000 --threads 1
    python benchmarks/bench_envs.py --steps 20 --out /tmp/envs.json      # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def md_pair_seconds(local_calculator, worker_calculator, steps: int, chunk: int = 10) -> dict:
    """Velocity-Verlet MD of the same rattled 32-atom Ni/Cu cell with both calculators, run in alternating chunks of
    ``chunk`` steps so that both see the same machine load (this machine is shared); seconds per step of each."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    start = bulk("Ni", "fcc", a=3.52, cubic=True) * (2, 2, 2)
    start.symbols[::5] = "Cu"
    start.rattle(0.03, seed=1)
    MaxwellBoltzmannDistribution(start, temperature_K=300, rng=np.random.default_rng(0))
    runs = {}
    for name, calculator in (("in_process", local_calculator), ("worker", worker_calculator)):
        atoms = start.copy()
        atoms.calc = calculator
        dynamics = VelocityVerlet(atoms, 2 * units.fs)
        started = time.perf_counter()
        dynamics.run(1)  # the worker starts here (imports, model load): reported apart
        runs[name] = {"dynamics": dynamics, "atoms": atoms, "first": time.perf_counter() - started, "seconds": 0.0,
                      "cpu": 0.0, "worker_cpu": 0.0}
    worker_process = worker_calculator._process.pid
    for _ in range(steps // chunk):
        for run in runs.values():
            started, cpu, worker_cpu = time.perf_counter(), time.process_time(), process_cpu_seconds(worker_process)
            run["dynamics"].run(chunk)
            run["seconds"] += time.perf_counter() - started
            run["cpu"] += time.process_time() - cpu
            run["worker_cpu"] += process_cpu_seconds(worker_process) - worker_cpu
    done = (steps // chunk) * chunk
    local_atoms, worker_atoms = runs["in_process"]["atoms"], runs["worker"]["atoms"]
    energy_difference = abs(local_atoms.get_potential_energy() - worker_atoms.get_potential_energy())
    return {
        "steps": done,
        "seconds_per_step_in_process": runs["in_process"]["seconds"] / done,
        "seconds_per_step_worker": runs["worker"]["seconds"] / done,
        # CPU seconds per step (load-insensitive): this process's, and the worker's (idle while in-process steps run)
        "cpu_seconds_per_step_in_process": runs["in_process"]["cpu"] / done,
        "cpu_seconds_per_step_worker_main_process": runs["worker"]["cpu"] / done,
        "cpu_seconds_per_step_worker_process": runs["worker"]["worker_cpu"] / done,
        "first_step_seconds_in_process": runs["in_process"]["first"],
        "first_step_seconds_worker": runs["worker"]["first"],
        "final_energy_difference_ev": energy_difference,
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "envs.json"))
    arguments = parser.parse_args()

    from atomtune.envs.build import MARKER_FILE, environment_root
    from atomtune.envs.worker import WorkerCalculator
    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    # MD at fixed cell needs no stress; in-process the calculator computes none, so the worker is told the same
    with WorkerCalculator(arguments.model, threads=arguments.threads, stress=False) as calculator:
        timing = md_pair_seconds(load_potential(arguments.model).calculator(), calculator, arguments.steps)
    environments = {}
    root = environment_root()
    for marker in sorted(root.glob(f"*/{MARKER_FILE}")) if root.exists() else []:
        record = json.loads(marker.read_text())
        environments[marker.parent.name] = {"build_seconds": record["build_seconds"], "size_mb": record["size_mb"]}
    result = {
        "model": arguments.model,
        "threads": arguments.threads,
        **timing,
        "overhead_fraction": timing["seconds_per_step_worker"] / timing["seconds_per_step_in_process"] - 1.0,
        "cpu_overhead_fraction": (timing["cpu_seconds_per_step_worker_main_process"]
                                  + timing["cpu_seconds_per_step_worker_process"])
        / timing["cpu_seconds_per_step_in_process"] - 1.0,
        "environments": environments,
        "machine": f"{platform.node()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
    }
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
