"""Benchmark: atomtune's batched ``MacePotential.predict`` against a loop over mace's own ``MACECalculator`` (CPU;
``--device cuda`` on a GPU).

Both compute energy, forces and stress for the same structures (fcc Ni/Cu/Al supercells of 8–32 atoms, strained, rattled,
randomly substituted) from the same ``.model`` file in float32 with an explicit thread count. atomtune is timed at several
batch sizes (that is how ``MacePotential.cpu_batch_size`` was chosen) and also without stress, which mace's calculator
cannot skip. Results go to ``benchmarks/results/predict_mace.json``.

The real MACE-MP-0 cannot be downloaded on the development machines, so by default the model is a randomly initialised
network with the MACE-MP-0 *medium* architecture (128x0e+128x1o, max_ell 3, correlation 3, 2 layers, r_max 6 Å, 89
elements): same cost per structure, meaningless energies. ``--model tiny`` uses the test suite's tiny EMT model;
``--model PATH`` any ``.model`` file (e.g. a downloaded ``2023-12-03-mace-128-L1_epoch-199.model``).

    python benchmarks/bench_predict_mace.py --threads 1
    python benchmarks/bench_predict_mace.py --model tiny --structures 200
    python benchmarks/bench_predict_mace.py --model tiny --structures 3 --out /tmp/predict_mace.json  # smoke test

Options, timing (:class:`Clock`), the calculator loop and result writing are shared with the other predict benchmarks
(``predict_benchmark.py``); the cells are this benchmark's own (Ni/Cu/Al only, which the tiny test model knows).
"""

from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_benchmark import (  # noqa: E402  (a sibling script, not a package)
    Clock,
    atomtune_predict,
    calculator_loop,
    device_memory,
    predict_arguments,
    write_result,
)

ELEMENTS = ("Ni", "Cu", "Al")
LATTICE_CONSTANT = {"Ni": 3.52, "Cu": 3.61, "Al": 4.05}
REPEATS = [(2, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)]  # 8, 12, 16, 24, 32 atoms


def benchmark_structures(count: int, seed: int = 0):
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        host = ELEMENTS[k % len(ELEMENTS)]
        atoms = bulk(host, "fcc", a=LATTICE_CONSTANT[host], cubic=True).repeat(REPEATS[rng.integers(len(REPEATS))])
        atoms.set_chemical_symbols([ELEMENTS[rng.integers(3)] if rng.random() < 0.3 else s for s in atoms.symbols])
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        structures.append(atoms)
    return structures


def medium_like_model(path: Path) -> Path:
    """A randomly initialised ScaleShiftMACE with MACE-MP-0 medium's hyper-parameters (float64, pickled)."""
    import torch
    from e3nn import o3
    from mace import modules
    from mace.tools.torch_tools import default_dtype

    torch.manual_seed(0)
    with default_dtype(torch.float64):
        model = modules.ScaleShiftMACE(
            r_max=6.0,
            num_bessel=10,
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            num_interactions=2,
            num_elements=89,
            hidden_irreps=o3.Irreps("128x0e+128x1o"),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.zeros(89),
            avg_num_neighbors=61.96,
            atomic_numbers=list(range(1, 90)),
            correlation=3,
            gate=torch.nn.functional.silu,
            radial_MLP=[64, 64, 64],
            atomic_inter_scale=0.8,
            atomic_inter_shift=0.0,
        )
    torch.save(model, path)
    return path


def best_of(repeats: int, measure):
    """The fastest of ``repeats`` runs of ``measure() -> (Clock, energies)`` (other jobs on the machine only slow runs)."""
    runs = [measure() for _ in range(repeats)]
    return min(runs, key=lambda run: run[0].wall)


def time_native(model_file: Path, structures, dtype: str, device: str = "cpu") -> tuple[Clock, list[float]]:
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=str(model_file), device=device, default_dtype=dtype)
    calculator_loop(calculator, structures[:2])  # warm-up
    with Clock() as clock:
        results = calculator_loop(calculator, structures)
    return clock, [energy for energy, _, _ in results]


def time_atomtune(potential, structures, batch_size: int, stress: bool = True) -> tuple[Clock, list[float]]:
    atomtune_predict(potential, structures[:2], batch_size, stress=stress)  # warm-up
    with Clock() as clock:
        results = atomtune_predict(potential, structures, batch_size, stress=stress)
    return clock, [energy for energy, _, _ in results]


