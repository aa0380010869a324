"""Benchmark: held-out errors vs number of training structures for the baselines — a MACE trained from scratch with
``mace_run_train``, a NequIP trained from scratch with ``nequip-train`` (nequip environment), and descriptor regression (composition / SOAP / CHGNet embeddings × ridge / kNN / GP) — on exactly the
splits of ``bench_finetune_data_efficiency.py``, so the curves sit next to the fine-tuned ones.

Data: the shipped GPAW PBE Ni-alloy set. A fixed random quarter is the test set (``Dataset.split`` seed 0); from the rest
the first N of one fixed shuffle train each run, N in ``--sizes``. The MACE gets a fifth of N (≥ 2) as its validation set
(as the fine-tuning runs do) and its E0s from its training part (mace's ``--E0s average``); the regression models get all
N (their hyperparameters are cross-validated inside those N). Results: ``benchmarks/results/baselines_data_efficiency
[_<part>].json``; ``--plot`` draws all parts present, with the fine-tuned CHGNet curves from
``finetune_data_efficiency.json``, into ``docs/figures/baselines_data_efficiency.png``.

    python benchmarks/bench_baselines_data_efficiency.py --part regression --threads 1
    python benchmarks/bench_baselines_data_efficiency.py --part mace-scratch --epochs 40 --threads 1
    python benchmarks/bench_baselines_data_efficiency.py --part nequip-scratch --epochs 20 --threads 1
    python benchmarks/bench_baselines_data_efficiency.py --plot
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "src" / "atomtune" / "resources" / "ni_alloy" / "ni_alloy_pbe.extxyz"
RESULTS = ROOT / "benchmarks" / "results"
FEATURES = ("composition", "soap", "acsf", "embeddings:chgnet-0.3.0")
ESTIMATORS = ("ridge", "knn", "gaussian_process")


def splits(data_path: str, seed: int, sizes_text: str):
    """(pool, test, order, sizes) exactly as bench_finetune_data_efficiency.py makes them."""
    from atomtune.data.dataset import Dataset

    data = Dataset.read(data_path)
    parts = data.split({"pool": 0.75, "test": 0.25}, seed=seed)
    pool, test = parts["pool"], parts["test"]
    order = np.random.default_rng(seed).permutation(len(pool))
    sizes = sorted({len(pool) if s == "all" else int(s) for s in sizes_text.split(",")} & set(range(4, len(pool) + 1)))
    return data, pool, test, order, sizes


def regression_rows(pool, test, order, sizes, seed: int, rows: list, write) -> None:
    from atomtune.baselines import regression

    for size in sizes:
        chosen = [pool[int(i)] for i in order[:size]]
        for features in FEATURES:
            for estimator in ESTIMATORS:
                spec = regression.RegressionSpec(features=features, estimator=estimator, cv_folds=min(5, size),
                                                 seed=seed)
                started = time.perf_counter()
                result = regression.fit(chosen, spec, list(test))
                rows.append({"training_structures": size, "baseline": f"{estimator} ({features})",
                             "energy_mae_mev_per_atom": result.metrics.test_mae_mev_per_atom,
                             "energy_rmse_mev_per_atom": result.metrics.test_rmse_mev_per_atom,
                             "cv_rmse_mev_per_atom": result.metrics.cv_rmse * 1000,
                             "parameters": result.model.parameters, "seconds": time.perf_counter() - started})
                write()
                print(f"N={size:3d} {rows[-1]['baseline']:45s} E MAE {rows[-1]['energy_mae_mev_per_atom']:7.1f} "
                      f"meV/atom ({rows[-1]['seconds']:.1f} s)", flush=True)


def mace_rows(pool, test, order, sizes, args, rows: list, write) -> None:
    from atomtune.baselines.mace_scratch import MaceScratchSpec, train
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.metrics import errors
    from atomtune.models import load_potential

    spec = MaceScratchSpec(num_channels=args.channels, max_L=1, max_num_epochs=args.epochs, patience=args.epochs,
                           batch_size=4, seed=args.seed)
    for size in sizes:
        chosen = [pool[int(i)] for i in order[:size]]
        n_valid = max(2, size // 5)
        with tempfile.TemporaryDirectory() as work:
            result = train(chosen[n_valid:], Path(work) / "model", spec, valid_data=chosen[:n_valid],
                           threads=args.threads, progress=False)
            potential = load_potential(str(Path(work) / "model"), dtype="float64")
            test_errors = errors(potential, FeaturizedSet.build("test", list(test), potential), 8)
        rows.append({"training_structures": size, "baseline": f"MACE from scratch ({spec.hidden_irreps})",
                     "seconds": result.wall_seconds, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                     **test_errors})
        write()
        print(f"N={size:3d} MACE scratch: F RMSE {test_errors['forces_rmse']:.4f} eV/Å, E MAE "
              f"{test_errors['energy_mae_mev_per_atom']:.1f} meV/atom, {result.wall_seconds:.0f} s, "
              f"{result.epochs_run} epochs (best {result.best_epoch})", flush=True)


def nequip_rows(pool, test, order, sizes, args, rows: list, write) -> None:
    """The from-scratch NequIP (nequip-train in the nequip environment) on the same splits as the MACE: a fifth of N
    validates, E0s by least squares on its training part; scored on the test set through the nequip worker."""
    from atomtune.baselines.nequip_scratch import NequipScratchSpec, train

    spec = NequipScratchSpec(num_features=args.channels, l_max=1, max_epochs=args.epochs, patience=None, batch_size=4,
                             seed=args.seed)
    for size in sizes:
        chosen = [pool[int(i)] for i in order[:size]]
        n_valid = max(2, size // 5)
        with tempfile.TemporaryDirectory() as work:
            result = train(chosen[n_valid:], Path(work) / "model", spec, valid_data=chosen[:n_valid],
                           test_data=list(test), threads=args.threads, progress=False)
        test_errors = result.test_errors  # atomtune.tasks.errors: per-component force errors, Voigt stress, as MACE's
        rows.append({"training_structures": size, "baseline": f"NequIP from scratch ({spec.num_features} features, "
                     f"l_max {spec.l_max})", "seconds": result.wall_seconds, "epochs_run": result.epochs_run,
                     "best_epoch": result.best_epoch, "energy_mae_mev_per_atom": test_errors["energy_mae_mev_per_atom"],
                     "energy_rmse_mev_per_atom": test_errors["energy_rmse_mev_per_atom"],
                     "forces_mae": test_errors["force_mae_mev_per_a"] / 1000,
                     "forces_rmse": test_errors["force_rmse_mev_per_a"] / 1000,
                     "stress_mae_gpa": test_errors.get("stress_mae_gpa"),
                     "stress_rmse_gpa": test_errors.get("stress_rmse_gpa"), "e0s_ev": result.e0s_ev})
        write()
        print(f"N={size:3d} NequIP scratch: F RMSE {rows[-1]['forces_rmse']:.4f} eV/Å, E MAE "
              f"{rows[-1]['energy_mae_mev_per_atom']:.1f} meV/atom, {result.wall_seconds:.0f} s, "
              f"{result.epochs_run} epochs (best {result.best_epoch})", flush=True)


def plot() -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (energy_axis, force_axis) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    finetuned = RESULTS / "finetune_data_efficiency.json"
    if finetuned.exists():
        record = json.loads(finetuned.read_text())
        for strategy in ("full", "LoRA (rank 8)"):
            points = [(r["training_structures"], r["energy_mae_mev_per_atom"], r["forces_rmse"]) for r in record["rows"]
                      if r["strategy"] == strategy]
            if points:
                n, energy, force = zip(*points)
                energy_axis.plot(n, energy, "-o", lw=2, label=f"CHGNet fine-tuned, {strategy}")
                force_axis.plot(n, force, "-o", lw=2, label=f"CHGNet fine-tuned, {strategy}")
        energy_axis.axhline(record["zero_shot_e0"]["energy_mae_mev_per_atom"], ls="--", color="gray",
                            label="CHGNet zero-shot (E0 on pool)")
        force_axis.axhline(record["zero_shot_e0"]["forces_rmse"], ls="--", color="gray", label="CHGNet zero-shot")
    for part, style in (("mace-scratch", "-s"), ("nequip-scratch", "-^"), ("regression", ":.")):
        path = RESULTS / f"baselines_data_efficiency_{part}.json"
        if not path.exists():
            continue
        rows = json.loads(path.read_text())["rows"]
        for name in dict.fromkeys(r["baseline"] for r in rows):
            points = [r for r in rows if r["baseline"] == name]
            n = [r["training_structures"] for r in points]
            energy_axis.plot(n, [r["energy_mae_mev_per_atom"] for r in points], style, label=name)
            if "forces_rmse" in points[0]:
                force_axis.plot(n, [r["forces_rmse"] for r in points], style, label=name)
    energy_axis.set_ylabel("held-out energy MAE (meV/atom)")
    force_axis.set_ylabel("held-out force RMSE (eV/Å)")
    for axis in (energy_axis, force_axis):
        axis.set_xlabel("training structures")
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
    energy_axis.set_yscale("log")
    energy_axis.set_ylim(1, 3000)  # a diverging small-N fit would otherwise hide the rest (values in the JSON)
    energy_axis.legend(fontsize=6, ncol=2)
    force_axis.legend(fontsize=7)
    figure.suptitle("GPAW Ni-alloy set: fine-tuned CHGNet vs baselines (regression has no forces)")
    figure.tight_layout()
    path = ROOT / "docs" / "figures" / "baselines_data_efficiency.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("regression", "mace-scratch", "nequip-scratch"))
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--sizes", default="10,25,50,100,all")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.part:
        from atomtune.runtime import configure_threads

        configure_threads(args.threads)
        data, pool, test, order, sizes = splits(args.data, args.seed, args.sizes)
        print(f"{args.data}: {len(data)} structures → pool {len(pool)}, test {len(test)}; sizes {sizes}")
        started = time.perf_counter()
        out = RESULTS / f"baselines_data_efficiency_{args.part}.json"
        rows: list[dict] = []

        def write() -> None:  # after every row: a long MACE part keeps what it has measured
            record = {
                "benchmark": f"baselines_data_efficiency ({args.part})",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "load_average_at_end": os.getloadavg(), "note": "shared 2-core machine, other sessions running"},
                "data": {"file": str(args.data), "structures": len(data), "fingerprint": data.fingerprint(),
                         "pool": len(pool), "test": len(test)},
                "settings": vars(args),
                "total_seconds": time.perf_counter() - started,
                "rows": rows,
            }
            RESULTS.mkdir(exist_ok=True)
            out.write_text(json.dumps(record, indent=2))

        if args.part == "regression":
            regression_rows(pool, test, order, sizes, args.seed, rows, write)
        elif args.part == "nequip-scratch":
            nequip_rows(pool, test, order, sizes, args, rows, write)
        else:
            mace_rows(pool, test, order, sizes, args, rows, write)
        print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")
    if args.plot:
        print(f"wrote {plot()}")


if __name__ == "__main__":
    main()
