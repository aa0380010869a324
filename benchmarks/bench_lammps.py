"""Benchmark: MD throughput (atom-steps per second) with LAMMPS integrating through ``fix external`` vs ASE's
VelocityVerlet, same model, same cell, same time step (NVE), at ~10³ and ~10⁴ atoms.

Both engines call the same ASE calculator once per step, so the difference is the engine's own overhead: LAMMPS's
integrator and the callback's copies (positions in, forces / virial out) against ASE's Python integrator. The two run
interleaved (``--repeats`` passes, best of each) so that load from other processes hits both alike. Models: EMT (cheap:
the overhead is visible) and any atomtune model (``--models``). Results go to ``benchmarks/results/lammps.json``;
docs/lammps.md quotes them.

    python benchmarks/bench_lammps.py --threads 1
    python benchmarks/bench_lammps.py --models emt --sizes 500 --steps 5 --repeats 1 --out /tmp/lammps.json   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "lammps.json"


def cell(n_atoms: int):
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    n = max(1, round((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(0.02, seed=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    return atoms


def make_calculator(model: str):
    if model == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    from atomtune.models import load_potential

    return load_potential(model, trust=True).calculator()


def time_ase(atoms, calculator, steps: int) -> float:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.get_forces()  # the first evaluation (setup) is outside the timing, as LAMMPS's setup is below
    integrator = VelocityVerlet(atoms, 2.0 * units.fs)
    start = time.perf_counter()
    integrator.run(steps)
    return time.perf_counter() - start


def time_lammps(atoms, calculator, steps: int) -> float:
    from atomtune.lammps import LammpsDynamics, LammpsIntegrator

    atoms = atoms.copy()
    atoms.calc = calculator
    integrator = LammpsIntegrator(atoms, LammpsDynamics(timestep_fs=2.0, ensemble="nve"))
    integrator.run(0)  # LAMMPS's setup evaluates the forces once
    start = time.perf_counter()
    integrator.run(steps)
    elapsed = time.perf_counter() - start
    integrator.close()
    return elapsed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="emt", help="comma-separated: emt and/or atomtune model names / paths")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--steps", default="20,5", help="steps per size (comma-separated, same order as --sizes)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from atomtune.runtime import configure_threads

    configure_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [int(s) for s in args.steps.split(",")]
    rows = []
    for model in args.models.split(","):
        calculator = make_calculator(model)
        for size, n_steps in zip(sizes, steps):
            atoms = cell(size)
            ase_times, lammps_times = [], []
            for repeat in range(args.repeats):  # alternate the order so drifting load hits both
                order = (time_ase, time_lammps) if repeat % 2 == 0 else (time_lammps, time_ase)
                for runner in order:
                    elapsed = runner(atoms, calculator, n_steps)
                    (ase_times if runner is time_ase else lammps_times).append(elapsed)
            row = {
                "model": model,
                "n_atoms": len(atoms),
                "steps": n_steps,
                "ase_atom_steps_per_second": len(atoms) * n_steps / min(ase_times),
                "lammps_atom_steps_per_second": len(atoms) * n_steps / min(lammps_times),
            }
            row["lammps_over_ase"] = row["lammps_atom_steps_per_second"] / row["ase_atom_steps_per_second"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "lammps_fix_external_vs_ase",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other sessions)",
        "threads": args.threads,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
