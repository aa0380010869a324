"""What the predict benchmarks share: atomtune's batched ``Potential.predict`` against a backbone's own ASE calculator
in a loop, on the same cells of 8–32 atoms, timed in wall and CPU seconds, written as one JSON result.

``bench_predict_<backbone>.py`` keeps only what is its backbone's own (how to load the model and its calculator, extra
sides such as SevenNet's e3nn convolution, the result fields it reports); ``bench_batched_relax.py`` reuses the cells.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: (prototype, host element(s), lattice constant a Å, substituents for the multi-element cells): the default set, fcc,
#: bcc and rock-salt cells that every backbone knows (CHGNet's benchmark and the batched-relaxation benchmark use it).
PROTOTYPES = [
    ("fcc", "Cu", 3.61, ("Ni", "Al")),
    ("fcc", "Al", 4.05, ("Mg", "Cu")),
    ("bcc", "Fe", 2.87, ("Cr", "Mn")),
    ("bcc", "Mo", 3.15, ("W", "Nb")),
    ("rocksalt", "NaCl", 5.64, ("K", "Br")),
    ("rocksalt", "MgO", 4.21, ("Ni", "Ca")),
]
#: supercells of the conventional cells (fcc 4, bcc 2, hcp 2, rock-salt 8, diamond 8 atoms) that give 8–32 atoms
REPEATS = {
    "fcc": [(2, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)],
    "bcc": [(2, 2, 1), (3, 2, 1), (2, 2, 2), (3, 2, 2), (4, 2, 2)],
    "hcp": [(2, 2, 1), (2, 2, 2), (3, 2, 2), (4, 2, 2), (3, 3, 1)],
    "rocksalt": [(1, 1, 1), (2, 1, 1), (3, 1, 1), (2, 2, 1)],
    "diamond": [(1, 1, 1), (2, 1, 1), (3, 1, 1), (2, 2, 1)],
}
#: c/a of the hcp cells (ideal 1.633 would do as well; 1.587 is Ti's)
HCP_C_OVER_A = 1.587


def benchmark_structures(count: int, seed: int = 0, prototypes=PROTOTYPES):
    """``count`` strained, rattled cells of 8–32 atoms, cycling through ``prototypes``; every third one has ~30 % of its
    sites substituted. Strain: symmetric, up to ±3 %; rattle: 0.05 Å. ``atoms.info["id"]`` = ``"<prototype>-<k>"``."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        prototype, host, lattice_constant, substituents = prototypes[k % len(prototypes)]
        repeats = REPEATS[prototype]
        if prototype == "hcp":
            unit = bulk(host, "hcp", a=lattice_constant, c=HCP_C_OVER_A * lattice_constant)  # non-orthogonal cell
        else:
            unit = bulk(host, prototype, a=lattice_constant, cubic=True)
        atoms = unit.repeat(repeats[rng.integers(len(repeats))])
        if k % 3 == 0:
            symbols = [
                substituents[rng.integers(2)] if rng.random() < 0.3 else symbol
                for symbol in atoms.get_chemical_symbols()
            ]
            atoms.set_chemical_symbols(symbols)
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.info["id"] = f"{prototype}-{k}"
        structures.append(atoms)
    return structures


def batch_size_list(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]`` (the ``--batch-sizes`` option)."""
    return [int(size) for size in text.split(",")]


def predict_arguments(
    description: str, result_name: str, batch_sizes: str, repeats: int = 3, repeats_help: str | None = None
) -> argparse.ArgumentParser:
    """The options every predict benchmark takes: ``--structures``, ``--threads``, ``--batch-sizes`` (parsed to a list
    of ints), ``--repeats``, ``--device`` and ``--out`` (default ``benchmarks/results/<result_name>.json``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=100, help="number of cells (8–32 atoms each)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--batch-sizes", type=batch_size_list, default=batch_sizes, help="atomtune batch sizes to time, comma separated"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=repeats_help or "interleaved passes per side; the best is reported",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device of both sides: cpu (default) or cuda (benchmarks/gpu.sh)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"{result_name}.json"))
    return parser


