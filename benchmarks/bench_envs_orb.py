"""Benchmark: atomtune's batched ``OrbPotential.predict`` against a loop over ORB's own ``ORBCalculator``, in the orb
environment, on the same structures and the same checkpoint (energy, forces, stress; CPU, float32, explicit threads).

Run with the orb environment's interpreter (``atomtune env build orb`` first); the model defaults to the test suite's small
ORB (``tests/orb_tiny.py OUT`` writes ``OUT/tiny-architecture.json`` and ``OUT/tiny.ckpt``)::

    ~/.cache/atomtune/envs/orb-*/bin/python benchmarks/bench_envs_orb.py \\
        --architecture OUT/tiny-architecture.json --weights OUT/tiny.ckpt --structures 60 --batch-sizes 1,2,4,8

The calculator loop and each batch size are timed in alternating rounds so that all see the same load on a shared
machine. Results go to ``benchmarks/results/envs_orb.json``.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--structures", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "envs_orb.json"))
    arguments = parser.parse_args()

    import torch
    from mace_tiny import emt_training_structures
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig
    from orb_models.forcefield.calculator import ORBCalculator

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    structures = emt_training_structures(count=arguments.structures, seed=13)
    architecture = json.loads(Path(arguments.architecture).read_text())
    model = pretrained.orb_v3_conservative_architecture(
        **architecture["arguments"], device="cpu", system_config=SystemConfig(**architecture["system_config"])
    )
    model = pretrained.load_model(model, arguments.weights, device="cpu", precision="float32-high", compile=False)
    native = ORBCalculator(model, device="cpu")
    torch.set_default_dtype(torch.float32)
    potential = load_potential(f"orb:{arguments.architecture}@{arguments.weights}")
    batch_sizes = [int(size) for size in arguments.batch_sizes.split(",")]
    seconds = {"orb_calculator_loop": 0.0, **{f"atomtune_predict_batch_{size}": 0.0 for size in batch_sizes}}
    for _ in range(arguments.rounds):
        started = time.perf_counter()
        reference = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = native
            reference.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        seconds["orb_calculator_loop"] += time.perf_counter() - started
        for size in batch_sizes:
            started = time.perf_counter()
            predicted = potential.predict(structures, batch_size=size)
            seconds[f"atomtune_predict_batch_{size}"] += time.perf_counter() - started
    largest_energy_difference = max(abs(p["energy"] - r[0]) for p, r in zip(predicted, reference))
    result = {
        "structures": len(structures),
        "atoms_mean": float(np.mean([len(a) for a in structures])),
        "rounds": arguments.rounds,
        "default_batch_size": potential.cpu_batch_size,
        "seconds": seconds,
        "speedup": {key: seconds["orb_calculator_loop"] / value for key, value in seconds.items() if key.startswith("atomtune")},
        "largest_energy_difference_ev": largest_energy_difference,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
    }
    Path(arguments.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
