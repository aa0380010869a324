"""``atomtune baseline``: the baselines a fine-tuned model is judged against (:mod:`atomtune.baselines`).

``--kind mace-scratch`` trains a small MACE from scratch with ``mace_run_train`` and writes a model directory (then a
``--model DIR`` like any other); ``--kind regression`` fits descriptor-regression models (energy per atom or another
per-structure scalar) and writes each as plain data. Options map onto the kind's spec; a default lives only in the spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atomtune.cli.options import trust_model_option


def register(app: typer.Typer) -> None:
    @app.command("baseline")
    def baseline_command(
        kind: str = typer.Option(..., "--kind", help="mace-scratch, nequip-scratch or regression"),
        out: Path = typer.Option(..., "--out", help="output folder (a model directory for mace-scratch; "
                                "model.nequip.zip in it for nequip-scratch)"),
        train: Path = typer.Option(None, "--train", help="mace-/nequip-scratch: labelled training structures"),
        valid: Path = typer.Option(None, "--valid", help="mace-/nequip-scratch: validation structures (default: 10 % "
                                   "of --train held out)"),
        test: Path = typer.Option(None, "--test", help="mace-/nequip-scratch: test structures, scored after training"),
        data: Path = typer.Option(None, "--data", help="regression: labelled structures (info['split'] == 'test' is "
                                  "held out when present, else --test-fraction)"),
        features: str = typer.Option(None, "--features", help="regression: composition, soap, acsf or "
                                "embeddings:<model>"),
        estimator: list[str] = typer.Option([], "--estimator", help="regression: ridge, lasso, knn, random_forest, "
                                            "svr, gaussian_process or all; repeat"),
        target: str = typer.Option(None, "--target", help="regression: energy_per_atom or an info key"),
        evaluate: Path = typer.Option(None, "--evaluate", help="regression: score the model saved in this folder on "
                                      "--data instead of fitting"),
        sizes: str = typer.Option(None, "--sizes", help="regression: also a learning curve, e.g. 10,25,50,all "
                                  "(nested training subsets, same test part)"),
        epochs: int = typer.Option(None, "--epochs", help="mace-scratch: max_num_epochs; nequip-scratch: max_epochs"),
        settings: Path = typer.Option(None, "--settings", help="the kind's spec as a .yaml/.json file (fields of "
                                      "MaceScratchSpec, NequipScratchSpec or RegressionSpec); options given here "
                                      "win"),
        seed: int = typer.Option(None, "--seed", help="random seed"),
        trust_model: bool = trust_model_option(),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ) -> None:
        """Train a from-scratch MACE or NequIP, or fit descriptor-regression baselines.

        Examples:
          atomtune baseline --kind mace-scratch --train train.extxyz --valid valid.extxyz --out scratch/
          atomtune baseline --kind nequip-scratch --train train.extxyz --valid valid.extxyz --out nq/
          atomtune errors --data test.extxyz --model scratch/ --model ft/          # then a model like any other
          atomtune baseline --kind regression --data labelled.extxyz --features soap --estimator all --out reg/
          atomtune baseline --kind regression --data labelled.extxyz --features embeddings:chgnet-0.3.0 --out reg/
          atomtune baseline --kind regression --evaluate reg/ridge --data test.extxyz --out reg-test/
          atomtune baseline --kind regression --data labelled.extxyz --features soap --sizes 10,25,50,all --out reg/
        """
        from atomtune.exceptions import AtomtuneError
        from atomtune.runtime import configure_threads

        threads = configure_threads(threads)
        values = _spec_values(settings)
        if seed is not None:
            values["seed"] = seed
        if kind == "mace-scratch":
            if train is None:
                raise AtomtuneError("--kind mace-scratch needs --train (labelled structures with energies and forces).")
            if epochs is not None:
                values["max_num_epochs"] = epochs
            _mace_scratch(train, valid, test, out, values, threads, progress)
        elif kind == "nequip-scratch":
            if train is None:
                raise AtomtuneError("--kind nequip-scratch needs --train (labelled structures with energies and forces).")
            if epochs is not None:
                values["max_epochs"] = epochs
            _nequip_scratch(train, valid, test, out, values, threads, progress)
        elif kind == "regression":
            if data is None:
                raise AtomtuneError("--kind regression needs --data (labelled structures).")
            for key, value in (("features", features), ("target", target)):
                if value is not None:
                    values[key] = value
            if trust_model:
                values["trust_model"] = True
            _regression(data, out, values, estimator, evaluate, sizes, progress)
        else:
            raise AtomtuneError(f"--kind {kind!r}: use mace-scratch, nequip-scratch or regression.")


def _spec_values(path: Path | None) -> dict:
    from atomtune.exceptions import AtomtuneError

    if path is None:
        return {}
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise AtomtuneError(f"{path}: cannot read the settings ({error}).") from None
    if not isinstance(values, dict):
        raise AtomtuneError(f"{path}: must be a mapping of spec fields to values.")
    return values


def _spec(cls, values: dict, where: str):
    from dataclasses import fields

    from atomtune.exceptions import AtomtuneError

    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AtomtuneError(f"{where}: unknown field(s) {', '.join(unknown)} of {cls.__name__}; known: "
                            f"{', '.join(sorted(known))}.")
    return cls(**values)


def _read_splits(train: Path, valid, test) -> dict:
    """The from-scratch baselines' train / valid / test files read (None where not given)."""
    from atomtune.data.dataset import Dataset

    return {name: Dataset.read(path) if path else None for name, path in (("train", train), ("valid", valid),
                                                                          ("test", test))}


