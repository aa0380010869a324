"""Campaign runner: turns a validated campaign into a plan of cached steps and executes them on Dask.

data → split → zero-shot errors → fine-tune → fine-tuned errors → tasks (reference and every model) → compare → report.
Each step is a plain function in :mod:`atomtune.campaign.steps` run on a Dask worker (a local cluster with one thread per
worker by default, or any scheduler address); its output goes to a folder keyed by its inputs and settings
(:mod:`atomtune.campaign.cache`). A step that fails stops only the steps that depend on it; the report shows what failed.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from atomtune.campaign import steps as step_functions
from atomtune.campaign.cache import file_fingerprint, read_result, step_dir, step_key, write_result
from atomtune.campaign.config import Campaign
from atomtune.files import atomic_write_json
from atomtune.tasks.spec import TaskRun


@dataclass
class Step:
    """One unit of work: ``function(directory, inputs, **settings)`` → JSON-able dict."""

    name: str
    kind: str
    function: Callable
    settings: dict
    depends: list[str] = field(default_factory=list)
    local: bool = False  # run in the main process (cheap bookkeeping steps)
    partial: bool = False  # runs on whichever dependencies finished (a comparison shows what is missing)
    label: str = ""  # the model / task this step is about (what the report calls it)
    fingerprints: dict = field(default_factory=dict)  # content hashes of inputs: in the cache key, not passed on
    key: str = ""
    directory: Path | None = None


def model_label(spec: str, finetune_name: str | None = None, scan: dict | None = None) -> str:
    """Column label of a model: ``chgnet-0.3.0`` zero-shot, ``chgnet-0.3.0+lora`` fine-tuned, ``…+freeze[freeze_depth=2]``."""
    label = Path(spec).name if os.sep in spec else spec
    if finetune_name:
        label += f"+{finetune_name}"
    if scan:
        label += "[" + ",".join(f"{k}={v}" for k, v in scan.items()) + "]"
    return label


def plan(campaign: Campaign, workdir: Path) -> tuple[list[Step], dict[str, dict]]:
    """The steps of a campaign in dependency order (each with its cache key and folder), and the models by label."""
    steps: list[Step] = []
    sources, source_fingerprints = [], {}
    for source in campaign.data.sources:
        resolved = campaign.resolve(source.path)
        entry = source.model_dump()
        entry["path"] = str(resolved)
        if resolved.exists() and resolved.is_file():
            source_fingerprints[str(resolved)] = file_fingerprint(resolved)
        sources.append(entry)
    label = campaign.data.label.model_dump() if campaign.data.label else None
    steps.append(Step("data", "data", step_functions.prepare_data,
                      {"sources": sources, "label": label, "show": campaign.data.show},
                      fingerprints=source_fingerprints))
    steps.append(Step("split", "split", step_functions.split_data, campaign.split.model_dump(), ["data"]))

    models: dict[str, dict] = {}  # label → {"spec" or "from_step", "kind", …}
    for spec in campaign.models:
        models[model_label(spec)] = {"spec": campaign.resolve_model(spec), "kind": "zero-shot", "backbone_spec": spec}
    for run in campaign.finetune:
        resolved = {"replay_data": str(campaign.resolve(run.replay_data))} if run.replay_data else {}
        variations = [{}]
        if run.scan:
            (parameter, values), = run.scan.items()
            variations = [{parameter: value} for value in values]
        for spec in campaign.models:
            if run.models and spec not in run.models:
                continue
            base = model_label(spec)
            scan_labels = []
            for variation in variations:
                label_ = model_label(spec, run.name, variation or None)
                finetune_spec = run.spec(**resolved, **variation)
                step_settings = {"spec": finetune_spec.model_dump(mode="json"), "model": models[base]["spec"],
                                 "device": campaign.device, "trust": campaign.trust_models}
                steps.append(Step(f"finetune {label_}", "finetune", step_functions.finetune_model, step_settings,
                                  ["split"], label=label_, fingerprints={"spec": finetune_spec.fingerprint()}))
                models[label_] = {"from_step": f"finetune {label_}", "kind": "fine-tuned", "strategy": run.strategy,
                                  "base": base, "finetune": run.name, "scan": variation}
                scan_labels.append(label_)
            if run.scan:
                parameter = next(iter(run.scan))
                steps.append(Step(f"scan {base}+{run.name} {parameter}", "scan", step_functions.summarise_scan,
                                  {"parameter": parameter, "labels": scan_labels,
                                   "values": [v[parameter] for v in variations]},
                                  [f"finetune {lab}" for lab in scan_labels], local=True, partial=True,
                                  label=f"{base}+{run.name} {parameter}"))

    for run in campaign.active_learning:
        base = campaign.models[0] if run.model is None else run.model
        label_ = model_label(base, f"al:{run.name}")
        settings = {"settings": run.learn_settings(models[model_label(base)]["spec"] if model_label(base) in models
                                                   else campaign.resolve_model(base), "", None),
                    "label": label_}
        steps.append(Step(f"active_learning {label_}", "active_learning", step_functions.active_learning, settings,
                          ["split"], label=label_))
        models[label_] = {"from_step": f"active_learning {label_}", "kind": "active learning", "base": base}

    for baseline in campaign.baselines:
        label_ = baseline.name
        steps.append(Step(f"baseline {label_}", "baseline", step_functions.train_baseline,
                          {"kind": baseline.kind, "settings": baseline.settings, "label": label_}, ["split"],
                          label=label_))
        models[label_] = {"from_step": f"baseline {label_}", "kind": BASELINE_MODEL_KIND[baseline.kind],
                          "baseline": baseline.kind, "potential": baseline.potential}
        if baseline.kind == "nequip-scratch":
            # a nequip package is a pickle by design; this one was written by nequip-package in the step's own folder
            models[label_]["trust"] = True

    for label_, model in models.items():
        depends = ["split"] + ([model["from_step"]] if "from_step" in model else [])
        energy_only = {"energy_only": True} if not model.get("potential", True) else {}
        steps.append(Step(f"errors {label_}", "errors", step_functions.evaluate_errors,
                          {"model": model.get("spec"), "label": label_, "device": campaign.device,
                           "trust": model.get("trust", campaign.trust_models), **energy_only}, depends, label=label_))

    reference = campaign.reference
    reference_results = None
    if reference.results:
        path = campaign.resolve(reference.results)
        reference_results = {"path": str(path), "fingerprint": file_fingerprint(path)}
    task_models = {label_: model for label_, model in models.items() if model.get("potential", True)}
    expansions = _expansion_sources(campaign)
    expansion_tasks = {source for source, _ in expansions.values()}
    ordered = sorted(enumerate(campaign.tasks), key=lambda item: item[0] not in expansion_tasks)  # expansions first
    for index, task in ordered:
        if task.task == "errors":
            continue  # the error benchmark is always run on the test split above
        source = expansions.get(index)  # a Monte Carlo task on the campaign's fitted cluster expansions
        structures = campaign.resolve(task.structures) if task.structures else None
        limit = task.limit
        if structures is None and source is not None and campaign.tasks[source[0]].structures:
            # the expansion's own input cells (and its limit): Monte Carlo samples each of them
            structures = campaign.resolve(campaign.tasks[source[0]].structures)
            limit = limit or campaign.tasks[source[0]].limit
        run = TaskRun(task=task.task, settings=task.settings, limit=limit)
        common = {
            "run": run.model_dump(mode="json"),
            "structures": str(structures) if structures else None,
            "device": campaign.device,
        }
        fingerprints = {"task": run.fingerprint()}
        if structures and structures.is_file():
            fingerprints["structures"] = file_fingerprint(structures)
        task_id_ = task_id(campaign, index)
        labels = []

        def wired(label_: str, source=source) -> tuple[list[str], dict]:
            """The fitted-expansion step this task's run on ``label_`` reads (depends on it), if any."""
            if source is None:
                return [], {}
            step_name = f"task {source[1]} {label_}"
            return [step_name], {"expansion_from": step_name}

        if reference.calculator:
            extra_depends, extra = wired(reference.label)
            steps.append(Step(f"task {task_id_} {reference.label}", "task", step_functions.run_task,
                              {**common, "calculator": reference.calculator, "calculator_kwargs": reference.kwargs,
                               "label": reference.label, **extra}, ["split", *extra_depends], label=reference.label,
                              fingerprints=fingerprints))
            labels.append(reference.label)
        for label_, model in task_models.items():
            depends = ["split"] + ([model["from_step"]] if "from_step" in model else [])
            extra_depends, extra = wired(label_)
            steps.append(Step(f"task {task_id_} {label_}", "task", step_functions.run_task,
                              {**common, "model": model.get("spec"), "label": label_,
                               "trust": model.get("trust", campaign.trust_models), **extra},
                              depends + extra_depends, label=label_, fingerprints=fingerprints))
            labels.append(label_)
        steps.append(Step(f"compare {task_id_}", "compare", step_functions.compare_task,
                          {"task": task.task, "labels": labels,
                           "reference": reference.label if (reference.calculator or reference_results) else None,
                           "reference_results": reference_results},
                          [f"task {task_id_} {lab}" for lab in labels], local=True, partial=True, label=task_id_))

    by_name = {}
    for step in steps:
        inputs = [by_name[d].key for d in step.depends]
        step.key = step_key(step.kind, {**step.settings, "fingerprints": step.fingerprints}, inputs)
        step.directory = step_dir(workdir, step.name, step.key)
        by_name[step.name] = step
    return steps, models


