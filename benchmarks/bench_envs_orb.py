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

import json
import sys
from pathlib import Path

from env_benchmark import (
    alternating_rounds,
    environment_arguments,
    machine_load,
    write_and_print,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))


def main() -> None:
    parser = environment_arguments(__doc__.split("\n\n")[0], "envs_orb", batch_sizes="1,2,4,8")
    parser.add_argument("--architecture", required=True)
    parser.add_argument("--weights", required=True)
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
    timing = alternating_rounds(potential, native, structures, arguments.batch_sizes, arguments.rounds,
                                "orb_calculator_loop", calculator_first=True)
    result = {**timing.summary(), "default_batch_size": potential.cpu_batch_size, "machine": machine_load()}
    write_and_print(result, arguments.out)

if __name__ == "__main__":
    main()
