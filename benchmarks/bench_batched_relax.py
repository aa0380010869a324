"""Benchmark: batched FIRE through a Potential's forward (atomtune.tasks.batched_relax) against ASE FIRE one by one
(CPU; ``--device cuda`` on a GPU).

Both relax the same cells (fcc, bcc and rock-salt supercells of 8–32 atoms, strained ±3 %, rattled 0.05 Å, a third with
substituted elements; the generator of ``predict_benchmark.py``) with positions and cell (ASE: ``FIRE`` on
``FrechetCellFilter`` with the Potential's ASE calculator; atomtune: the same algorithm on all unconverged structures of
a pool, one ``predict`` call per step) to ``fmax`` with the same step limit. Checked: final energies per atom agree to
≤ 1 meV/atom and step counts agree. Timed: wall and CPU seconds of this process for the whole set, per side, the two
sides interleaved (``--repeats`` passes, the order alternating, best pass kept) so that load from other processes on a
shared machine hits both alike; atomtune at several pool sizes (the default pool is the backbone's ``cpu_batch_size``;
this is the measurement behind keeping it for relaxations). Results go to ``benchmarks/results/batched_relax.json``.

    python benchmarks/bench_batched_relax.py --model chgnet-0.3.0 --threads 1
    python benchmarks/bench_batched_relax.py --structures 20 --batch-sizes 1,4 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def relax_one_by_one(potential, structures, fmax: float, max_steps: int) -> tuple[float, float, list[dict]]:
    """ASE FIRE + FrechetCellFilter per structure on ``potential.calculator()``: (wall s, CPU s, outcomes)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    outcomes = []
    calculator = potential.calculator()
    start, start_cpu = time.perf_counter(), time.process_time()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
        converged = optimizer.run(fmax=fmax, steps=max_steps)
        outcomes.append({"energy": atoms.get_potential_energy(), "steps": optimizer.nsteps, "converged": converged})
    return time.perf_counter() - start, time.process_time() - start_cpu, outcomes