def _print_split_errors(console, result) -> None:
    """A from-scratch baseline's validation and test errors, one line each."""
    for name, errors in (("valid", result.valid_errors), ("test", result.test_errors)):
        if errors:
            console.print(f"{name}: E MAE {errors['energy_mae_mev_per_atom']:.2f} meV/atom, F MAE "
                          f"{errors.get('force_mae_mev_per_a', float('nan')):.1f} meV/Å")


def _mace_scratch(train: Path, valid, test, out: Path, values: dict, threads: int, progress: bool) -> None:
    from rich.console import Console

    from atomtune.baselines.mace_scratch import MaceScratchSpec
    from atomtune.baselines.mace_scratch import train as train_mace

    console = Console()
    spec = _spec(MaceScratchSpec, values, "mace-scratch settings")
    splits = _read_splits(train, valid, test)
    console.print(f"mace_run_train from scratch: {len(splits['train'])} training structures, hidden irreps "
                  f"{spec.hidden_irreps}, ≤ {spec.max_num_epochs} epochs, {threads} thread(s)")
    result = train_mace(splits["train"], out, spec, valid_data=splits["valid"], test_data=splits["test"],
                        threads=threads, progress=progress)
    _print_split_errors(console, result)
    console.print(f"{result.wall_seconds:.0f} s, {result.epochs_run} epochs (best {result.best_epoch}); model in {out} "
                  f"(use --model {out})")


def _nequip_scratch(train: Path, valid, test, out: Path, values: dict, threads: int, progress: bool) -> None:
    from rich.console import Console

    from atomtune.baselines.nequip_scratch import NequipScratchSpec
    from atomtune.baselines.nequip_scratch import train as train_nequip

    console = Console()
    spec = _spec(NequipScratchSpec, values, "nequip-scratch settings")
    splits = _read_splits(train, valid, test)
    console.print(f"nequip-train from scratch: {len(splits['train'])} training structures, {spec.num_features} "
                  f"features, l_max {spec.l_max}, {spec.num_layers} layers, ≤ {spec.max_epochs} epochs, {threads} "
                  f"thread(s)")
    result = train_nequip(splits["train"], out, spec, valid_data=splits["valid"], test_data=splits["test"],
                          threads=threads, progress=progress)
    _print_split_errors(console, result)
    console.print(f"{result.wall_seconds:.0f} s, {result.epochs_run} epochs (kept {result.best_epoch}); package "
                  f"{result.model_file} (use --model nequip:{result.model_file} --trust-model: a nequip package is a "
                  f"pickle by design)")


