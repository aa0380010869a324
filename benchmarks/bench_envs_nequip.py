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

import sys
from pathlib import Path

from env_benchmark import (
    alternating_rounds,
    environment_arguments,
    machine_load,
    write_and_print,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = environment_arguments(__doc__.split("\n\n")[0], "envs_nequip")
    parser.add_argument("--package", required=True)
    arguments = parser.parse_args()

    from mace_tiny import emt_training_structures
    from nequip.integrations.ase import NequIPCalculator

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(arguments.threads)
    structures = emt_training_structures(count=arguments.structures, seed=13)
    potential = load_potential(f"nequip:{arguments.package}", trust=True)
    native = NequIPCalculator._from_saved_model(arguments.package)
    timing = alternating_rounds(potential, native, structures, [None], arguments.rounds, "nequip_calculator_loop",
                                calculator_first=False)
    result = {
        **timing.summary(),
        "batch_size": potential.cpu_batch_size,
        "speedup": timing.speedup()["atomtune_predict"],
        "machine": machine_load(),
    }
    write_and_print(result, arguments.out)

if __name__ == "__main__":
    main()