def relax_batched(potential, structures, fmax: float, max_steps: int, batch_size: int) -> tuple[float, float, list]:
    from atomtune.tasks.batched_relax import fire_relax

    start, start_cpu = time.perf_counter(), time.process_time()
    relaxations = fire_relax(potential, structures, fmax, max_steps, relax_cell=True, batch_size=batch_size)
    outcomes = [{"energy": r.energy, "steps": r.steps, "converged": r.converged} for r in relaxations]
    return time.perf_counter() - start, time.process_time() - start_cpu, outcomes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="chgnet-0.3.0", help="model to relax with (a name load_potential knows)")
    parser.add_argument("--structures", type=int, default=50, help="number of cells (8–32 atoms each)")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence, eV/Å")
    parser.add_argument("--max-steps", type=int, default=300, help="FIRE step limit per structure")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="pool sizes of the batched side, comma separated")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved passes per side; the best is reported")
    parser.add_argument("--device", default="cpu", help="torch device of both sides: cpu (default) or cuda")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "batched_relax.json"))
    args = parser.parse_args(argv)

    from atomtune.runtime import configure_threads

    threads = configure_threads(args.threads)
    warnings.filterwarnings("ignore")
    import torch
    from predict_benchmark import benchmark_structures, device_memory

    from atomtune.models import load_potential

    potential = load_potential(args.model, device=args.device)
    structures = benchmark_structures(args.structures)
    n_atoms = np.array([len(atoms) for atoms in structures])
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(f"{potential.name}, torch {torch.__version__}, {threads} thread(s), device {args.device}")
    print(f"FIRE with FrechetCellFilter-equivalent cell DOF to fmax {args.fmax} eV/Å, ≤ {args.max_steps} steps")
    print(f"{len(structures)} structures, {n_atoms.min()}–{n_atoms.max()} atoms (mean {n_atoms.mean():.1f})")

    relax_one_by_one(potential, structures[:1], args.fmax, 3)  # warm-up
    relax_batched(potential, structures[:2], args.fmax, 3, 2)

    wall: dict[str, list[float]] = {"ase": [], **{f"batched_{size}": [] for size in batch_sizes}}
    cpu: dict[str, list[float]] = {key: [] for key in wall}
    outcomes: dict[str, list[dict]] = {}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        sides = ["ase", *batch_sizes] if repeat % 2 == 0 else [*batch_sizes, "ase"]
        for side in sides:
            if side == "ase":
                key = "ase"
                seconds, cpu_seconds, outcome = relax_one_by_one(potential, structures, args.fmax, args.max_steps)
            else:
                key = f"batched_{side}"
                seconds, cpu_seconds, outcome = relax_batched(potential, structures, args.fmax, args.max_steps, side)
            wall[key].append(seconds)
            cpu[key].append(cpu_seconds)
            outcomes[key] = outcome
            steps = sum(o["steps"] for o in outcome)
            print(
                f"  pass {repeat + 1}: {key:<11} {seconds:7.1f} s wall, {cpu_seconds:7.1f} s CPU, {steps} steps, "
                f"{sum(o['converged'] for o in outcome)}/{len(outcome)} converged",
                flush=True,
            )
    load_after = os.getloadavg()

    reference = outcomes["ase"]
    agreement = {}
    for key, outcome in outcomes.items():
        if key == "ase":
            continue
        energy_differences = np.array(
            [abs(a["energy"] - b["energy"]) / n * 1000 for a, b, n in zip(outcome, reference, n_atoms)]
        )
        step_differences = np.array([a["steps"] - b["steps"] for a, b in zip(outcome, reference)])
        agreement[key] = {
            "max_energy_difference_mev_per_atom": float(energy_differences.max()),
            "structures_within_1_mev_per_atom": int((energy_differences <= 1.0).sum()),
            "structures_with_equal_steps": int((step_differences == 0).sum()),
            "max_abs_step_difference": int(np.abs(step_differences).max()),
            "total_steps": int(sum(o["steps"] for o in outcome)),
            "converged": int(sum(o["converged"] for o in outcome)),
        }
    best_wall = {key: min(values) for key, values in wall.items()}
    best_cpu = {key: min(values) for key, values in cpu.items()}
    speedup_wall = {key: best_wall["ase"] / value for key, value in best_wall.items() if key != "ase"}
    speedup_cpu = {key: best_cpu["ase"] / value for key, value in best_cpu.items() if key != "ase"}
    for key in agreement:
        print(
            f"{key:<11}: {speedup_wall[key]:.2f}x wall, {speedup_cpu[key]:.2f}x CPU vs ASE one by one; "
            f"max |ΔE| {agreement[key]['max_energy_difference_mev_per_atom']:.3g} meV/atom, "
            f"equal steps {agreement[key]['structures_with_equal_steps']}/{len(structures)} "
            f"(max |Δsteps| {agreement[key]['max_abs_step_difference']})"
        )

    result = {
        "benchmark": "batched_relax",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": potential.name,
        "degrees_of_freedom": "positions + cell (FrechetCellFilter-equivalent, exp_cell_factor = n_atoms)",
        "optimizer": "FIRE (ASE defaults)",
        "fmax_ev_per_a": args.fmax,
        "max_steps": args.max_steps,
        "torch_version": torch.__version__,
        "device": args.device,
        **device_memory(args.device),
        "threads": threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "load_average_before_after": [load_before[0], load_after[0]],
        "structures": len(structures),
        "atoms_per_structure": {"min": int(n_atoms.min()), "max": int(n_atoms.max()), "mean": float(n_atoms.mean())},
        "repeats": args.repeats,
        "ase_total_steps": int(sum(o["steps"] for o in reference)),
        "ase_converged": int(sum(o["converged"] for o in reference)),
        "seconds_per_pass": wall,
        "cpu_seconds_per_pass": cpu,
        "speedup_wall": speedup_wall,
        "speedup_cpu": speedup_cpu,
        "agreement_with_ase": agreement,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