def _regression(data: Path, out: Path, values: dict, estimators: list[str], evaluate: Path | None,
                sizes: str | None, progress: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from atomtune.baselines import regression
    from atomtune.data.dataset import Dataset
    from atomtune.tasks import errors

    console = Console()
    structures = list(Dataset.read(data, require=("energy",)))
    out.mkdir(parents=True, exist_ok=True)
    if evaluate is not None:
        model = regression.RegressionModel.load(evaluate)
        records = regression.errors_records(model, structures)
        metrics = {key: value for key, value in errors.metrics(records).items() if key != "per_element"}
        (out / "errors.json").write_text(json.dumps({"model": str(evaluate), "data": str(data), "metrics": metrics,
                                                     "note": regression.NO_FORCES_NOTE}, indent=2))
        (out / f"records_{Path(evaluate).name}.json").write_text(json.dumps(records))
        console.print(f"{model.name} on {data}: E MAE {metrics['energy_mae_mev_per_atom']:.2f} meV/atom, RMSE "
                      f"{metrics['energy_rmse_mev_per_atom']:.2f} meV/atom (no forces: energy-only model)")
        return
    names = list(regression.ESTIMATORS) if not estimators or "all" in estimators else estimators
    table = Table(title=f"regression baselines on {data.name} ({values.get('features', 'composition')})")
    for column in ("estimator", "hyperparameters", "CV RMSE", "test MAE", "test RMSE", "fit (s)"):
        table.add_column(column)
    summary = {}
    test_points = {}
    for name in names:
        spec = _spec(regression.RegressionSpec, {**values, "estimator": name}, "regression settings")
        train_part, test_part = regression.split_for_regression(structures, spec)
        result = regression.fit(train_part, spec, test_part, progress=progress)
        result.save(out / name)
        metrics = result.metrics
        summary[name] = {"spec": spec.to_dict(), "parameters": result.model.parameters, "metrics": vars(metrics)}
        test_points[name] = (result.test_targets, result.test_predictions)
        energy = spec.target == regression.ENERGY_PER_ATOM
        scale, unit = (1000, " meV/atom") if energy else (1, "")
        table.add_row(name, json.dumps(result.model.parameters), f"{metrics.cv_rmse * scale:.3g}{unit}",
                      "–" if metrics.test_mae is None else f"{metrics.test_mae * scale:.3g}{unit}",
                      "–" if metrics.test_rmse is None else f"{metrics.test_rmse * scale:.3g}{unit}",
                      f"{metrics.fit_seconds:.1f}")
    curves = {}
    if sizes:
        from dataclasses import asdict

        from atomtune.exceptions import AtomtuneError

        for name in names:
            spec = _spec(regression.RegressionSpec, {**values, "estimator": name}, "regression settings")
            train_part, test_part = regression.split_for_regression(structures, spec)
            try:
                wanted = [len(train_part) if s.strip() == "all" else int(s) for s in sizes.split(",")]
            except ValueError:
                raise AtomtuneError(f"--sizes {sizes!r}: give whole numbers or 'all', e.g. 10,25,50,all.") from None
            curves[name] = [asdict(point) for point in regression.learning_curve(train_part, test_part, spec, wanted,
                                                                                 spec.seed)]
        _learning_curve_plot(curves, out / "learning_curve.png", values.get("target", regression.ENERGY_PER_ATOM))
    (out / "summary.json").write_text(json.dumps({"data": str(data), "estimators": summary,
                                                 "learning_curves": curves}, indent=2))
    _parity_plot(test_points, out / "parity.png", values.get("target", regression.ENERGY_PER_ATOM))
    console.print(table)
    console.print(f"models in {out}/<estimator>/ (plain JSON + npz), summary.json, parity.png"
                  + (", learning_curve.png" if curves else ""))


def _parity_plot(points: dict, path: Path, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(len(reference) for reference, _ in points.values()):
        return
    figure, axis = plt.subplots(figsize=(4.6, 4.3))
    everything = []
    for name, (reference, predicted) in points.items():
        axis.scatter(reference, predicted, s=10, alpha=0.7, label=name)
        everything += list(reference) + list(predicted)
    axis.plot([min(everything), max(everything)], [min(everything), max(everything)], "k--", lw=0.8)
    axis.set_xlabel(f"reference {target}")
    axis.set_ylabel(f"predicted {target}")
    axis.set_title("held-out structures")
    axis.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _learning_curve_plot(curves: dict, path: Path, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.8, 3.8))
    scale, unit = (1000, "meV/atom") if target == "energy_per_atom" else (1, "target units")
    for name, points in curves.items():
        axis.plot([p["n_train"] for p in points], [p["test_mae"] * scale for p in points], "-o", label=name)
    axis.set_xlabel("training structures")
    axis.set_ylabel(f"held-out MAE ({unit})")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
