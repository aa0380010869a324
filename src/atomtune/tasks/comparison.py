"""Side-by-side tables and bar/parity plots of per-structure scalar properties, shared by the tasks' compare/plot.

A task's records carry properties under unit-named keys (``bulk_modulus_gpa``, ``energy_per_atom`` …); these helpers put
the same property of every model next to each other, with the difference to the reference model when one is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atomtune.files import safe_file_name

#: Suffix of a property name → the unit shown on axes (ASE defaults for names without a suffix are listed by name).
UNIT_SUFFIXES = (
    ("_mev_per_atom", "meV/atom"),
    ("_ev_per_atom_per_ps", "eV/atom/ps"),
    ("_per_atom", "eV/atom"),
    ("_gpa", "GPa"),
    ("_j_per_m2", "J/m²"),
    ("_g_per_cm3", "g/cm³"),
    ("_k", "K"),
    ("_ps", "ps"),
    ("_deg", "°"),
)
NAMED_UNITS = {
    "lattice_constant": "Å",
    "volume_per_atom": "Å³/atom",
    "min_interatomic_distance": "Å",
    "max_force": "eV/Å",
    "energy": "eV",
}

SUMMARY_ID = "MAE"


def unit_of(property_name: str) -> str:
    """The unit of a property from its name (``""`` when dimensionless or unknown)."""
    if property_name in NAMED_UNITS:
        return NAMED_UNITS[property_name]
    for suffix, unit in UNIT_SUFFIXES:
        if property_name.endswith(suffix):
            return unit
    return ""


def records_by_id(records: Sequence[dict]) -> dict[str, dict]:
    return {str(record["id"]): record for record in records}


def ordered_ids(results: dict[str, list[dict]]) -> list[str]:
    """Record ids in first-seen order over all models (a structure that failed for one model still gets its row)."""
    seen: dict[str, None] = {}
    for records in results.values():
        for record in records:
            seen.setdefault(str(record["id"]), None)
    return list(seen)


def difference_column(model: str, reference: str) -> str:
    return f"{model} − {reference}"


def compare_properties(
    results: dict[str, list[dict]], properties: Sequence[str], reference: str | None = None
) -> list[dict]:
    """One row per (structure id, property): ``{"id", "property", <model>: value, …}``.

    With ``reference`` (a key of ``results``) each other model also gets a ``"<model> − <reference>"`` column, and each
    property ends with a ``"MAE"`` row holding every model's mean absolute difference to the reference over the
    structures both computed. Failed records give ``None`` and their message in an ``"error"`` column.
    """
    if reference is not None and reference not in results:
        raise KeyError(f"reference {reference!r} is not one of the compared models {list(results)}")
    indexed = {model: records_by_id(records) for model, records in results.items()}
    others = [model for model in results if model != reference]
    rows = []
    for property_name in properties:
        differences: dict[str, list[float]] = {model: [] for model in others}
        for structure in ordered_ids(results):
            row: dict = {"id": structure, "property": property_name}
            errors = []
            for model, records in indexed.items():
                record = records.get(structure, {})
                row[model] = _scalar(record.get(property_name))
                if record.get("error"):
                    errors.append(f"{model}: {record['error']}")
            if all(row[model] is None for model in results):
                continue
            if reference is not None:
                for model in others:
                    if row[model] is not None and row[reference] is not None:
                        difference = row[model] - row[reference]
                        differences[model].append(difference)
                        row[difference_column(model, reference)] = difference
                    else:
                        row[difference_column(model, reference)] = None
            if errors:
                row["error"] = "; ".join(errors)
            rows.append(row)
        if reference is not None and any(differences.values()):
            summary: dict = {"id": SUMMARY_ID, "property": property_name, reference: 0.0}
            for model in others:
                values = differences[model]
                summary[model] = float(np.mean(np.abs(values))) if values else None
            rows.append(summary)
    return rows


def plot_properties(
    results: dict[str, list[dict]], properties: Sequence[str], out_dir: Path, task: str
) -> list[Path]:
    """One PNG per property: grouped bars (structure × model) for a few structures, a parity plot of every model against
    the first one for many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = ordered_ids(results)
    indexed = {model: records_by_id(records) for model, records in results.items()}
    paths = []
    for property_name in properties:
        values = {
            model: np.array([_nan(records.get(i, {}).get(property_name)) for i in ids], dtype=float)
            for model, records in indexed.items()
        }
        if not any(np.isfinite(v).any() for v in values.values()):
            continue
        unit = unit_of(property_name)
        label = property_name.replace("_", " ") + (f" ({unit})" if unit else "")
        if len(ids) <= 30 or len(results) == 1:
            figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(ids) * len(results) + 1.5), 3.8))
            width = 0.8 / len(results)
            positions = np.arange(len(ids))
            for k, (model, series) in enumerate(values.items()):
                axis.bar(positions + (k - (len(results) - 1) / 2) * width, series, width, label=model)
            crowded = len(ids) > 4
            axis.set_xticks(positions, ids, rotation=45 if crowded else 0, ha="right" if crowded else "center")
            axis.set_ylabel(label)
            axis.legend(fontsize="small")
        else:
            first = next(iter(values))
            figure, axis = plt.subplots(figsize=(4.5, 4.2))
            for model, series in values.items():
                if model != first:
                    axis.scatter(values[first], series, s=8, alpha=0.7, label=model)
            finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
            axis.plot([finite.min(), finite.max()], [finite.min(), finite.max()], "k--", lw=0.8)
            axis.set_xlabel(f"{first}: {label}")
            axis.set_ylabel(label)
            axis.legend(fontsize="small")
        axis.set_title(f"{task}: {property_name}")
        figure.tight_layout()
        path = out_dir / f"{task}_{property_name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


safe_filename = safe_file_name  # the one definition lives in atomtune.files; tasks import it from here


def _scalar(value):
    if value is None or isinstance(value, (list, dict, str)):
        return None
    if isinstance(value, bool):
        return float(value)
    return float(value)


def _nan(value) -> float:
    scalar = _scalar(value)
    return np.nan if scalar is None else scalar
