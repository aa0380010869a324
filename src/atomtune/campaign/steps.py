"""The work of each campaign step, as plain functions ``step(directory, inputs, **settings) -> dict`` (a record of
:mod:`atomtune.campaign.records` as JSON).

Run on Dask workers by :mod:`atomtune.campaign.runner`. ``directory`` is the step's own cache folder (outputs and
resumable work in progress go there), ``inputs`` the results of the steps it depends on, keyed by step name. Every result
is small JSON (paths to files, metrics, records) so it can be cached and shipped between processes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from atomtune.campaign.records import (
    ActiveLearningRecord,
    BaselineRecord,
    CompareRecord,
    ErrorsRecord,
    FinetuneRecord,
    ScanRecord,
    TaskRecord,
)
from atomtune.exceptions import AtomtuneError
from atomtune.files import atomic_write_json


def prepare_data(directory: Path, inputs: dict, sources: list[dict], label: dict | None, show: bool) -> dict:
    """Read every source (extxyz, db, parquet, MPtrj, VASP, OC22), optionally relabel, write ``dataset.extxyz``."""

    parts = []
    for source in sources:
        dataset = _read_source(source)
        if source.get("limit"):
            dataset = dataset[: source["limit"]]
        parts.append(dataset)
    dataset = parts[0]
    for part in parts[1:]:
        dataset = dataset + part
    failures = []
    if label:
        from atomtune.data.label import label as run_label

        dataset, failures = run_label(list(dataset), label["calculator"] if not label.get("kwargs") else
                                      {"name": label["calculator"], "kwargs": label["kwargs"]},
                                      cache_dir=directory / "label-cache", workers=label.get("workers", 1),
                                      progress=False)
        failures = [str(f) for f in failures]
    path = dataset.write(directory / "dataset.extxyz")
    plots = []
    if show:
        plots = _data_plots(dataset, directory / "plots")
    return {
        "dataset": str(path),
        "n_structures": len(dataset),
        "n_atoms": dataset.n_atoms,
        "elements": dataset.elements,
        "sources": [Path(s["path"]).name for s in sources],
        "label_failures": failures,
        "plots": plots,
    }


def _read_source(source: dict):
    """One source as a Dataset: extxyz / db directly, every other format through the readers (streamed and curated)."""
    from atomtune.data.dataset import Dataset

    keys = {k: source[k] for k in ("energy_key", "forces_key", "stress_key") if source.get(k)}
    reader = None if source.get("reader", "auto") == "auto" else source["reader"]
    path = source["path"]
    plain = Path(path).suffix in (".xyz", ".extxyz", ".db") and reader in (None, "extxyz", "db")
    if plain and not source.get("curate"):
        bound = {"max_stress_gpa": source["max_stress_gpa"]} if "max_stress_gpa" in source else {}
        return Dataset.read(path, **keys, **bound)
    from atomtune.data.curate import build_filters, curate
    from atomtune.data.readers import read_any

    options = {**source.get("options", {}), **keys}
    if reader:
        options["format"] = reader
    if source.get("curate"):
        dataset, report = curate(path, build_filters(**source["curate"]), max_rows=None, **options)
        return dataset
    return read_any(path, **options)


def _data_plots(dataset, directory: Path) -> list[str]:
    """Overview plots from :func:`atomtune.data.show.show` (element counts, distributions, example structures)."""
    from atomtune.data.show import show

    show(dataset, directory)
    return [str(path) for path in sorted(Path(directory).glob("*.png"))]


def split_data(directory: Path, inputs: dict, fractions: dict, by: str, seed: int) -> dict:
    """Deterministic split of the prepared dataset into train / valid / test files."""
    from atomtune.data.dataset import Dataset

    dataset = Dataset.read(inputs["data"]["dataset"], require=("energy", "forces"))
    parts = dataset.split(fractions, by=by, seed=seed)
    result = {"by": by, "counts": {}}
    for name, part in parts.items():
        if len(part) == 0:
            raise AtomtuneError(
                f"split part {name!r} is empty ({len(dataset)} structures, {fractions}); give more data or larger "
                f"fractions."
            )
        result[name] = str(part.write(directory / f"{name}.extxyz"))
        result["counts"][name] = len(part)
    return result


def finetune_model(directory: Path, inputs: dict, spec: dict, model: str, device: str, trust: bool = False) -> dict:
    """Fine-tune ``model`` with ``spec`` (a :class:`~atomtune.finetune.spec.FinetuneSpec`, as JSON) on the train split
    (validated on valid); the model is saved in ``directory/model``.

    Resumes from the checkpoint in ``directory/model`` when the step was interrupted (same data and settings).
    """
    from atomtune.data.dataset import Dataset
    from atomtune.finetune.checkpoint import has_checkpoint
    from atomtune.finetune.spec import FinetuneSpec

    split = inputs["split"]
    train = Dataset.read(split["train"])
    valid = Dataset.read(split.get("valid") or split["test"])
    finetune_spec = FinetuneSpec.model_validate(spec)
    out = directory / "model"
    result = finetune_spec.fit(model, list(train), list(valid), out, device=device, resume=has_checkpoint(out),
                               progress=False, trust=trust, log=lambda message: None)
    metrics = result.metrics
    parameters = metrics.get("parameters", {})
    final_valid = metrics.get("final", {}).get("valid", {})
    potential = result.potential
    return FinetuneRecord(
        model_dir=str(out),
        strategy=finetune_spec.strategy,
        settings=(getattr(result, "record", None) or {}).get("strategy", {"strategy": finetune_spec.strategy}),
        epochs=metrics.get("epochs_run"),
        best_epoch=metrics.get("best_epoch"),
        trainable_parameters=parameters.get("trainable"),
        total_parameters=parameters.get("total"),
        seconds_per_epoch=metrics.get("seconds_per_epoch"),
        e0_shift_ev=potential.get_element_energy_shift() if potential is not None else {},
        valid_metrics=_with_mev_forces(final_valid),
        zero_shot_valid_metrics=_with_mev_forces(metrics.get("zero_shot", {}).get("valid", {})),
        history=metrics.get("history", []),
        learning_curve_png=str(out / "learning_curve.png") if (out / "learning_curve.png").exists() else None,
    ).to_dict()


def active_learning(directory: Path, inputs: dict, settings: dict, label: str) -> dict:
    """The active-learning loop (:class:`~atomtune.learn.loop.ActiveLearning`) started from the train split, scored on
    the test split; resumable in ``directory/loop``. The final committee is this step's model."""
    from atomtune.learn.loop import ActiveLearning
    from atomtune.learn.report import plot_all
    from atomtune.learn.spec import LearnSpec

    split = inputs["split"]
    spec = LearnSpec.build(**{**settings, "start": settings.get("start") or split["train"],
                              "test": settings.get("test") or split["test"]})
    result = ActiveLearning(spec).run(directory / "loop", progress=False).as_dict()
    plots = {name: str(path) for name, path in plot_all(result, directory).items()}
    return ActiveLearningRecord(label=label, model_dir=result["committee_dir"], result=result, plots=plots).to_dict()


