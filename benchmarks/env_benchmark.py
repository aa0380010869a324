"""What the family-environment benchmarks share (``bench_envs_<family>.py``, each run with its family environment's
interpreter): atomtune's batched ``Potential.predict`` at each batch size against a loop over the family's own ASE
calculator, on the same structures, timed in alternating rounds so that every side sees the same load on a shared
machine; wall and process-CPU seconds are summed over the rounds.

Each script keeps what is its family's own: loading the model and the calculator, the cells, extra result fields. The
calculator loop and the timer are ``predict_benchmark.py``'s (whose own benchmarks take the best of interleaved passes
instead of sums over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from predict_benchmark import Clock, batch_size_list, calculator_loop, write_result


def environment_arguments(description: str, result_name: str | None, batch_sizes: str | None = None):
    """The options every family-environment benchmark takes: ``--structures``, ``--rounds``, ``--threads``, ``--out``
    (default ``benchmarks/results/<result_name>.json``; None: no default) and, with ``batch_sizes``, ``--batch-sizes``
    (comma separated, parsed to a list of ints)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--structures", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    if batch_sizes is not None:
        parser.add_argument("--batch-sizes", type=batch_size_list, default=batch_sizes)
    default_out = None if result_name is None else str(Path(__file__).parent / "results" / f"{result_name}.json")
    parser.add_argument("--out", default=default_out)
    return parser


def predict_side(batch_size: int | None) -> str:
    """The result key of atomtune's predict at ``batch_size`` (None: the potential's own default batch size)."""
    return "atomtune_predict" if batch_size is None else f"atomtune_predict_batch_{batch_size}"


@dataclass
class AlternatingRounds:
    """Seconds of each side summed over the rounds (wall and process CPU), in the order the sides ran within a round;
    the last round's records of the last batch size (``predicted``) and of the calculator (``reference``: energy,
    forces, 3×3 stress); the largest energy difference between those two over all rounds."""

    structures: list
    rounds: int
    calculator: str
    seconds: dict
    cpu_seconds: dict
    predicted: list
    reference: list
    largest_energy_difference_ev: float

    def speedup(self, cpu: bool = False) -> dict:
        """Calculator-loop time over each batch size's time (wall, or CPU with ``cpu``)."""
        times = self.cpu_seconds if cpu else self.seconds
        return {side: times[self.calculator] / value for side, value in times.items() if side != self.calculator}

    def summary(self) -> dict:
        """The result fields every family-environment benchmark reports."""
        return {
            "structures": len(self.structures),
            "atoms_mean": float(np.mean([len(atoms) for atoms in self.structures])),
            "rounds": self.rounds,
            "seconds": self.seconds,
            "speedup": self.speedup(),
            "largest_energy_difference_ev": self.largest_energy_difference_ev,
        }


def alternating_rounds(potential, calculator, structures, batch_sizes, rounds: int, calculator_side: str,
                       calculator_first: bool) -> AlternatingRounds:
    """``rounds`` rounds of: the calculator loop (key ``calculator_side``) and ``potential.predict`` at each of
    ``batch_sizes`` (None: its default), the calculator before or after the batch sizes."""
    sides = [predict_side(size) for size in batch_sizes]
    sides = [calculator_side, *sides] if calculator_first else [*sides, calculator_side]
    sizes = dict(zip(map(predict_side, batch_sizes), batch_sizes))
    seconds, cpu_seconds = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0.0)
    predicted, reference, energy_difference = [], [], 0.0
    for _ in range(rounds):
        for side in sides:
            with Clock() as clock:
                if side == calculator_side:
                    reference = calculator_loop(calculator, structures)
                else:
                    predicted = potential.predict(structures, batch_size=sizes[side])
            seconds[side] += clock.wall
            cpu_seconds[side] += clock.cpu
        differences = [float(abs(p["energy"] - r[0])) for p, r in zip(predicted, reference)]
        energy_difference = max(energy_difference, *differences)
    return AlternatingRounds(list(structures), rounds, calculator_side, seconds, cpu_seconds, predicted, reference,
                             energy_difference)


def machine_load(load_before: float | None = None) -> str:
    """The machine and its 1-minute load average now (and at the start, given ``load_before``)."""
    if load_before is None:
        return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared)"
    return f"{os.cpu_count()} cores, load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared)"


def write_and_print(result: dict, out: str | Path) -> None:
    """Write ``result`` as JSON to ``out`` and print it."""
    write_result(result, out)
    print(json.dumps(result, indent=2))
