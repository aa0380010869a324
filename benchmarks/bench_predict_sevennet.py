"""Benchmark: atomtune's ``SevennetPotential.predict`` against a loop over SevenNet's own ``SevenNetCalculator`` (CPU).

Both compute energy, forces and stress of the same structures (fcc, bcc, hcp, rock-salt and diamond supercells of 8–32
atoms, strained, rattled, a third of them with substituted elements) with the same SevenNet checkpoint in float32 and an
explicit torch thread count. The sides run interleaved, ``--repeats`` times (the order alternates), and the best pass of
each is reported, so that load from other processes on a shared machine hits all alike. atomtune is timed at several
batch sizes (that is how ``SevennetPotential.cpu_batch_size`` was chosen) and, at batch size 1, also with sevenn's own
e3nn convolution (``fast_convolution=False``) to show where the difference comes from. The largest energy, force and
stress differences from the native calculator are recorded as a check. Results go to
``benchmarks/results/predict_sevennet.json``.

    python benchmarks/bench_predict_sevennet.py --threads 1
    python benchmarks/bench_predict_sevennet.py --structures 40 --repeats 5 --batch-sizes 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: (prototype, host, lattice constant a Å, substituents for the multi-element cells)
PROTOTYPES = [
    ("fcc", "Cu", 3.61, ("Ni", "Al")),
    ("bcc", "Fe", 2.87, ("Cr", "Mn")),
    ("hcp", "Ti", 2.95, ("Zr", "Al")),
    ("rocksalt", "NaCl", 5.64, ("K", "Br")),
    ("diamond", "Si", 5.43, ("Ge", "C")),
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


def benchmark_structures(count: int, seed: int = 0):
    """``count`` strained, rattled cells of 8–32 atoms; every third one has ~30 % of its sites substituted."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        prototype, host, lattice_constant, substituents = PROTOTYPES[k % len(PROTOTYPES)]
        repeats = REPEATS[prototype]
        if prototype == "hcp":
            unit = bulk(host, "hcp", a=lattice_constant, c=1.587 * lattice_constant)  # non-orthogonal cell
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


def run_native(calculator, structures) -> tuple[float, float, list[tuple]]:
    """SevenNet's calculator in a loop, as ASE users call it: (wall s, CPU s, [(energy, forces, stress 3×3)])."""
    results = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        results.append((energy, forces, stress))
    return time.perf_counter() - start, time.process_time() - start_cpu, results


