"""The verdict at the top of a report: which model is best on which property, by how much, with the numbers.

Computed from the results only. Errors: lowest is best, and each backbone's best fine-tune is set against its zero-shot
model. Property tasks: the model closest to the reference (mean absolute deviation over the task's rows) is best.
"""

from __future__ import annotations

import math

from atomtune.tasks.comparison import SUMMARY_ID

#: (metric key in atomtune.tasks.errors.metrics, label with unit)
ERROR_ROWS = (
    ("energy_mae_mev_per_atom", "energy MAE (meV/atom)"),
    ("energy_rmse_mev_per_atom", "energy RMSE (meV/atom)"),
    ("aligned_energy_mae_mev_per_atom", "energy MAE, E0-aligned (meV/atom)"),
    ("force_mae_mev_per_a", "force MAE (meV/Å)"),
    ("force_rmse_mev_per_a", "force RMSE (meV/Å)"),
    ("stress_mae_gpa", "stress MAE (GPa)"),
    ("stress_rmse_gpa", "stress RMSE (GPa)"),
)
#: Task properties left out of the verdict: absolute energies differ between DFT codes and functionals by eV/atom, so
#: "closest to the reference" there rewards the E0 shift, not the physics (the tables still show them).
ABSOLUTE_ENERGY_PROPERTIES = ("energy_per_atom", "energy", "energy_per_atom_reference")

VERDICT_METRICS = ("energy_mae_mev_per_atom", "aligned_energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa")


def verdict(results: dict) -> list[str]:
    """Plain-text verdict lines (the report escapes and lists them)."""
    lines = []
    errors = results.get("errors", {})
    models = {m["label"]: m for m in results.get("models", [])}
    names = dict(ERROR_ROWS)
    for key in VERDICT_METRICS:
        values = {label: m.get(key) for label, m in errors.items() if _number(m.get(key))}
        if not values:
            continue
        best = min(values, key=values.get)
        line = f"{names[key]}: best {best} {values[best]:.3g}"
        comparisons = []
        for label, model in models.items():
            if model.get("kind") != "zero-shot" or label not in values:
                continue
            tuned = {lab: values[lab] for lab, m in models.items() if m.get("base") == label and lab in values}
            if not tuned:
                continue
            top = min(tuned, key=tuned.get)
            comparisons.append(f"{top} {tuned[top]:.3g} vs zero-shot {label} {values[label]:.3g} ({_ratio(values[label], tuned[top])})")
        tuned_all = {lab: values[lab] for lab, m in models.items() if m.get("kind") == "fine-tuned" and lab in values}
        if tuned_all:
            top = min(tuned_all, key=tuned_all.get)
            for label, model in models.items():
                if model.get("baseline") and label in values:  # would a model from scratch / a regression do as well?
                    comparisons.append(f"baseline {label} {values[label]:.3g} vs fine-tuned {top} {tuned_all[top]:.3g} "
                                       f"({_ratio(tuned_all[top], values[label])})")
        if comparisons:
            line += "; " + "; ".join(comparisons)
        lines.append(line)
    for task, table in results.get("tasks", {}).items():
        reference = table.get("reference")
        if not reference:
            continue
        # one verdict per property: deviations of different properties (GPa, Å) are never averaged together
        by_property: dict[str, dict[str, list[float]]] = {}
        for row in table.get("rows", []):
            if not _number(row.get(reference)) or row.get("id") == SUMMARY_ID:
                continue  # the task's own MAE row would count every model twice
            name = str(row.get("property") or task)
            if name in ABSOLUTE_ENERGY_PROPERTIES:
                continue
            for label in models:
                if _number(row.get(label)):
                    by_property.setdefault(name, {}).setdefault(label, []).append(abs(row[label] - row[reference]))
        for name, deviations in by_property.items():
            mean = {label: sum(v) / len(v) for label, v in deviations.items()}
            best = min(mean, key=mean.get)
            title = task if name == task else f"{task} {name}"
            line = (f"{title}: closest to {reference}: {best} (mean |deviation| {mean[best]:.3g} over "
                    f"{len(deviations[best])} value(s))")
            zero = [lab for lab in mean if models.get(lab, {}).get("kind") == "zero-shot"]
            if zero and best not in zero:
                best_zero = min(zero, key=mean.get)
                line += f"; best zero-shot {best_zero} {mean[best_zero]:.3g} ({_ratio(mean[best_zero], mean[best])})"
            lines.append(line)
    from atomtune.report.phase_diagram import verdict_lines

    lines += verdict_lines(results.get("phase_diagram", {}))
    failures = results.get("failures", [])
    if failures:
        lines.append(f"{len(failures)} step(s) failed or were skipped: see Failures.")
    return lines


def _ratio(before: float, after: float) -> str:
    if after > 0 and before >= after:
        return f"{before / after:.1f}× lower"
    if before > 0 and after > before:
        return f"{after / before:.1f}× higher"
    return "equal"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