def train_baseline(directory: Path, inputs: dict, kind: str, settings: dict, label: str) -> dict:
    """A baseline (``atomtune baseline``) trained on the campaign's splits: a from-scratch MLIP trained on train,
    validated on valid and scored on test (saved in ``directory/model``, then a model like any other), or a
    regression model fitted on train (hyperparameters by cross-validation inside it) and scored on valid and test."""
    from atomtune.baselines import build_spec
    from atomtune.data.dataset import Dataset

    split = inputs["split"]
    parts = {name: Dataset.read(split[name]) for name in ("train", "valid", "test") if split.get(name)}
    spec = build_spec(kind, settings, where=f"baseline {label!r} settings")
    out = directory / "model"
    if kind == "regression":
        return _regression_baseline(out, parts, spec, label)
    if kind == "mace-scratch":
        from atomtune.baselines.mace_scratch import train
    else:
        from atomtune.baselines.nequip_scratch import train
    threads = int(os.environ.get("ATOMTUNE_STEP_THREADS", "1"))
    result = train(parts["train"], out, spec, valid_data=parts.get("valid"), test_data=parts.get("test"),
                   threads=threads, progress=False)
    return BaselineRecord(
        label=label, kind=kind, model_dir=str(result.model_dir), potential=True, spec=result.spec,
        train_seconds=result.wall_seconds, epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        n_train=result.n_train, n_valid=result.n_valid, valid_errors=result.valid_errors,
        test_errors=result.test_errors,
    ).to_dict()


