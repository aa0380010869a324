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

import os
import sys
from pathlib import Path

from env_benchmark import (
    alternating_rounds,
    environment_arguments,
    machine_load,
    write_and_print,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def measure(potential, native, structures, batch_sizes, rounds) -> dict:
    timing = alternating_rounds(potential, native, structures, batch_sizes, rounds, "mattersim_calculator_loop",
                                calculator_first=False)
    # process CPU time: far less sensitive to a shared machine's load
    return {**timing.summary(), "cpu_seconds": timing.cpu_seconds, "cpu_speedup": timing.speedup(cpu=True)}


def main() -> None:
    parser = environment_arguments(__doc__.split("\n\n")[0], "envs_mattersim")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--repeat", type=int, nargs="+", default=[1], help="supercell repeats to measure (1: 4-8 atoms)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
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
        "machine": machine_load(load_before),
    }
    write_and_print(result, arguments.out)

if __name__ == "__main__":
    main()
