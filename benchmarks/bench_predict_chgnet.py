"""Benchmark: atomtune's ``ChgnetPotential.predict`` against a loop over CHGNet's own ``CHGNetCalculator`` (CPU).

Both compute energy, forces and stress of the same structures (fcc, bcc and rock-salt supercells of 8–32 atoms, strained,
rattled, a third of them with substituted elements) with the same CHGNet checkpoint in float32 and an explicit torch
thread count. The two sides run interleaved, ``--repeats`` times (the order alternates), and the best pass of each is
reported, so that load from other processes on a shared machine hits both alike. atomtune is timed at several batch sizes
(that is how ``ChgnetPotential.cpu_batch_size`` was chosen). The largest energy and force differences between the two
sides are recorded as a check. Results go to ``benchmarks/results/predict_chgnet.json``.

    python benchmarks/bench_predict_chgnet.py --threads 1
    python benchmarks/bench_predict_chgnet.py --structures 40 --repeats 5 --batch-sizes 1,2,4
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

#: (prototype, host element(s), lattice constant Å, substituents for the multi-element cells)
PROTOTYPES = [
    ("fcc", "Cu", 3.61, ("Ni", "Al")),
    ("fcc", "Al", 4.05, ("Mg", "Cu")),
    ("bcc", "Fe", 2.87, ("Cr", "Mn")),
    ("bcc", "Mo", 3.15, ("W", "Nb")),
    ("rocksalt", "NaCl", 5.64, ("K", "Br")),
    ("rocksalt", "MgO", 4.21, ("Ni", "Ca")),
]
#: supercells of the conventional cells (fcc 4, bcc 2, rock-salt 8 atoms) that give 8–32 atoms
REPEATS = {
    "fcc": [(2, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)],
    "bcc": [(2, 2, 1), (3, 2, 1), (2, 2, 2), (3, 2, 2), (4, 2, 2)],
    "rocksalt": [(1, 1, 1), (2, 1, 1), (3, 1, 1), (2, 2, 1)],
}


def benchmark_structures(count: int, seed: int = 0):
    """``count`` strained, rattled cells of 8–32 atoms; every third one has ~30 % of its sites substituted."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        prototype, host, lattice_constant, substituents = PROTOTYPES[k % len(PROTOTYPES)]
        repeats = REPEATS[prototype]
        atoms = bulk(host, prototype, a=lattice_constant, cubic=True).repeat(repeats[rng.integers(len(repeats))])
        if k % 3 == 0:
            symbols = [
                substituents[rng.integers(2)] if rng.random() < 0.3 else symbol for symbol in atoms.get_chemical_symbols()
            ]
            atoms.set_chemical_symbols(symbols)
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.info["id"] = f"{prototype}-{k}"
        structures.append(atoms)
    return structures


def run_native(calculator, structures) -> tuple[float, float, list[tuple[float, np.ndarray]]]:
    """CHGNet's calculator in a loop, as ASE users call it: (wall s, CPU s, [(energy, forces)])."""
    results = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        atoms.get_stress()
        results.append((energy, forces))
    return time.perf_counter() - start, time.process_time() - start_cpu, results


