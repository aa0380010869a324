"""Fine-tuning on the first try: fixed strategies with defaults and a few epochs vs zero-shot, on held-out data.

The case from the issue: 60 EMT-labelled 8-atom cells (fcc Cu host, three sites replaced by Ni or Al, rattled 0.08 Å,
±1 % strain; 40 train / 8 valid / 12 test). Each run uses the FinetuneSpec defaults except the ones named; the numbers
are the test-set force RMSE (meV/Å) and E0-aligned energy MAE (meV/atom) through the same errors task users run.

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune_first_try.py --model chgnet-0.3.0 --epochs 5 --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def emt_cells(count: int = 60, seed: int = 0):
    """40 train / 8 valid / 12 test of the test suite's substituted Cu cells (tests/emt_data.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from emt_data import substituted_cu_cells

    cells = substituted_cu_cells(count, seed)
    return cells[:40], cells[40:48], cells[48:]


def test_errors(potential, test) -> dict:
    from atomtune.tasks import errors

    records = errors.run(test, potential, progress=False)
    metrics = errors.metrics(records, align_e0=True)
    return {"force_rmse_mev_per_a": metrics["force_rmse_mev_per_a"],
            "energy_mae_mev_per_atom": metrics["energy_mae_mev_per_atom"],
            "aligned_energy_mae_mev_per_atom": metrics["aligned_energy_mae_mev_per_atom"],
            "stress_mae_gpa": metrics.get("stress_mae_gpa")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--strategies", default="full,freeze,lora")
    parser.add_argument("--learning-rates", default="", help="comma-separated; one run per rate (default: the spec's)")
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import tempfile

    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(1)
    train, valid, test = emt_cells()
    rows = []
    if not args.no_zero_shot:
        rows.append({"model": "zero-shot", **test_errors(load_potential(args.model), test)})
        print(rows[-1])
    rates = [float(rate) for rate in args.learning_rates.split(",") if rate] or [None]
    for strategy, rate in ((s, r) for s in args.strategies.split(",") for r in rates):
        spec = FinetuneSpec(strategy=strategy, epochs=args.epochs,
                            **({"learning_rate": rate} if rate is not None else {}))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            result = spec.fit(args.model, train, valid, directory, progress=False, log=lambda message: None)
            rows.append({"model": f"{strategy} (defaults, {args.epochs} epochs)", **test_errors(result.potential, test),
                         "seconds": round(time.perf_counter() - started, 1),
                         "learning_rate": spec.training_settings(result.potential.backbone).learning_rate,
                         "best_epoch": result.metrics.get("best_epoch")})
        print(rows[-1])
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"model": args.model, "epochs": args.epochs, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