def main(argv=None) -> dict:
    parser = predict_arguments(
        __doc__,
        "predict_mace",
        batch_sizes="1,2,4,8,16",
        repeats=1,
        repeats_help="time each configuration this many times, keep the best",
    )
    parser.add_argument("--model", default="medium-like", help="medium-like (default), tiny, or a path to a .model file")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)

    from atomtune.runtime import configure_threads

    threads = configure_threads(args.threads)
    warnings.filterwarnings("ignore")
    import mace
    import torch

    from atomtune.models.mace import MacePotential
    from atomtune.models.registry import load_potential

    workdir = Path(tempfile.mkdtemp(prefix="bench-mace-"))
    if args.model == "medium-like":
        model_file = medium_like_model(workdir / "medium-like.model")
        note = "randomly initialised MACE-MP-0-medium architecture (real foundation model not downloadable here)"
    elif args.model == "tiny":
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from mace_tiny import make_tiny_mace_model

        model_file = make_tiny_mace_model(workdir / "tiny.model")
        note = "tiny EMT-trained MACE of the test suite (16x0e+16x1o, 2 layers, r_max 4.5)"
    else:
        model_file = Path(args.model)
        note = f"model file {model_file}"
    print(f"model: {note}")
    print(f"threads: {threads}, dtype: {args.dtype}, structures: {args.structures}, device: {args.device}")

    structures = benchmark_structures(args.structures)
    n_atoms = [len(atoms) for atoms in structures]
    potential = load_potential(str(model_file), device=args.device, dtype=args.dtype, trust=True)  # our own file
    assert isinstance(potential, MacePotential)

    native, native_energies = best_of(args.repeats, lambda: time_native(model_file, structures, args.dtype, args.device))
    count = len(structures)
    print(f"mace MACECalculator loop (E+F+S):      {count / native.wall:8.2f} structures/s wall "
          f"({count / native.cpu:8.2f} per CPU-s)")

    def row(clock, batch_size, energies=None):
        record = {
            "batch_size": batch_size,
            "structures_per_s": count / clock.wall,
            "structures_per_cpu_s": count / clock.cpu,
            "ratio_vs_native": native.wall / clock.wall,
            "ratio_vs_native_cpu": native.cpu / clock.cpu,
        }
        if energies is not None:
            record["max_energy_diff_ev_per_atom"] = float(np.max(np.abs(np.subtract(energies, native_energies)) / n_atoms))
        return record

    rows = []
    for batch_size in args.batch_sizes:
        clock, energies = best_of(args.repeats, lambda: time_atomtune(potential, structures, batch_size))
        rows.append(row(clock, batch_size, energies))
        print(f"atomtune predict batch {batch_size:3d} (E+F+S):   {rows[-1]['structures_per_s']:8.2f} structures/s wall "
              f"({rows[-1]['structures_per_cpu_s']:8.2f} per CPU-s)  ratio {rows[-1]['ratio_vs_native']:5.2f}x wall, "
              f"{rows[-1]['ratio_vs_native_cpu']:5.2f}x CPU  max |dE| {rows[-1]['max_energy_diff_ev_per_atom']:.1e} eV/atom")
    on_gpu = args.device.startswith("cuda")
    default_batch = potential.gpu_batch_size if on_gpu else potential.cpu_batch_size
    clock, _ = best_of(args.repeats, lambda: time_atomtune(potential, structures, default_batch, stress=False))
    no_stress = row(clock, default_batch)
    print(f"atomtune predict batch {default_batch:3d} (E+F only): {no_stress['structures_per_s']:8.2f} structures/s wall "
          f"({no_stress['structures_per_cpu_s']:8.2f} per CPU-s)  ratio {no_stress['ratio_vs_native']:5.2f}x wall, "
          f"{no_stress['ratio_vs_native_cpu']:5.2f}x CPU")
    default_row = next((r for r in rows if r["batch_size"] == default_batch), None)
    if default_row is not None:
        print(f"=> default {'gpu' if on_gpu else 'cpu'}_batch_size={default_batch}: {default_row['ratio_vs_native']:.2f}x the native loop (wall), "
              f"{default_row['ratio_vs_native_cpu']:.2f}x (CPU)")

    result = {
        "benchmark": "predict_mace",
        "model": note,
        "model_file": str(model_file) if args.model not in ("medium-like", "tiny") else None,
        "threads": threads,
        "device": args.device,
        **device_memory(args.device),
        "dtype": args.dtype,
        "structures": len(structures),
        "repeats": args.repeats,
        "atoms_per_structure": [min(n_atoms), max(n_atoms)],
        "native_structures_per_s": count / native.wall,
        "native_structures_per_cpu_s": count / native.cpu,
        "atomtune": rows,
        "atomtune_no_stress": no_stress,
        f"{'gpu' if on_gpu else 'cpu'}_batch_size": default_batch,
        "versions": {"mace-torch": mace.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.processor() or platform.machine(),
    }
    write_result(result, args.out)
    shutil.rmtree(workdir)  # the built model files (the medium-like one is 44 MB)
    return result


if __name__ == "__main__":
    main()