def run_atomtune(potential, structures, batch_size: int) -> tuple[float, float, list[tuple[float, np.ndarray]]]:
    start, start_cpu = time.perf_counter(), time.process_time()
    records = potential.predict(structures, batch_size=batch_size, forces=True, stress=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return wall, cpu, [(record["energy"], record["forces"]) for record in records]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="0.3.0", help="CHGNet checkpoint: 0.3.0 (default), 0.2.0, r2scan")
    parser.add_argument("--structures", type=int, default=100, help="number of cells (8–32 atoms each)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="atomtune batch sizes to time, comma separated")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved passes per side; the best is reported")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict_chgnet.json"))
    args = parser.parse_args(argv)

    from atomtune.runtime import configure_threads

    threads = configure_threads(args.threads)
    warnings.filterwarnings("ignore")
    import contextlib
    import io

    import chgnet
    import torch
    from chgnet.model.dynamics import CHGNetCalculator

    from atomtune.models.chgnet import ChgnetPotential

    structures = benchmark_structures(args.structures)
    n_atoms = [len(atoms) for atoms in structures]
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    potential = ChgnetPotential.from_checkpoint(args.checkpoint)
    with contextlib.redirect_stdout(io.StringIO()):
        # CHGNet's calculator on its own copy of the same weights (it moves and configures the model it is given)
        calculator = CHGNetCalculator(ChgnetPotential.from_checkpoint(args.checkpoint).model, use_device="cpu")
    print(f"CHGNet {args.checkpoint} (chgnet {chgnet.__version__}), torch {torch.__version__}, threads {threads}")
    print(f"{len(structures)} structures, {min(n_atoms)}–{max(n_atoms)} atoms (mean {np.mean(n_atoms):.1f})")

    run_native(calculator, structures[:3])  # warm-up
    for batch_size in batch_sizes:
        run_atomtune(potential, structures[:3], batch_size)

    # Wall-clock time is what users see; CPU time of this process is less disturbed by other processes on a shared
    # machine (with one thread it is the better measure of the work each side does). Both are reported.
    native_seconds: list[float] = []
    native_cpu_seconds: list[float] = []
    atomtune_seconds: dict[int, list[float]] = {size: [] for size in batch_sizes}
    atomtune_cpu_seconds: dict[int, list[float]] = {size: [] for size in batch_sizes}
    native_results = atomtune_results = None
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        order = ["native", *batch_sizes] if repeat % 2 == 0 else [*batch_sizes, "native"]
        for side in order:
            if side == "native":
                seconds, cpu_seconds, native_results = run_native(calculator, structures)
                native_seconds.append(seconds)
                native_cpu_seconds.append(cpu_seconds)
            else:
                seconds, cpu_seconds, results = run_atomtune(potential, structures, side)
                atomtune_seconds[side].append(seconds)
                atomtune_cpu_seconds[side].append(cpu_seconds)
                if side == ChgnetPotential.cpu_batch_size or atomtune_results is None:
                    atomtune_results = results
            label = "native CHGNetCalculator" if side == "native" else f"atomtune batch {side}"
            print(
                f"  pass {repeat + 1}: {label:<24} {len(structures) / seconds:7.2f} structures/s "
                f"({len(structures) / cpu_seconds:7.2f} per CPU-second)",
                flush=True,
            )
    load_after = os.getloadavg()

    native_rate = len(structures) / min(native_seconds)
    atomtune_rates = {size: len(structures) / min(seconds) for size, seconds in atomtune_seconds.items()}
    native_cpu_rate = len(structures) / min(native_cpu_seconds)
    atomtune_cpu_rates = {size: len(structures) / min(seconds) for size, seconds in atomtune_cpu_seconds.items()}
    default_size = ChgnetPotential.cpu_batch_size
    default_rate = atomtune_rates.get(default_size, max(atomtune_rates.values()))
    energy_difference = max(
        float(abs(a[0] - b[0])) / n for a, b, n in zip(atomtune_results, native_results, n_atoms, strict=True)
    )
    force_difference = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(atomtune_results, native_results))

    print(f"native CHGNetCalculator loop: {native_rate:.2f} structures/s ({native_cpu_rate:.2f} per CPU-second)")
    for size, rate in atomtune_rates.items():
        marker = "  (cpu_batch_size)" if size == default_size else ""
        cpu_ratio = atomtune_cpu_rates[size] / native_cpu_rate
        print(
            f"atomtune predict, batch {size:>2}: {rate:.2f} structures/s = {rate / native_rate:.2f}x native "
            f"(CPU time: {cpu_ratio:.2f}x){marker}"
        )
    print(f"max |ΔE| {energy_difference:.2e} eV/atom, max |ΔF| {force_difference:.2e} eV/Å")

    result = {
        "benchmark": "predict_chgnet",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": args.checkpoint,
        "chgnet_version": chgnet.__version__,
        "torch_version": torch.__version__,
        "device": "cpu",
        "threads": threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "load_average_before_after": [load_before[0], load_after[0]],
        "structures": len(structures),
        "atoms_per_structure": {"min": min(n_atoms), "max": max(n_atoms), "mean": float(np.mean(n_atoms))},
        "repeats": args.repeats,
        "native_structures_per_s": native_rate,
        "atomtune_structures_per_s": {str(size): rate for size, rate in atomtune_rates.items()},
        "cpu_batch_size": default_size,
        "speedup_at_cpu_batch_size": default_rate / native_rate,
        "native_structures_per_cpu_s": native_cpu_rate,
        "atomtune_structures_per_cpu_s": {str(size): rate for size, rate in atomtune_cpu_rates.items()},
        "cpu_time_speedup_at_cpu_batch_size": atomtune_cpu_rates.get(default_size, max(atomtune_cpu_rates.values()))
        / native_cpu_rate,
        "seconds_per_pass": {
            "native": native_seconds,
            **{f"atomtune_batch_{size}": seconds for size, seconds in atomtune_seconds.items()},
        },
        "cpu_seconds_per_pass": {
            "native": native_cpu_seconds,
            **{f"atomtune_batch_{size}": seconds for size, seconds in atomtune_cpu_seconds.items()},
        },
        "max_energy_difference_ev_per_atom": energy_difference,
        "max_force_difference_ev_per_a": force_difference,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