#: How the report names a baseline's kind of model.
BASELINE_MODEL_KIND = {"mace-scratch": "from scratch", "nequip-scratch": "from scratch", "regression": "regression"}


def task_id(campaign: Campaign, index: int) -> str:
    """The name of the campaign's task ``index`` in step names and the report: the task, ``#index`` when repeated."""
    name = campaign.tasks[index].task
    return name if sum(t.task == name for t in campaign.tasks) == 1 else f"{name}#{index}"


def _expansion_sources(campaign: Campaign) -> dict[int, tuple[int, str]]:
    """Monte Carlo task index → (index, id) of the cluster-expansion task whose fitted expansions it samples: the first
    cluster-expansion task of the campaign, for every Monte Carlo task that names neither an ``expansion`` file nor
    ``cluster_expansion`` settings of its own (each model's Monte Carlo then runs on that model's expansion)."""
    expansions = [k for k, task in enumerate(campaign.tasks) if task.task == "cluster_expansion"]
    if not expansions:
        return {}
    found = {}
    for index, task in enumerate(campaign.tasks):
        if task.task == "monte_carlo" and not ({"expansion", "cluster_expansion"} & set(task.settings)):
            found[index] = (expansions[0], task_id(campaign, expansions[0]))
    return found


def describe(steps: list[Step]) -> list[dict]:
    """Rows for ``--dry-run``: step, state (cached / will run), folder."""
    return [
        {"step": s.name, "state": "cached" if read_result(s.directory) is not None else "will run",
         "depends": ", ".join(s.depends), "folder": str(s.directory)}
        for s in steps
    ]


