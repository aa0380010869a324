"""Collect the step results of a campaign into one ``results.json`` (the input of the HTML report)."""

from __future__ import annotations

import os

from atomtune import __version__
from atomtune.campaign.config import Campaign
from atomtune.campaign.records import (
    ActiveLearningRecord,
    BaselineRecord,
    CompareRecord,
    ErrorsRecord,
    FinetuneRecord,
    ScanRecord,
)


def assemble(campaign: Campaign, steps: list, models: dict[str, dict], results: dict[str, dict]) -> dict:
    """The report's input: data overview, models, errors, fine-tunes, scans, task tables, failures."""
    summary: dict = {
        "name": campaign.name,
        "title": campaign.report.title or campaign.name,
        "atomtune_version": __version__,
        "machine": f"{os.cpu_count()} CPU cores, device {campaign.device}",
        "models": [],
        "errors": {},
        "error_plots": {},
        "finetune": {},
        "scans": {},
        "tasks": {},
        "baselines": {},
        "phase_diagram": {},
        "active_learning": {},
        "failures": [],
    }
    data = results.get("data", {})
    split = results.get("split", {})
    if "dataset" in data:
        summary["data"] = {
            "n_structures": data["n_structures"],
            "n_atoms": data["n_atoms"],
            "elements": data["elements"],
            "sources": data["sources"],
            "plots": data.get("plots", []),
            "splits": split.get("counts", {}),
            "split_by": split.get("by"),
            "label_failures": data.get("label_failures", []),
        }
    for label, model in models.items():
        entry = {"label": label, "kind": model["kind"], "backbone": (model.get("backbone_spec") or model.get("base"))}
        for key in ("strategy", "base", "scan", "baseline"):
            if model.get(key):
                entry[key] = model[key]
        summary["models"].append(entry)
    for step in steps:
        result = results.get(step.name)
        if result is None:
            continue
        if "error" in result or "skipped" in result:
            dependants = [s.name for s in steps if step.name in s.depends]
            summary["failures"].append({
                "step": step.name,
                "error": result.get("error") or result.get("skipped"),
                "skipped_dependants": dependants if "error" in result else [],
            })
            continue
        if step.kind == "errors":
            errors = ErrorsRecord.from_dict(result)
            summary["errors"][errors.label] = errors.metrics
            if errors.plot:
                summary["error_plots"][errors.label] = errors.plot
        elif step.kind == "finetune":
            summary["finetune"][step.label] = {k: v for k, v in FinetuneRecord.from_dict(result).to_dict().items()
                                               if k != "model_dir"}
        elif step.kind == "active_learning":
            loop = ActiveLearningRecord.from_dict(result)
            summary["active_learning"][loop.label] = {"result": loop.result, "plots": loop.plots}
        elif step.kind == "scan":
            summary["scans"][step.label] = ScanRecord.from_dict(result).to_dict()
        elif step.kind == "baseline":
            summary["baselines"][step.label] = {k: v for k, v in BaselineRecord.from_dict(result).to_dict().items()
                                                if k != "model_dir"}
        elif step.kind == "compare":
            compared = CompareRecord.from_dict(result)
            entry = {"rows": compared.rows, "plots": compared.plots, "reference": compared.reference,
                     "missing": compared.missing}
            if compared.section == "phase_diagram":
                summary["phase_diagram"][step.label] = {"task": compared.task, **entry,
                                                        "summaries": compared.summaries}
            else:
                summary["tasks"][step.label] = entry
    return summary
