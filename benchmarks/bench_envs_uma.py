"""Benchmark: atomtune's batched ``UmaPotential.predict`` against a loop over fairchem's own ``FAIRChemCalculator``, in the
uma environment, on the same structures and the same checkpoint (energy, forces, stress; CPU, float32, explicit threads).

Run with the uma environment's interpreter (``atomtune env build uma`` first); the checkpoint defaults to nothing: give
the test suite's tiny UMA (``tests/uma_tiny.py OUT`` writes ``OUT/tiny-uma.pt``) or any fairchem inference checkpoint::

    ~/.cache/atomtune/envs/uma-*/bin/python benchmarks/bench_envs_uma.py --checkpoint OUT/tiny-uma.pt \\
        --structures 60 --batch-sizes 1,2,4,8

The calculator runs fairchem's ``"batch"`` inference settings (experts not merged, not compiled, activation
checkpointing on): the mode fairchem documents for heterogeneous structures (its default first merges the experts for one
composition and compiles, ~115 s on this machine's tiny model, and falls back when the composition changes);
``--calculator-settings atomtune`` gives it the adapter's own settings instead (the same without activation
checkpointing), to separate batching from that setting. The calculator loop and each batch size are timed in alternating rounds so that all
see the same load on a shared machine. Results go to ``benchmarks/results/envs_uma.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from env_benchmark import (
    alternating_rounds,
    environment_arguments,
    machine_load,
    write_and_print,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = environment_arguments(__doc__.split("\n\n")[0], "envs_uma", batch_sizes="1,2,4,8")
    parser.add_argument("--checkpoint", required=True,
                        help="a fairchem inference checkpoint (.pt); with --random-uma-s-size, where to write one")
    parser.add_argument("--random-uma-s-size", action="store_true",
                        help="write a RANDOM-weight UMA at UMA-S's size (128 channels, 4 layers, 32 experts) first")
    parser.add_argument("--task", default="omat")
    parser.add_argument("--supercell", type=int, default=1, help="repeat each test cell n×n×n (larger cells)")
    parser.add_argument("--calculator-settings", choices=("batch", "atomtune"), default="batch",
                        help="fairchem's 'batch' preset, or the adapter's own settings (no activation checkpointing)")
    arguments = parser.parse_args()

    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit
    from mace_tiny import emt_training_structures

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    logging.disable(logging.WARNING)  # fairchem warns on every structure it fills charge / spin in for
    if arguments.random_uma_s_size:
        write_random_uma_s_size(Path(arguments.checkpoint))
    configure_threads(arguments.threads)
    structures = emt_training_structures(count=arguments.structures, seed=13)
    if arguments.supercell > 1:
        structures = [atoms.repeat(arguments.supercell) for atoms in structures]
    from atomtune.models.uma import inference_settings

    settings = "batch" if arguments.calculator_settings == "batch" else inference_settings()
    native = FAIRChemCalculator(
        load_predict_unit(arguments.checkpoint, inference_settings=settings, device="cpu"), task_name=arguments.task
    )
    potential = load_potential(f"uma:{arguments.checkpoint}:{arguments.task}", trust=True)
    timing = alternating_rounds(potential, native, structures, arguments.batch_sizes, arguments.rounds,
                                "fairchem_calculator_loop", calculator_first=True)
    predicted, reference = timing.predicted, timing.reference
    result = {
        "checkpoint": arguments.checkpoint,
        **timing.summary(),
        # process CPU time: far less sensitive to a shared machine's load than wall time
        "cpu_seconds": timing.cpu_seconds,
        "cpu_speedup": timing.speedup(cpu=True),
        "threads": arguments.threads,
        "calculator_settings": arguments.calculator_settings,
        "default_batch_size": potential.cpu_batch_size,
        "largest_energy_difference_ev_per_atom": max(
            abs(p["energy"] - r[0]) / len(a) for p, r, a in zip(predicted, reference, structures)
        ),
        "largest_force_difference_ev_per_a": max(
            float(np.abs(p["forces"] - r[1]).max()) for p, r in zip(predicted, reference)
        ),
        "machine": machine_load(),
    }
    write_and_print(result, arguments.out)


def write_random_uma_s_size(path: Path) -> None:
    """fairchem's initialisation (no training) of the tiny test model's layout at UMA-S's size: sphere, hidden and edge
    channels 128, 64 distance basis functions, 4 layers, 32 experts. Its numbers mean nothing; only its cost does."""
    import copy

    import hydra
    import torch
    from uma_tiny import MODEL_CONFIG, tasks_config, write_checkpoint

    config = copy.deepcopy(MODEL_CONFIG)
    config["backbone"].update(sphere_channels=128, hidden_channels=128, edge_channels=128, num_distance_basis=64,
                              num_layers=4, num_experts=32)
    tasks = tasks_config(np.zeros(100), rmsd=1.0)
    model = hydra.utils.instantiate(config)
    averaged = torch.optim.swa_utils.AveragedModel(model)
    model.setup_tasks(tasks)
    write_checkpoint(model, averaged, config, tasks, path)


if __name__ == "__main__":
    main()
