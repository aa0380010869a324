"""Benchmark: atomtune's batched ``MattersimPotential.predict`` against a loop over mattersim's own ``MatterSimCalculator``,
in the mattersim environment, on the same structures and the same checkpoint (energy, forces, stress; CPU, explicit
threads).

Run with the mattersim environment's interpreter (``atomtune env build mattersim`` first); the checkpoint defaults to
nothing: give the test suite's tiny MatterSim (``tests/mattersim_tiny.py`` builds it) or a public checkpoint file::

    ~/.cache/atomtune/envs/mattersim-*/bin/python \\
        benchmarks/bench_envs_mattersim.py --checkpoint PATH/tiny-mattersim.pth --structures 60 --repeat 1 2

``--repeat 2`` makes each cell a 2×2×2 supercell (32-64 atoms). Each batch size in ``--batch-sizes`` and the calculator
loop are timed in alternating rounds so that all see the same load on a shared machine. Results go to
``benchmarks/results/envs_mattersim.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def measure(potential, native, structures, batch_sizes, rounds) -> dict:
    seconds = {f"atomtune_predict_batch_{size}": 0.0 for size in batch_sizes}
    seconds["mattersim_calculator_loop"] = 0.0
    cpu_seconds = dict.fromkeys(seconds, 0.0)  # process CPU time: far less sensitive to a shared machine's load
    energy_difference = 0.0
    for _ in range(rounds):
        for size in batch_sizes:
            started, cpu_started = time.perf_counter(), time.process_time()
            predicted = potential.predict(structures, batch_size=size)
            seconds[f"atomtune_predict_batch_{size}"] += time.perf_counter() - started
            cpu_seconds[f"atomtune_predict_batch_{size}"] += time.process_time() - cpu_started
        started, cpu_started = time.perf_counter(), time.process_time()
        reference = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = native
            reference.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        seconds["mattersim_calculator_loop"] += time.perf_counter() - started
        cpu_seconds["mattersim_calculator_loop"] += time.process_time() - cpu_started
        energy_difference = max(energy_difference, *(float(abs(p["energy"] - r[0])) for p, r in zip(predicted, reference)))
    loop, cpu_loop = seconds["mattersim_calculator_loop"], cpu_seconds["mattersim_calculator_loop"]
    return {
        "structures": len(structures),
        "atoms_mean": float(np.mean([len(a) for a in structures])),
        "rounds": rounds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "speedup": {size: loop / seconds[f"atomtune_predict_batch_{size}"] for size in batch_sizes},
        "cpu_speedup": {size: cpu_loop / cpu_seconds[f"atomtune_predict_batch_{size}"] for size in batch_sizes},
        "largest_energy_difference_ev": energy_difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--structures", type=int, default=60)
    parser.add_argument("--repeat", type=int, nargs="+", default=[1], help="supercell repeats to measure (1: 4-8 atoms)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "envs_mattersim.json"))
    arguments = parser.parse_args()

    from mace_tiny import emt_training_structures
    from mattersim.forcefield import MatterSimCalculator

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    load_before = os.getloadavg()[0]
    potential = load_potential(f"mattersim:{arguments.checkpoint}")
    native = MatterSimCalculator.from_checkpoint(arguments.checkpoint, device="cpu")
    results = {}
    for repeat in arguments.repeat:
        structures = [atoms.repeat(repeat) for atoms in emt_training_structures(count=arguments.structures, seed=13)]
        results[f"repeat_{repeat}"] = measure(potential, native, structures, arguments.batch_sizes, arguments.rounds)
    result = {
        "checkpoint": arguments.checkpoint,
        "threads": arguments.threads,
        "results": results,
        "machine": f"{os.cpu_count()} cores, load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end "
                   f"(shared)",
    }
    Path(arguments.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
