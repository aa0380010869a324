"""Benchmark: atomtune's batched ``PetPotential.predict`` against a loop over metatomic's own ``MetatomicCalculator``, in
the pet environment, on the same structures and the same model (energy, forces, stress; CPU, explicit threads).

Run with the pet environment's interpreter (``atomtune env build pet`` first); the model defaults to nothing: give the
test suite's tiny PET (``tests/pet_tiny.py`` writes ``tiny.ckpt`` and its export ``tiny.pt`` beside it)::

    ~/.cache/atomtune/envs/pet-*/bin/python benchmarks/bench_envs_pet.py --checkpoint PATH/tiny.ckpt --structures 60

``--repeat 2`` makes each cell 2×2×2 larger (8–64 atoms instead of 1–8). The two are timed in alternating rounds so that
both see the same load on a shared machine; the adapter at each of ``--batch-sizes``. Results go to
``benchmarks/results/envs_pet.json`` (``envs_pet_repeat2.json`` with ``--repeat 2``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a metatrain .ckpt with its exported .pt beside it")
    parser.add_argument("--structures", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    from mace_tiny import emt_training_structures
    from metatomic_ase import MetatomicCalculator

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    structures = [atoms.repeat(arguments.repeat) for atoms in emt_training_structures(count=arguments.structures, seed=13)]
    potential = load_potential(f"pet:{arguments.checkpoint}", trust=True)
    native = MetatomicCalculator(str(Path(arguments.checkpoint).with_suffix(".pt")))
    batch_sizes = [int(size) for size in arguments.batch_sizes.split(",")]
    seconds = {f"atomtune_predict_batch_{size}": 0.0 for size in batch_sizes}
    seconds["metatomic_calculator_loop"] = 0.0
    for _ in range(arguments.rounds):
        for size in batch_sizes:
            started = time.perf_counter()
            predicted = potential.predict(structures, batch_size=size)
            seconds[f"atomtune_predict_batch_{size}"] += time.perf_counter() - started
        started = time.perf_counter()
        reference = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = native
            reference.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        seconds["metatomic_calculator_loop"] += time.perf_counter() - started
    largest_energy_difference = max(abs(p["energy"] - r[0]) for p, r in zip(predicted, reference))
    result = {
        "structures": len(structures),
        "atoms_mean": float(np.mean([len(a) for a in structures])),
        "rounds": arguments.rounds,
        "threads": arguments.threads,
        "default_batch_size": potential.cpu_batch_size,
        "seconds": seconds,
        "speedup": {key: seconds["metatomic_calculator_loop"] / value for key, value in seconds.items()
                    if key.startswith("atomtune")},
        "largest_energy_difference_ev": largest_energy_difference,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
    }
    suffix = f"_repeat{arguments.repeat}" if arguments.repeat != 1 else ""
    out = Path(arguments.out or Path(__file__).parent / "results" / f"envs_pet{suffix}.json")
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
