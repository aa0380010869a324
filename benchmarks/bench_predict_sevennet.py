"""Benchmark: atomtune's ``SevennetPotential.predict`` against a loop over SevenNet's own ``SevenNetCalculator`` (CPU;
``--device cuda`` on a GPU).

Both compute energy, forces and stress of the same structures (fcc, bcc, hcp, rock-salt and diamond supercells of 8–32
atoms, strained, rattled, a third of them with substituted elements) with the same SevenNet checkpoint in float32 and an
explicit torch thread count. The sides run interleaved, ``--repeats`` times (the order alternates), and the best pass of
each is reported, so that load from other processes on a shared machine hits all alike. atomtune is timed at several
batch sizes (that is how ``SevennetPotential.cpu_batch_size`` was chosen) and, at batch size 1, also with sevenn's own
e3nn convolution (``fast_convolution=False``) to show where the difference comes from. The largest energy, force and
stress differences from the native calculator are recorded as a check. Results go to
``benchmarks/results/predict_sevennet.json``. The cells, timing and result writing are shared with the other predict
benchmarks (``predict_benchmark.py``).

    python benchmarks/bench_predict_sevennet.py --threads 1
    python benchmarks/bench_predict_sevennet.py --structures 40 --repeats 5 --batch-sizes 1,2,4
    python benchmarks/bench_predict_sevennet.py --structures 3 --repeats 1 --out /tmp/predict_sevennet.json  # smoke
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_benchmark import (  # noqa: E402  (a sibling script, not a package)
    atomtune_predict,
    benchmark_structures,
    calculator_loop,
    interleaved_passes,
    max_differences,
    predict_arguments,
    run_conditions,
    utc_now,
    write_result,
)

#: (prototype, host, lattice constant a Å, substituents for the multi-element cells): with hcp (a non-orthogonal cell)
#: and diamond, which SevenNet's neighbour lists handle differently from the cubic cells
PROTOTYPES = [
    ("fcc", "Cu", 3.61, ("Ni", "Al")),
    ("bcc", "Fe", 2.87, ("Cr", "Mn")),
    ("hcp", "Ti", 2.95, ("Zr", "Al")),
    ("rocksalt", "NaCl", 5.64, ("K", "Br")),
    ("diamond", "Si", 5.43, ("Ge", "C")),
    ("rocksalt", "MgO", 4.21, ("Ni", "Ca")),
]


def main(argv=None) -> dict:
    parser = predict_arguments(__doc__, "predict_sevennet", batch_sizes="1,2,4")
    parser.add_argument("--checkpoint", default="7net-0", help="SevenNet checkpoint: 7net-0 (default), 7net-l3i5")
    args = parser.parse_args(argv)

    from atomtune.runtime import configure_threads

    threads = configure_threads(args.threads)
    warnings.filterwarnings("ignore")  # sevenn warns on every calculator that no GPU tensor-product accelerator is on
    import sevenn
    import torch
    from sevenn.calculator import SevenNetCalculator

    from atomtune.models.sevennet import SevennetPotential

    structures = benchmark_structures(args.structures, prototypes=PROTOTYPES)
    n_atoms = [len(atoms) for atoms in structures]
    batch_sizes = args.batch_sizes
    potential = SevennetPotential.from_checkpoint(args.checkpoint).to(args.device)
    e3nn_potential = SevennetPotential.from_checkpoint(args.checkpoint).to(args.device)
    e3nn_potential.fast_convolution = False
    calculator = SevenNetCalculator(args.checkpoint, device=args.device)
    print(
        f"SevenNet {args.checkpoint} (sevenn {sevenn.__version__}), torch {torch.__version__}, threads {threads}, "
        f"device {args.device}"
    )
    print(f"{len(structures)} structures, {min(n_atoms)}–{max(n_atoms)} atoms (mean {np.mean(n_atoms):.1f})")

    # Warm-up: e3nn's TorchScript-compiled tensor products specialise on their first calls.
    for _ in range(2):
        calculator_loop(calculator, structures[:4])
        atomtune_predict(e3nn_potential, structures[:4], 1)
        for batch_size in batch_sizes:
            atomtune_predict(potential, structures[:4], batch_size)

    sides = {
        "native": ("native SevenNetCalculator", lambda: calculator_loop(calculator, structures)),
        "e3nn": ("atomtune e3nn conv, batch 1", lambda: atomtune_predict(e3nn_potential, structures, 1)),
    }
    for size in batch_sizes:
        sides[size] = (f"atomtune batch {size}", lambda size=size: atomtune_predict(potential, structures, size))
    passes = interleaved_passes(sides, args.repeats, len(structures))

    rate, cpu_rate = passes.rates(), passes.cpu_rates()
    kind = "gpu" if args.device.startswith("cuda") else "cpu"  # which of the Potential's default batch sizes applies
    default_size = getattr(SevennetPotential, f"{kind}_batch_size")
    differences = {
        str(side): max_differences(passes.results[side], passes.results["native"], n_atoms)
        for side in ["e3nn", *batch_sizes]
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
        marker = f"  ({kind}_batch_size)" if size == default_size else ""
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
        "date": utc_now(),
        "checkpoint": args.checkpoint,
        "sevenn_version": sevenn.__version__,
        "torch_version": torch.__version__,
        **run_conditions(threads, structures, args.repeats, passes.load_before_after, args.device),
        "native_structures_per_s": rate["native"],
        "atomtune_structures_per_s": {str(size): rate[size] for size in batch_sizes},
        "atomtune_e3nn_convolution_structures_per_s": rate["e3nn"],
        f"{kind}_batch_size": default_size,
        f"speedup_at_{kind}_batch_size": rate[default_key] / rate["native"],
        "native_structures_per_cpu_s": cpu_rate["native"],
        "atomtune_structures_per_cpu_s": {str(size): cpu_rate[size] for size in batch_sizes},
        "atomtune_e3nn_convolution_structures_per_cpu_s": cpu_rate["e3nn"],
        "cpu_time_speedup_at_cpu_batch_size": cpu_rate[default_key] / cpu_rate["native"],
        "seconds_per_pass": {str(side): values for side, values in passes.seconds.items()},
        "cpu_seconds_per_pass": {str(side): values for side, values in passes.cpu_seconds.items()},
        "max_difference_from_native": differences,
    }
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