def _regression_baseline(out: Path, parts: dict, spec, label: str) -> dict:
    from atomtune.baselines import regression
    from atomtune.tasks import errors

    fitted = regression.fit(list(parts["train"]), spec, list(parts.get("test", [])))
    fitted.save(out)
    scored = {}
    for name in ("valid", "test"):
        if name in parts:
            metrics = errors.metrics(regression.errors_records(fitted.model, list(parts[name])))
            scored[name] = {key: value for key, value in metrics.items() if key != "per_element"}
    return BaselineRecord(
        label=label, kind="regression", model_dir=str(out), potential=False, spec=spec.to_dict(),
        train_seconds=fitted.metrics.fit_seconds + fitted.metrics.feature_seconds, n_train=fitted.metrics.n_train,
        n_valid=len(parts["valid"]) if "valid" in parts else 0, valid_errors=scored.get("valid", {}),
        test_errors=scored.get("test", {}), note=regression.NO_FORCES_NOTE,
    ).to_dict()


def _with_mev_forces(metrics: dict) -> dict:
    """The trainer's validation metrics with force errors also in meV/Å (the unit the error benchmark reports)."""
    converted = dict(metrics)
    for key in ("forces_mae", "forces_rmse"):
        if isinstance(metrics.get(key), (int, float)):
            converted[key.replace("forces_", "force_") + "_mev_per_a"] = 1000.0 * metrics[key]
    return converted


def _model_spec(model: str | None, inputs: dict) -> str:
    """``model`` when given, else the model directory the fine-tuning step this step depends on wrote."""
    if model:
        return model
    for result in inputs.values():
        if "model_dir" in result:  # the one model-making step among the inputs (fine-tune or active learning)
            return str(result["model_dir"])
    raise AtomtuneError("no model to evaluate: the fine-tuning step produced no model directory.")


def _close_worker(model) -> None:
    """Stop the worker of a model from a family environment (:class:`atomtune.envs.worker.WorkerModel`) at the end of
    its step, instead of whenever the garbage collector gets to it."""
    if hasattr(model, "worker_failures"):
        model.close()


def _fail_if_worker_died(model, label: str) -> None:
    """A task records per-structure errors and goes on; a dead worker is not a property of the structure, so the step
    fails (it is not cached, and the next run of the campaign computes it again)."""
    failures = getattr(model, "worker_failures", None)
    if failures:
        from atomtune.envs.worker import WorkerDiedError

        raise WorkerDiedError(
            f"{label}: its worker died during the step, so the step's records are incomplete; rerun the campaign to "
            f"compute it again. {failures[0]}"
        )


def evaluate_errors(directory: Path, inputs: dict, model: str | None, label: str, device: str,
                    trust: bool = False, energy_only: bool = False) -> dict:
    """Error benchmark of one model on the test split (with the per-element E0-aligned numbers). ``energy_only``: the
    model is a regression baseline's folder (energy per atom only; no force or stress error is made up)."""
    from atomtune.data.dataset import Dataset
    from atomtune.tasks import errors

    test = Dataset.read(inputs["split"]["test"])
    if energy_only:
        from atomtune.baselines import regression

        records = regression.errors_records(regression.RegressionModel.load(_model_spec(model, inputs)), list(test))
    else:
        from atomtune.models import load_potential

        potential = load_potential(_model_spec(model, inputs), device=device, trust=trust)
        try:
            records = errors.run(list(test), potential, progress=False)
        finally:
            _close_worker(potential)
        _fail_if_worker_died(potential, label)
    atomic_write_json(directory / "records.json", records, indent=None)
    metrics = errors.metrics(records, align_e0=True)
    plots = errors.plot({label: records}, directory)
    return ErrorsRecord(label=label, metrics=metrics, plot=str(plots[0]) if plots else None).to_dict()


