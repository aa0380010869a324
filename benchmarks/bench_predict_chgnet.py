"""Benchmark: atomtune's ``ChgnetPotential.predict`` against a loop over CHGNet's own ``CHGNetCalculator`` (CPU; ``--device
cuda`` on a GPU).

Both compute energy, forces and stress of the same structures (fcc, bcc and rock-salt supercells of 8–32 atoms, strained,
rattled, a third of them with substituted elements) with the same CHGNet checkpoint in float32 and an explicit torch
thread count. The two sides run interleaved, ``--repeats`` times (the order alternates), and the best pass of each is
reported, so that load from other processes on a shared machine hits both alike. atomtune is timed at several batch sizes
(that is how ``ChgnetPotential.cpu_batch_size`` was chosen). The largest energy and force differences between the two
sides are recorded as a check. Results go to ``benchmarks/results/predict_chgnet.json``. The cells, timing and result
writing are shared with the other predict benchmarks (``predict_benchmark.py``).

    python benchmarks/bench_predict_chgnet.py --threads 1
    python benchmarks/bench_predict_chgnet.py --structures 40 --repeats 5 --batch-sizes 1,2,4
    python benchmarks/bench_predict_chgnet.py --structures 3 --repeats 1 --out /tmp/predict_chgnet.json  # smoke test
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


def main(argv=None) -> dict:
    parser = predict_arguments(__doc__, "predict_chgnet", batch_sizes="1,2,4,8")
    parser.add_argument("--checkpoint", default="0.3.0", help="CHGNet checkpoint: 0.3.0 (default), 0.2.0, r2scan")
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
    batch_sizes = args.batch_sizes
    potential = ChgnetPotential.from_checkpoint(args.checkpoint).to(args.device)
    with contextlib.redirect_stdout(io.StringIO()):
        # CHGNet's calculator on its own copy of the same weights (it moves and configures the model it is given)
        calculator = CHGNetCalculator(ChgnetPotential.from_checkpoint(args.checkpoint).model, use_device=args.device)
    print(f"CHGNet {args.checkpoint} (chgnet {chgnet.__version__}), torch {torch.__version__}, threads {threads}, device {args.device}")
    print(f"{len(structures)} structures, {min(n_atoms)}–{max(n_atoms)} atoms (mean {np.mean(n_atoms):.1f})")

    calculator_loop(calculator, structures[:3])  # warm-up
    for batch_size in batch_sizes:
        atomtune_predict(potential, structures[:3], batch_size)

    sides = {"native": ("native CHGNetCalculator", lambda: calculator_loop(calculator, structures))}
    for size in batch_sizes:
        sides[size] = (f"atomtune batch {size}", lambda size=size: atomtune_predict(potential, structures, size))
    passes = interleaved_passes(sides, args.repeats, len(structures))

    rates, cpu_rates = passes.rates(), passes.cpu_rates()
    native_rate, native_cpu_rate = rates.pop("native"), cpu_rates.pop("native")
    kind = "gpu" if args.device.startswith("cuda") else "cpu"  # which of the Potential's default batch sizes applies
    default_size = getattr(ChgnetPotential, f"{kind}_batch_size")
    default_rate = rates.get(default_size, max(rates.values()))
    compared = default_size if default_size in batch_sizes else batch_sizes[0]
    differences = max_differences(passes.results[compared], passes.results["native"], n_atoms)

    print(f"native CHGNetCalculator loop: {native_rate:.2f} structures/s ({native_cpu_rate:.2f} per CPU-second)")
    for size, rate in rates.items():
        marker = f"  ({kind}_batch_size)" if size == default_size else ""
        cpu_ratio = cpu_rates[size] / native_cpu_rate
        print(
            f"atomtune predict, batch {size:>2}: {rate:.2f} structures/s = {rate / native_rate:.2f}x native "
            f"(CPU time: {cpu_ratio:.2f}x){marker}"
        )
    print(
        f"max |ΔE| {differences['energy_ev_per_atom']:.2e} eV/atom, max |ΔF| {differences['forces_ev_per_a']:.2e} eV/Å"
    )

    result = {
        "benchmark": "predict_chgnet",
        "date": utc_now(),
        "checkpoint": args.checkpoint,
        "chgnet_version": chgnet.__version__,
        "torch_version": torch.__version__,
        **run_conditions(threads, structures, args.repeats, passes.load_before_after, args.device),
        "native_structures_per_s": native_rate,
        "atomtune_structures_per_s": {str(size): rate for size, rate in rates.items()},
        f"{kind}_batch_size": default_size,
        f"speedup_at_{kind}_batch_size": default_rate / native_rate,
        "native_structures_per_cpu_s": native_cpu_rate,
        "atomtune_structures_per_cpu_s": {str(size): rate for size, rate in cpu_rates.items()},
        "cpu_time_speedup_at_cpu_batch_size": cpu_rates.get(default_size, max(cpu_rates.values())) / native_cpu_rate,
        "seconds_per_pass": {
            "native" if side == "native" else f"atomtune_batch_{side}": values
            for side, values in passes.seconds.items()
        },
        "cpu_seconds_per_pass": {
            "native" if side == "native" else f"atomtune_batch_{side}": values
            for side, values in passes.cpu_seconds.items()
        },
        "max_energy_difference_ev_per_atom": differences["energy_ev_per_atom"],
        "max_force_difference_ev_per_a": differences["forces_ev_per_a"],
    }
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