def run_atomtune(potential, structures, batch_size: int) -> tuple[float, float, list[tuple]]:
    start, start_cpu = time.perf_counter(), time.process_time()
    records = potential.predict(structures, batch_size=batch_size, forces=True, stress=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, [(record["energy"], record["forces"], record["stress"]) for record in records]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="7net-0", help="SevenNet checkpoint: 7net-0 (default), 7net-l3i5")
    parser.add_argument("--structures", type=int, default=100, help="number of cells (8–32 atoms each)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-sizes", default="1,2,4", help="atomtune batch sizes to time, comma separated")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes per side; the best is reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict_sevennet.json"))
    args = parser.parse_args(argv)

    from atomtune.runtime import configure_threads

    threads = configure_threads(args.threads)
    warnings.filterwarnings("ignore")  # sevenn warns on every calculator that no GPU tensor-product accelerator is on
    import sevenn
    import torch
    from sevenn.calculator import SevenNetCalculator

    from atomtune.models.sevennet import SevennetPotential

    structures = benchmark_structures(args.structures)
    n_atoms = [len(atoms) for atoms in structures]
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    potential = SevennetPotential.from_checkpoint(args.checkpoint)
    e3nn_potential = SevennetPotential.from_checkpoint(args.checkpoint)
    e3nn_potential.fast_convolution = False
    calculator = SevenNetCalculator(args.checkpoint, device="cpu")
    print(f"SevenNet {args.checkpoint} (sevenn {sevenn.__version__}), torch {torch.__version__}, threads {threads}")
    print(f"{len(structures)} structures, {min(n_atoms)}–{max(n_atoms)} atoms (mean {np.mean(n_atoms):.1f})")

    # Warm-up: e3nn's TorchScript-compiled tensor products specialise on their first calls.
    for _ in range(2):
        run_native(calculator, structures[:4])
        run_atomtune(e3nn_potential, structures[:4], 1)
        for batch_size in batch_sizes:
            run_atomtune(potential, structures[:4], batch_size)

    # Wall-clock time is what users see; CPU time of this process is less disturbed by other processes on a shared
    # machine (with one thread it is the better measure of the work each side does). Both are reported.
    sides = ["native", "e3nn", *batch_sizes]
    seconds: dict = {side: [] for side in sides}
    cpu_seconds: dict = {side: [] for side in sides}
    results: dict = {}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            if side == "native":
                wall, cpu, results[side] = run_native(calculator, structures)
                label = "native SevenNetCalculator"
            elif side == "e3nn":
                wall, cpu, results[side] = run_atomtune(e3nn_potential, structures, 1)
                label = "atomtune e3nn conv, batch 1"
            else:
                wall, cpu, results[side] = run_atomtune(potential, structures, side)
                label = f"atomtune batch {side}"
            seconds[side].append(wall)
            cpu_seconds[side].append(cpu)
            print(
                f"  pass {repeat + 1}: {label:<28} {len(structures) / wall:7.2f} structures/s "
                f"({len(structures) / cpu:7.2f} per CPU-second)",
                flush=True,
            )
    load_after = os.getloadavg()

    rate = {side: len(structures) / min(values) for side, values in seconds.items()}
    cpu_rate = {side: len(structures) / min(values) for side, values in cpu_seconds.items()}
    default_size = SevennetPotential.cpu_batch_size
    differences = {}
    for side in ["e3nn", *batch_sizes]:
        pairs = list(zip(results[side], results["native"], strict=True))
        differences[str(side)] = {
            "energy_ev_per_atom": max(float(abs(a[0] - b[0])) / n for (a, b), n in zip(pairs, n_atoms)),
            "forces_ev_per_a": max(float(np.abs(a[1] - b[1]).max()) for a, b in pairs),
            "stress_ev_per_a3": max(float(np.abs(a[2] - b[2]).max()) for a, b in pairs),
        }

    print(
        f"native SevenNetCalculator loop: {rate['native']:.2f} structures/s "
        f"({cpu_rate['native']:.2f} per CPU-second)"
    )
    print(
        f"atomtune predict, e3nn conv, batch 1: {rate['e3nn']:.2f} structures/s = {rate['e3nn'] / rate['native']:.2f}x "
        f"native (CPU time: {cpu_rate['e3nn'] / cpu_rate['native']:.2f}x)"
    )
    for size in batch_sizes:
        marker = "  (cpu_batch_size)" if size == default_size else ""
        print(
            f"atomtune predict, batch {size:>2}: {rate[size]:.2f} structures/s = {rate[size] / rate['native']:.2f}x "
            f"native (CPU time: {cpu_rate[size] / cpu_rate['native']:.2f}x){marker}"
        )
    at_default = differences[str(default_size if default_size in batch_sizes else batch_sizes[0])]
    print(
        f"max |ΔE| {at_default['energy_ev_per_atom']:.2e} eV/atom, max |ΔF| {at_default['forces_ev_per_a']:.2e} eV/Å, "
        f"max |Δσ| {at_default['stress_ev_per_a3']:.2e} eV/Å³"
    )

    default_key = default_size if default_size in batch_sizes else max(batch_sizes, key=rate.get)
    result = {
        "benchmark": "predict_sevennet",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": args.checkpoint,
        "sevenn_version": sevenn.__version__,
        "torch_version": torch.__version__,
        "device": "cpu",
        "threads": threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "load_average_before_after": [load_before[0], load_after[0]],
        "structures": len(structures),
        "atoms_per_structure": {"min": min(n_atoms), "max": max(n_atoms), "mean": float(np.mean(n_atoms))},
        "repeats": args.repeats,
        "native_structures_per_s": rate["native"],
        "atomtune_structures_per_s": {str(size): rate[size] for size in batch_sizes},
        "atomtune_e3nn_convolution_structures_per_s": rate["e3nn"],
        "cpu_batch_size": default_size,
        "speedup_at_cpu_batch_size": rate[default_key] / rate["native"],
        "native_structures_per_cpu_s": cpu_rate["native"],
        "atomtune_structures_per_cpu_s": {str(size): cpu_rate[size] for size in batch_sizes},
        "atomtune_e3nn_convolution_structures_per_cpu_s": cpu_rate["e3nn"],
        "cpu_time_speedup_at_cpu_batch_size": cpu_rate[default_key] / cpu_rate["native"],
        "seconds_per_pass": {str(side): values for side, values in seconds.items()},
        "cpu_seconds_per_pass": {str(side): values for side, values in cpu_seconds.items()},
        "max_difference_from_native": differences,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
