"""Benchmark: held-out errors vs number of training structures for full / freeze / LoRA fine-tuning, with the zero-shot line.

Data: the shipped GPAW PBE Ni-alloy dataset (``src/atomtune/resources/ni_alloy/ni_alloy_pbe.extxyz``) or ``--data``. A fixed
random quarter is held out as the test set; from the rest, the first N structures of one fixed shuffle are used for each
N in ``--sizes`` (10, 25, 50, 100 and all that exist), so larger sets contain the smaller ones. Each run holds out a fifth of
its N (at least 2) for validation / early stopping, re-estimates E0 on its training part, and is scored on the same test
set. The zero-shot line is the foundation model with E0 re-estimated on all training structures. Table and plot go to
``benchmarks/results/finetune_data_efficiency[_<model>].{json,png}`` (and the plot to ``docs/figures/`` for
docs/finetuning.md).

Every run uses atomtune's defaults (:class:`~atomtune.finetune.spec.FinetuneSpec`: the learning rate of the backbone and
strategy, epochs for >= 150 optimizer steps, warm-up + cosine, the balanced selection metric, per-epoch E0 re-alignment)
unless ``--epochs`` / ``--learning-rate`` are given.

    python benchmarks/bench_finetune_data_efficiency.py --model chgnet-0.3.0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "src" / "atomtune" / "resources" / "ni_alloy" / "ni_alloy_pbe.extxyz"
METRICS = (
    ("forces_rmse", "held-out force RMSE (eV/Å)"),
    ("energy_mae_mev_per_atom", "held-out energy MAE (meV/atom)"),
    ("stress_rmse_gpa", "held-out stress RMSE (GPa)"),
)


def strategies(lora_rank: int, freeze_depth: int, chosen: str = "full,freeze,lora") -> dict[str, dict]:
    """Display name → FinetuneSpec fields, for the strategies named in ``chosen``."""
    every = {
        "full": {"strategy": "full"},
        f"freeze (last {freeze_depth} blocks)": {"strategy": "freeze", "freeze_depth": freeze_depth},
        f"LoRA (rank {lora_rank})": {"strategy": "lora", "lora_rank": lora_rank},
    }
    wanted = {name.strip() for name in chosen.split(",")}
    return {name: fields for name, fields in every.items() if fields["strategy"] in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--sizes", default="10,25,50,100,all")
    parser.add_argument("--epochs", type=int, default=None, help="default: atomtune's (>= 150 optimizer steps)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: atomtune's per backbone/strategy")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--freeze-depth", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default="full,freeze,lora", help="which of full, freeze, lora to run")
    parser.add_argument("--tag", default="", help="appended to the result names (a study beside the main table)")
    args = parser.parse_args()

    from atomtune.runtime import configure_threads

    configure_threads(args.threads)
    from atomtune.data.dataset import Dataset
    from atomtune.finetune.e0 import reestimate_element_energies
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.metrics import errors
    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.models import load_potential

    data = Dataset.read(args.data)
    parts = data.split({"pool": 0.75, "test": 0.25}, seed=args.seed)
    pool, test = parts["pool"], parts["test"]
    order = np.random.default_rng(args.seed).permutation(len(pool))
    sizes = sorted({len(pool) if s == "all" else int(s) for s in args.sizes.split(",")} & set(range(4, len(pool) + 1)))
    print(f"{args.data}: {len(data)} structures ({data.n_atoms} atoms) → pool {len(pool)}, test {len(test)}; sizes {sizes}")

    foundation = load_potential(args.model)
    test_set = FeaturizedSet.build("test", list(test), foundation)
    zero_shot_raw = errors(foundation, test_set, args.batch_size)
    reestimate_element_energies(foundation, FeaturizedSet.build("pool", list(pool), foundation), args.batch_size)
    zero_shot = errors(foundation, test_set, args.batch_size)
    print(f"zero-shot: {zero_shot_raw} → with E0 on the pool: {zero_shot}")

    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    # one file per backbone (CHGNet, the first one measured, keeps the plain name the docs link to)
    stem = "finetune_data_efficiency" + ("" if args.model == "chgnet-0.3.0" else f"_{args.model}") + (
        f"_{args.tag}" if args.tag else "")
    record_path = results / f"{stem}.json"
    record = {
        "benchmark": "finetune_data_efficiency",
        "data": {"file": str(args.data), "structures": len(data), "atoms": data.n_atoms, "fingerprint": data.fingerprint(),
                 "pool": len(pool), "test": len(test)},
        "settings": vars(args),
        "zero_shot_raw": zero_shot_raw,
        "zero_shot_e0": zero_shot,
        "rows": [],
    }
    if record_path.is_file():  # a rerun with the same data and settings keeps the rows already measured (resumable)
        previous = json.loads(record_path.read_text())
        if previous.get("data") == record["data"] and previous.get("settings", {}) | {"sizes": args.sizes} == vars(args):
            record["rows"] = previous["rows"]
    rows = record["rows"]
    done = {(row["training_structures"], row["strategy"]) for row in rows}
    for size in sizes:
        chosen = [pool[int(i)] for i in order[:size]]
        n_valid = max(2, size // 5)
        train, valid = chosen[n_valid:], chosen[:n_valid]
        for name, fields in strategies(args.lora_rank, args.freeze_depth, args.strategies).items():
            if (size, name) in done:
                continue
            spec = FinetuneSpec(**fields, epochs=args.epochs, learning_rate=args.learning_rate,
                                batch_size=args.batch_size, seed=args.seed, drop_missing_stress=True)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as directory:
                result = spec.fit(args.model, train, valid, directory, progress=False, log=lambda message: None)
            test_errors = errors(result.potential, test_set, args.batch_size)
            row = {"training_structures": size, "strategy": name, "seconds": time.perf_counter() - started,
                   "epochs": spec.resolved_epochs(len(train)),
                   "learning_rate": spec.resolved_learning_rate(result.potential.backbone),
                   "best_epoch": result.metrics["best_epoch"], "trainable": result.metrics["parameters"]["trainable"],
                   "load_average": os.getloadavg(), **test_errors}
            rows.append(row)
            print(f"N={size:3d} {name:24s} F RMSE {row['forces_rmse']:.4f} eV/Å, E MAE "
                  f"{row['energy_mae_mev_per_atom']:.1f} meV/atom, S RMSE {row.get('stress_rmse_gpa', float('nan')):.3f} "
                  f"GPa, best epoch {row['best_epoch']}, {row['seconds']:.0f} s", flush=True)
            record["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            record["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                 "load_average": os.getloadavg()}
            record_path.write_text(json.dumps(record, indent=2))  # after every run: a killed benchmark loses one run
    order_of = list(strategies(args.lora_rank, args.freeze_depth, args.strategies))
    rows.sort(key=lambda row: (row["training_structures"], order_of.index(row["strategy"])))
    record_path.write_text(json.dumps(record, indent=2))
    figure_path = plot(rows, zero_shot, results / f"{stem}.png", len(data), args.model)
    if args.tag:  # a study beside the main table: its figure stays with its results
        print(f"wrote {record_path} and {figure_path}")
        return
    docs_figure = ROOT / "docs" / "figures" / f"{stem}.png"
    docs_figure.parent.mkdir(parents=True, exist_ok=True)
    docs_figure.write_bytes(figure_path.read_bytes())
    print(f"wrote {record_path}, {figure_path} and {docs_figure}")


def plot(rows: list[dict], zero_shot: dict, path: Path, total: int, model: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(METRICS), figsize=(4.3 * len(METRICS), 3.6))
    for axis, (key, label) in zip(axes, METRICS):
        for name in dict.fromkeys(row["strategy"] for row in rows):
            points = [(row["training_structures"], row[key]) for row in rows if row["strategy"] == name and key in row]
            if points:
                axis.plot(*zip(*points), "-o", label=name)
        if key in zero_shot:
            axis.axhline(zero_shot[key], linestyle="--", color="gray", label="zero-shot (E0 re-estimated)")
        axis.set_xlabel("training structures")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{model} on the GPAW Ni-alloy set ({total} structures)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
