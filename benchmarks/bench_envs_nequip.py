"""Benchmark: atomtune's batched ``NequipPotential.predict`` against a loop over nequip's own ``NequIPCalculator``, in the
nequip environment, on the same structures and the same package (energy, forces, stress; CPU, explicit threads).

Run with the nequip environment's interpreter (``atomtune env build nequip`` first); the package defaults to the test
suite's tiny NequIP (``tests/nequip_tiny.py`` builds it)::

    ~/.cache/atomtune/envs/nequip-*/bin/python \\
        benchmarks/bench_envs_nequip.py --package PATH/tiny.nequip.zip --structures 60

The two are timed in alternating rounds so that both see the same load on a shared machine. Results go to
``benchmarks/results/envs_nequip.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--structures", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "envs_nequip.json"))
    arguments = parser.parse_args()

    from mace_tiny import emt_training_structures
    from nequip.integrations.ase import NequIPCalculator

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    structures = emt_training_structures(count=arguments.structures, seed=13)
    potential = load_potential(f"nequip:{arguments.package}", trust=True)
    native = NequIPCalculator._from_saved_model(arguments.package)
    seconds = {"atomtune_predict": 0.0, "nequip_calculator_loop": 0.0}
    for _ in range(arguments.rounds):
        started = time.perf_counter()
        predicted = potential.predict(structures)
        seconds["atomtune_predict"] += time.perf_counter() - started
        started = time.perf_counter()
        reference = []
        for atoms in structures:
            atoms = atoms.copy()
            atoms.calc = native
            reference.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
        seconds["nequip_calculator_loop"] += time.perf_counter() - started
    largest_energy_difference = max(abs(p["energy"] - r[0]) for p, r in zip(predicted, reference))
    result = {
        "structures": len(structures),
        "atoms_mean": float(np.mean([len(a) for a in structures])),
        "rounds": arguments.rounds,
        "batch_size": potential.cpu_batch_size,
        "seconds": seconds,
        "speedup": seconds["nequip_calculator_loop"] / seconds["atomtune_predict"],
        "largest_energy_difference_ev": largest_energy_difference,
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)",
    }
    Path(arguments.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