def execute(steps: list[Step], scheduler: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Run every step not cached, dependencies first; return name → result (or ``{"error": …}`` / ``{"skipped": …}``)."""
    results: dict[str, dict] = {}
    pending = {s.name: s for s in steps}
    for step in steps:
        cached = read_result(step.directory)
        if cached is not None:
            results[step.name] = cached
            pending.pop(step.name)
    if not pending:
        return results

    client = cluster = None
    remote = [s for s in pending.values() if not s.local]
    if remote and workers != 0:
        client, cluster = _start_dask(scheduler, workers)
    bar = _progress(len(steps), len(steps) - len(pending), progress)
    running: dict = {}  # future → step
    try:
        while pending or running:
            for name, step in list(pending.items()):
                failed = [d for d in step.depends if _is_failure(results.get(d))]
                complete = not failed
                if step.partial and len(failed) < len(step.depends):
                    failed = []  # runs on what finished; not cached, so a rerun that fixes the rest updates it
                if failed:
                    results[name] = {"skipped": f"skipped: {', '.join(failed)} did not finish",
                                     "failed_dependencies": failed}
                    pending.pop(name)
                    bar(step.name, "skipped")
                    continue
                if all(d in results for d in step.depends):
                    inputs = {d: results[d] for d in step.depends if not _is_failure(results[d])}
                    pending.pop(name)
                    if step.local or client is None:
                        results[name] = _run_step(step.function, step.directory, inputs, step.settings, complete)
                        bar(step.name, "failed" if _is_failure(results[name]) else "done")
                    else:
                        future = client.submit(_run_step, step.function, step.directory, inputs, step.settings, complete,
                                               key=f"{step.name}-{step.key}", pure=False)
                        running[future] = step
            if running:
                from distributed import wait

                done, _ = wait(list(running), return_when="FIRST_COMPLETED")
                for future in done:
                    step = running.pop(future)
                    try:
                        results[step.name] = future.result()
                    except Exception as error:  # a worker died (out of memory, killed): the step failed
                        results[step.name] = {"error": f"{type(error).__name__}: {error}"}
                    bar(step.name, "failed" if _is_failure(results[step.name]) else "done")
            elif pending and not any(all(d in results for d in s.depends) for s in pending.values()):
                raise RuntimeError(f"campaign plan has unmet dependencies: {sorted(pending)}")
    finally:
        bar(None, None)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return results


def _run_step(function, directory: Path, inputs: dict, settings: dict, cache: bool = True) -> dict:
    """Worker side: one thread for torch/BLAS, run the step, store its result (or the failure, uncached)."""
    from atomtune.runtime import configure_threads

    configure_threads(int(os.environ.get("ATOMTUNE_STEP_THREADS", "1")))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        result = function(directory, inputs, **{k: v for k, v in settings.items() if not k.startswith("_")})
    except Exception as error:  # recorded for the report; dependants are skipped, the rest goes on
        from atomtune.exceptions import AtomtuneError

        message = str(error) if isinstance(error, AtomtuneError) else f"{type(error).__name__}: {error}"
        (directory / "error.txt").write_text(traceback.format_exc())
        return {"error": message, "traceback": str(directory / "error.txt")}
    result["wall_time_s"] = round(time.perf_counter() - started, 2)
    if cache:
        write_result(directory, result)
    return result


def _is_failure(result: dict | None) -> bool:
    return result is not None and ("error" in result or "skipped" in result)


def _start_dask(scheduler: str | None, workers: int | None):
    from distributed import Client

    from atomtune.runtime import single_thread_cluster

    if scheduler:
        return Client(scheduler), None
    return single_thread_cluster(workers or max(1, os.cpu_count() or 1), silence_logs=40)


def _progress(total: int, done: int, enabled: bool):
    """A rich progress line over steps; returns ``update(step_name, state)`` (``None`` closes it)."""
    if not enabled:
        return lambda name, state: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]campaign"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"))
    progress.start()
    task = progress.add_task("", total=total, completed=done)

    def update(name, state):
        if name is None:
            progress.stop()
            return
        colour = {"done": "green", "failed": "red", "skipped": "yellow"}.get(state, "white")
        progress.console.print(f"[{colour}]{state:>7}[/{colour}] {name}")
        progress.update(task, advance=1, description=name)

    return update


def run_campaign(campaign: Campaign, workdir: Path, scheduler: str | None = None, progress: bool = True) -> Path:
    """Plan, execute, assemble results.json and the HTML report; returns the report path."""
    from atomtune.files import OutputLock

    workdir = Path(workdir)
    with OutputLock(workdir, "campaign"):  # two runs of one campaign folder would race on every step
        return _run_locked(campaign, workdir, scheduler, progress)


def _run_locked(campaign: Campaign, workdir: Path, scheduler: str | None, progress: bool) -> Path:
    started = time.perf_counter()
    steps, models = plan(campaign, workdir)
    results = execute(steps, scheduler=scheduler, workers=campaign.workers, progress=progress)
    from atomtune.campaign.assemble import assemble

    summary = assemble(campaign, steps, models, results)
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    summary["created"] = datetime.now().isoformat(timespec="seconds")
    atomic_write_json(workdir / "results.json", summary, indent=1, lenient=True)
    from atomtune.report import render_report

    return render_report(summary, workdir / campaign.report.file)