def device_memory(device: str) -> dict:
    """On a GPU, the peak memory torch allocated on it in this process (MiB, every side together); ``{}`` on CPU."""
    import torch

    if not str(device).startswith("cuda"):
        return {}
    return {"peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2**20, "gpu": torch.cuda.get_device_name()}


class Clock:
    """Wall and process-CPU seconds of a block (on a shared machine, CPU time is the steadier of the two at 1
    thread)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def calculator_loop(calculator, structures) -> list[tuple]:
    """The backbone's own ASE calculator in a loop, as ASE users call it: [(energy eV, forces eV/Å, stress 3×3
    eV/Å³)]."""
    results = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        results.append((energy, forces, stress))
    return results


def atomtune_predict(potential, structures, batch_size: int, stress: bool = True) -> list[tuple]:
    """atomtune's batched ``predict``: [(energy eV, forces eV/Å, stress 3×3 eV/Å³ or None without ``stress``)]."""
    records = potential.predict(structures, batch_size=batch_size, forces=True, stress=stress)
    return [(record["energy"], record["forces"], record.get("stress")) for record in records]


@dataclass
class Passes:
    """Wall and CPU seconds of every pass of every side, the results of each side's last pass, and the 1-minute load
    average of the machine before and after."""

    count: int
    seconds: dict = field(default_factory=dict)
    cpu_seconds: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    load_before_after: list = field(default_factory=list)

    def rates(self) -> dict:
        """Structures per second of each side's best pass."""
        return {side: self.count / min(values) for side, values in self.seconds.items()}

    def cpu_rates(self) -> dict:
        """Structures per CPU-second of each side's best pass."""
        return {side: self.count / min(values) for side, values in self.cpu_seconds.items()}


def interleaved_passes(sides: dict, repeats: int, count: int) -> Passes:
    """Run every side ``repeats`` times, interleaved, the order reversed on every other pass, so that load from other
    processes on a shared machine hits all sides alike. ``sides``: key → (label, run), ``run()`` → results of one pass
    over the ``count`` structures."""
    # Wall-clock time is what users see; CPU time of this process is less disturbed by other processes on a shared
    # machine (with one thread it is the better measure of the work each side does). Both are recorded.
    keys = list(sides)
    width = max(len(label) for label, _ in sides.values())
    passes = Passes(count, {key: [] for key in keys}, {key: [] for key in keys})
    load_before = os.getloadavg()
    for repeat in range(repeats):
        for key in keys if repeat % 2 == 0 else keys[::-1]:
            label, run = sides[key]
            with Clock() as clock:
                passes.results[key] = run()
            passes.seconds[key].append(clock.wall)
            passes.cpu_seconds[key].append(clock.cpu)
            print(
                f"  pass {repeat + 1}: {label:<{width}} {count / clock.wall:7.2f} structures/s "
                f"({count / clock.cpu:7.2f} per CPU-second)",
                flush=True,
            )
    passes.load_before_after = [load_before[0], os.getloadavg()[0]]
    return passes


def max_differences(results, reference, n_atoms) -> dict:
    """Largest |Δ| between two sides' [(energy, forces, stress)]: energy per atom (eV/atom), force component (eV/Å),
    stress component (eV/Å³)."""
    pairs = list(zip(results, reference, strict=True))
    return {
        "energy_ev_per_atom": max(float(abs(a[0] - b[0])) / n for (a, b), n in zip(pairs, n_atoms)),
        "forces_ev_per_a": max(float(np.abs(a[1] - b[1]).max()) for a, b in pairs),
        "stress_ev_per_a3": max(float(np.abs(a[2] - b[2]).max()) for a, b in pairs),
    }


def run_conditions(threads: int, structures, repeats: int, load_before_after: list, device: str = "cpu") -> dict:
    """The result fields that say how a run was made: device, threads, machine, load, the cells, the repeats."""
    n_atoms = [len(atoms) for atoms in structures]
    return {
        "device": device,
        **device_memory(device),
        "threads": threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "load_average_before_after": load_before_after,
        "structures": len(structures),
        "atoms_per_structure": {"min": min(n_atoms), "max": max(n_atoms), "mean": float(np.mean(n_atoms))},
        "repeats": repeats,
    }


def utc_now() -> str:
    """The result's ``date``: now, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_result(result: dict, out: str | Path) -> None:
    """Write ``result`` as indented JSON to ``out`` (folders created) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
