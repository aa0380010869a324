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

import sys
import warnings
from pathlib import Path

from env_benchmark import (
    alternating_rounds,
    environment_arguments,
    machine_load,
    write_and_print,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = environment_arguments(__doc__.split("\n\n")[0], None, batch_sizes="1,4,8")
    parser.add_argument("--checkpoint", required=True, help="a metatrain .ckpt with its exported .pt beside it")
    parser.add_argument("--repeat", type=int, default=1)
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
    timing = alternating_rounds(potential, native, structures, arguments.batch_sizes, arguments.rounds,
                                "metatomic_calculator_loop", calculator_first=False)
    result = {
        **timing.summary(),
        "threads": arguments.threads,
        "default_batch_size": potential.cpu_batch_size,
        "machine": machine_load(),
    }
    suffix = f"_repeat{arguments.repeat}" if arguments.repeat != 1 else ""
    write_and_print(result, arguments.out or Path(__file__).parent / "results" / f"envs_pet{suffix}.json")

if __name__ == "__main__":
    main()
