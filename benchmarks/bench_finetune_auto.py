"""Benchmark: ``--strategy auto`` under a wall-time budget vs each fixed strategy at its defaults given the same budget.

Data protocol of bench_finetune_data_efficiency.py (the shipped GPAW Ni-alloy set, a fixed random quarter held out as the
test set, the first N of one fixed shuffle of the rest, a fifth of them for validation). Each run is scored on the test
set: force RMSE, E0-aligned energy MAE (E0 refit on the run's training part, as the fine-tune does), stress RMSE; the
zero-shot row is the foundation model with E0 refit on the same training part. Results in
``benchmarks/results/finetune_auto_<model>_N<n>[_<selection metric>].json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_auto.py --model chgnet-0.3.0 --size 25 --budgets 5m
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "src" / "atomtune" / "resources" / "ni_alloy" / "ni_alloy_pbe.extxyz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--size", type=int, default=25)
    parser.add_argument("--budgets", default="5m")
    parser.add_argument("--strategies", default="auto,full,freeze,lora")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection-metric", default=None,
                        help="every run's selection metric (default: atomtune's); results get it as a suffix")
    args = parser.parse_args()

    from atomtune.data.dataset import Dataset
    from atomtune.finetune.auto import BudgetError
    from atomtune.finetune.e0 import reestimate_element_energies
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.loop import selection_score
    from atomtune.finetune.metrics import errors
    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(1)
    data = Dataset.read(args.data)
    parts = data.split({"pool": 0.75, "test": 0.25}, seed=args.seed)
    pool, test = parts["pool"], parts["test"]
    order = np.random.default_rng(args.seed).permutation(len(pool))
    chosen = [pool[int(i)] for i in order[: args.size]]
    n_valid = max(2, args.size // 5)
    train, valid = chosen[n_valid:], chosen[:n_valid]

    foundation = load_potential(args.model)
    test_set = FeaturizedSet.build("test", list(test), foundation)
    reestimate_element_energies(foundation, FeaturizedSet.build("train", train, foundation), 4)
    rows = [{"strategy": "zero-shot (E0 on train)", **errors(foundation, test_set, 4)}]
    print(rows[-1], flush=True)
    for budget in args.budgets.split(","):
        for strategy in args.strategies.split(","):
            chosen_metric = {"selection_metric": args.selection_metric} if args.selection_metric else {}
            spec = FinetuneSpec(strategy=strategy, budget=budget, **chosen_metric)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as directory:
                try:
                    result = spec.fit(args.model, train, valid, directory, progress=False, log=lambda message: None)
                except BudgetError as error:  # a budget the search refuses is a result too (the message says why)
                    rows.append({"strategy": strategy, "budget": budget, "refused": str(error),
                                 "load_average": os.getloadavg()})
                    print(rows[-1], flush=True)
                    continue
                wall = time.perf_counter() - started
                row = {"strategy": strategy, "budget": budget, "wall_seconds": wall,
                       "epochs_run": result.metrics.get("epochs_run"),
                       "winner": result.metrics.get("search", {}).get("winner"), "load_average": os.getloadavg(),
                       **errors(result.potential, FeaturizedSet.build("test", list(test), result.potential), 4)}
                # the balanced validation score the run was selected on (1 = E0-aligned zero-shot): tells a wrong
                # choice on validation from a validation set that disagrees with the test set
                zero_shot = result.metrics["zero_shot"].get("valid_after_e0") or result.metrics["zero_shot"]["valid"]
                row["valid_score"] = selection_score("balanced", math.nan, result.metrics["final"]["valid"], zero_shot)
                row["valid"] = result.metrics["final"]["valid"]
                if strategy == "auto":  # how the search decided: its slices' validation scores, the final choice
                    row["search"] = _search_summary(Path(directory), result.metrics["search"])
            rows.append(row)
            print(row, flush=True)
    record = {
        "benchmark": "finetune_auto", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        "data": {"file": str(args.data), "train": len(train), "valid": len(valid), "test": len(test)},
        "settings": vars(args), "rows": rows,
    }
    suffix = f"_{args.selection_metric}" if args.selection_metric else ""
    path = ROOT / "benchmarks" / "results" / f"finetune_auto_{args.model}_N{args.size}{suffix}.json"
    if path.is_file():  # a rerun of some strategies / budgets replaces those rows and keeps the others
        previous = json.loads(path.read_text())
        if previous.get("data") == record["data"]:
            measured = {(row.get("strategy"), row.get("budget")) for row in rows}
            kept = [row for row in previous["rows"] if (row.get("strategy"), row.get("budget")) not in measured]
            record["rows"] = sorted(kept + rows, key=lambda row: row.get("budget") is not None)  # zero-shot first
            record["earlier_runs"] = previous.get("earlier_runs", []) + [
                {"date": previous.get("date"), "machine": previous.get("machine"), "settings": previous.get("settings")}]
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


def _search_summary(directory: Path, search: dict) -> dict:
    """The search log of an ``auto`` run, short: every slice's candidate, rung, epochs, seconds and validation score,
    why the search was skipped or which of fresh run and slice was kept."""
    state = json.loads((directory / search["file"]).read_text())
    slices = [{key: row.get(key) for key in ("candidate", "rung", "epochs", "seconds", "score")}
              for row in state["rows"].values()]
    return {"slices": slices, **{key: state[key] for key in ("search_skipped", "decision", "winner_reserve_seconds",
                                                             "probe_seconds", "step_seconds") if key in state},
            "zero_shot_kept": search.get("zero_shot_kept")}


if __name__ == "__main__":
    main()