def run_task(
    directory: Path,
    inputs: dict,
    run: dict,
    structures: str | None,
    device: str,
    label: str,
    model: str | None = None,
    calculator: str | None = None,
    calculator_kwargs: dict | None = None,
    trust: bool = False,
    expansion_from: str | None = None,
) -> dict:
    """One property task (``run``: a :class:`~atomtune.tasks.spec.TaskRun` as JSON) on one model or on the reference
    calculator; records written to ``records.json``. ``expansion_from``: the input step (a cluster-expansion task on
    the same model) whose fitted expansion a Monte Carlo task samples."""
    from atomtune.data.dataset import Dataset
    from atomtune.tasks.spec import TaskRun

    task_run = TaskRun.model_validate(run)
    if expansion_from is not None:
        fitted = TaskRecord.from_dict(inputs[expansion_from])
        path = directory / "expansion_records.json"
        atomic_write_json(path, fitted.records, indent=None)
        task_run = TaskRun(task=task_run.task, settings={**task_run.settings, "expansion": str(path)},
                           limit=task_run.limit)
    data = list(Dataset.read(structures or inputs["split"]["test"], require=()))
    if calculator:
        from atomtune.data.label import CalculatorSpec

        target = CalculatorSpec.parse(calculator, calculator_kwargs or {})
    else:
        from atomtune.models import load_potential

        target = load_potential(_model_spec(model, inputs), device=device, trust=trust)
    try:
        records = task_run.run(data, target, progress=False)
    finally:
        _close_worker(target)
    _fail_if_worker_died(target, label)
    atomic_write_json(directory / "records.json", records, indent=None)
    return TaskRecord(label=label, records=records).to_dict()


def compare_task(
    directory: Path,
    inputs: dict,
    task: str,
    labels: list[str],
    reference: str | None,
    reference_results: dict | None,
) -> dict:
    """Side-by-side table and plots of one task over the reference and every model that finished."""
    from atomtune.tasks import load_task

    module = load_task(task)
    results = {}
    for result in map(TaskRecord.from_dict, inputs.values()):
        results[result.label] = result.records
    if reference_results:
        shipped = json.loads(Path(reference_results["path"]).read_text())
        if task in shipped and reference and reference not in results:
            results = {reference: shipped[task], **results}
    present_reference = reference if reference in results else None
    rows = module.compare(results, reference=present_reference)
    plots = [str(p) for p in module.plot(results, directory)]
    missing = [label for label in labels if label not in results]
    from atomtune.report.phase_diagram import PHASE_DIAGRAM_TASKS, summaries

    section, details = "tasks", {}
    if module.__name__.rsplit(".", 1)[-1] in PHASE_DIAGRAM_TASKS:
        section, details = "phase_diagram", summaries(module, results)
    return CompareRecord(task=task, rows=rows, plots=plots, reference=present_reference, missing=missing,
                         section=section, summaries=details).to_dict()


def summarise_scan(directory: Path, inputs: dict, parameter: str, labels: list[str], values: list) -> dict:
    """Table and plot of validation errors against a scanned fine-tuning setting (e.g. freeze depth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for label, value in zip(labels, values):
        result = inputs.get(f"finetune {label}", {})
        final = result.get("valid_metrics", {})
        rows.append({"value": value, "label": label, **{k: v for k, v in final.items() if isinstance(v, (int, float))},
                     "trainable_parameters": result.get("trainable_parameters")})
    keys = [k for k in ("force_mae_mev_per_a", "energy_mae_mev_per_atom") if any(k in r for r in rows)]
    figure, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.5 * max(1, len(keys)), 3.6), squeeze=False)
    for axis, key in zip(axes[0], keys):
        axis.plot([str(r["value"]) for r in rows], [r.get(key) for r in rows], "o-")
        axis.set_xlabel(parameter)
        axis.set_ylabel(f"valid {key}")
    figure.tight_layout()
    plot = directory / "scan.png"
    figure.savefig(plot, dpi=110)
    plt.close(figure)
    return ScanRecord(parameter=parameter, rows=rows, plot=str(plot)).to_dict()
