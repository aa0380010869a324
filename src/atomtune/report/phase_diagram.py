"""The report's phase-diagram section: cluster expansion and Monte Carlo results of every model side by side.

A campaign's ``cluster_expansion`` and ``monte_carlo`` comparisons carry, besides their tables and plots, each model's
own summary records (:func:`summaries`): the fitted expansion (cutoffs, CV error, ECIs, the convex hull's ground
states, the cost of each step) and the Monte Carlo run's transition (heat-capacity peak, short-range order, miscibility
gap). This module turns them into the section (:func:`section_html`) and into verdict lines (:func:`verdict_lines`):
the hull per model with its ground states, ECIs and CV error, energy / heat capacity / SRO against temperature (the
task's own plots), and the order–disorder temperature per model.
"""

from __future__ import annotations

import math
from types import ModuleType

# the report's own cell formatting and escaping (html.py imports this module only inside a function: no cycle)
from atomtune.report.html import _e, _fmt

#: Task module names whose comparisons go to this section instead of the property tasks.
PHASE_DIAGRAM_TASKS = ("cluster_expansion", "monte_carlo")
#: Bulky plain-data keys left out of the report's copy of an expansion record (they stay in the step's records.json).
_LEFT_OUT = ("expansion",)


def summaries(module: ModuleType, results: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per label, the summary records of a phase-diagram task: the ``expansion`` records of a cluster expansion
    (without the expansion's plain data) or the ``transition`` records of a Monte Carlo run; error records included."""
    name = module.__name__.rsplit(".", 1)[-1]
    if name == "cluster_expansion":
        pick = module.expansion_records
    elif name == "monte_carlo":
        pick = module.transition_records
    else:
        raise ValueError(f"{name} is not a phase-diagram task ({', '.join(PHASE_DIAGRAM_TASKS)})")
    found = {}
    for label, records in results.items():
        chosen = [{k: v for k, v in record.items() if k not in _LEFT_OUT} for record in pick(records)]
        if name == "monte_carlo":  # the canonical run's composition, from its temperature points
            for record in chosen:
                x = [r["concentration"] for r in records
                     if r.get("kind") == "temperature" and r.get("parent") == record.get("parent")]
                record["concentration"] = sum(x) / len(x) if x else None
        found[label] = chosen
    return found


# -- HTML ---------------------------------------------------------------------------------------------------------
def section_html(phase_diagram: dict, figures, table) -> str:
    """The section for ``results["phase_diagram"]`` (task id → comparison with ``summaries``); ``figures`` and
    ``table`` are the report's own helpers (embedded PNGs; a comparison table)."""
    if not phase_diagram:
        return ""
    parts = ["<section id='phase-diagram'><h2>Phase diagram: cluster expansion and Monte Carlo</h2>"]
    for name, entry in phase_diagram.items():
        task = entry.get("task")
        missing = entry.get("missing") or []
        note = f"<p class='failure'>no result from: {_e(', '.join(missing))} (see failures)</p>" if missing else ""
        if task == "cluster_expansion":
            body = _expansion_tables(entry.get("summaries", {}))
            title = f"Cluster expansion ({name})"
            details = (f"<details><summary>every enumerated structure: mixing energies, the expansion's predictions, "
                       f"distances to the hull</summary>{table(entry)}</details>")
        else:
            body = _transition_table(entry.get("summaries", {}))
            title = f"Monte Carlo ({name})"
            details = ""
        parts.append(f"<div id='phase-{_e(name)}'><h3>{_e(title)}</h3>{body}{note}{figures(entry.get('plots', []))}"
                     f"{details}</div>")
    parts.append("</section>")
    return "".join(parts)


def _expansion_tables(by_label: dict[str, list[dict]]) -> str:
    parents = list(dict.fromkeys(r.get("id") for records in by_label.values() for r in records))
    parts = []
    for parent in parents:
        rows = []
        ecis = []
        for label, records in by_label.items():
            record = next((r for r in records if r.get("id") == parent), None)
            if record is None:
                continue
            if "error" in record:
                rows.append(f"<tr><td class='text'>{_e(label)}</td><td class='text' colspan='9'>failed: "
                            f"{_e(record['error'])}</td></tr>")
                continue
            ground = "; ".join(
                f"{g['formula']} {g['space_group']} (x={g['concentration']:.3g}, "
                f"{_fmt(1000 * g['mixing_energy_per_atom'])} meV/atom)"
                for g in sorted(record.get("ground_states", []), key=lambda g: g["concentration"])
            )
            cost = sum(record.get(key) or 0.0 for key in ("enumerate_seconds", "relax_seconds", "fit_seconds"))
            cutoffs = ", ".join(_fmt(c) for c in record.get("cutoffs", []))
            rows.append(
                f"<tr><td class='text'>{_e(label)}</td><td class='text'>{_e(cutoffs)}</td>"
                f"<td>{_fmt(record.get('cv_rmse_mev_per_atom'))}</td><td>{_fmt(record.get('train_rmse_mev_per_atom'))}</td>"
                f"<td>{record.get('n_nonzero_parameters')}/{record.get('n_parameters')}</td>"
                f"<td>{record.get('n_fitted')}/{record.get('n_enumerated')}</td><td>{_fmt(record.get('n_failed'))}</td>"
                f"<td>{_fmt(record.get('hull_matches_reference'))}</td>"
                f"<td>{_fmt(record.get('hull_energy_rmse_mev_per_atom'))}</td>"
                f"<td class='text'>{_e(ground)}</td><td>{_fmt(cost)}</td></tr>"
            )
            pairs = sorted((e for e in record.get("ecis", []) if e.get("order", 0) >= 2),
                           key=lambda e: (e["order"], e["radius"]))
            listed = "; ".join(f"{_order_name(e['order'])} r={e['radius']:.2f} Å: {1000 * e['eci']:+.2f}"
                               for e in pairs[:12])
            ecis.append(f"<tr><td class='text'>{_e(label)}</td><td class='text'>{_e(listed)}</td></tr>")
        header = ("<tr><th class='text'>model</th><th class='text'>cutoffs (Å)</th><th>CV RMSE (meV/atom)</th>"
                  "<th>train RMSE (meV/atom)</th><th>nonzero / parameters</th><th>fitted / enumerated</th>"
                  "<th>failed</th><th>hull = own energies' hull</th><th>hull RMSE vs own (meV/atom)</th>"
                  "<th class='text'>ground states (expansion's hull)</th><th>cost (s)</th></tr>")
        parts.append(f"<h4>{_e(_structure(parent))}</h4><table>{header}{''.join(rows)}</table>")
        if ecis:
            parts.append("<details><summary>ECIs (meV/atom, parameter / multiplicity; first 12 by order and "
                         "radius)</summary><table><tr><th class='text'>model</th><th class='text'>ECIs</th></tr>"
                         + "".join(ecis) + "</table></details>")
    parts.append("<p class='meta'>Hull = own energies' hull: the expansion's ground states lie at the same "
                 "concentrations as the hull of the model's own (relaxed) mixing energies on the enumerated set; "
                 "cost: enumeration + relaxations + fits.</p>")
    return "".join(parts)


def _transition_table(by_label: dict[str, list[dict]]) -> str:
    header = ("<tr><th class='text'>model</th><th class='text'>structure</th><th class='text'>ensemble</th>"
              "<th>x</th><th>heat-capacity peak (K)</th><th>grid step (K)</th><th>at grid edge</th>"
              "<th class='text'>low-T order (α₁)</th><th>miscibility gap below (K)</th><th>sites</th>"
              "<th>sweeps / T</th><th>time (s)</th><th class='text'>expansion</th></tr>")
    rows = []
    for label, records in by_label.items():
        for record in records:
            if "error" in record:
                rows.append(f"<tr><td class='text'>{_e(label)}</td><td class='text'>{_e(record.get('id', ''))}</td>"
                            f"<td class='text' colspan='11'>failed: {_e(record['error'])}</td></tr>")
                continue
            rows.append(
                f"<tr><td class='text'>{_e(label)}</td><td class='text'>{_e(record.get('parent'))}</td>"
                f"<td class='text'>{_e(record.get('ensemble'))}</td><td>{_fmt(record.get('concentration'))}</td>"
                f"<td>{_fmt(record.get('transition_temperature_k'))}</td><td>{_fmt(record.get('grid_resolution_k'))}</td>"
                f"<td>{_fmt(record.get('peak_at_grid_edge'))}</td><td class='text'>{_e(_fmt(record.get('ordering')))}</td>"
                f"<td>{_fmt(record.get('miscibility_gap_temperature_k'))}</td><td>{_fmt(record.get('n_sites'))}</td>"
                f"<td>{_fmt(record.get('sweeps_per_temperature'))}</td><td>{_fmt(record.get('seconds'))}</td>"
                f"<td class='text'>{_e(record.get('expansion_source', ''))}</td></tr>"
            )
    note = ("<p class='meta'>Canonical runs: the heat-capacity peak on the temperature grid is the order–disorder "
            "temperature when the low-temperature first-shell Warren–Cowley α₁ is negative (ordering), the top of the "
            "miscibility gap at that composition when it is positive (clustering); a peak at the grid edge only bounds "
            "it. Semi-grand-canonical runs: the highest temperature with a two-phase jump in x(Δμ).</p>")
    return f"<table>{header}{''.join(rows)}</table>{note}"


# -- verdict ------------------------------------------------------------------------------------------------------
def verdict_lines(phase_diagram: dict) -> list[str]:
    """Plain-text lines for the report's summary: each model's ground states and CV error, and its transition
    temperature (with the grid step it is known to)."""
    lines = []
    for name, entry in phase_diagram.items():
        by_label = entry.get("summaries", {})
        if entry.get("task") == "cluster_expansion":
            for parent in dict.fromkeys(r.get("id") for records in by_label.values() for r in records):
                parts = []
                for label, records in by_label.items():
                    record = next((r for r in records if r.get("id") == parent and "ground_states" in r), None)
                    if record is None:
                        continue
                    inner = [g for g in record["ground_states"] if 0.0 < g["concentration"] < 1.0]
                    states = ", ".join(f"{g['formula']} {g['space_group']}" for g in inner) or "none (phase separation)"
                    parts.append(f"{label}: {states} (CV {record['cv_rmse_mev_per_atom']:.3g} meV/atom)")
                if parts:
                    lines.append(f"{name} {_structure(parent)}: ordered ground states — " + "; ".join(parts))
        else:
            parts = []
            for label, records in by_label.items():
                for record in records:
                    value = record.get("transition_temperature_k") or record.get("miscibility_gap_temperature_k")
                    if not isinstance(value, (int, float)) or not math.isfinite(value):
                        continue
                    notes = []
                    step = record.get("grid_resolution_k")
                    if isinstance(step, (int, float)) and math.isfinite(step):
                        notes.append(f"grid step {step:.0f} K")
                    if record.get("peak_at_grid_edge"):
                        notes.append("at the grid edge: a bound only")
                    if record.get("ordering"):
                        notes.append(record["ordering"])
                    parts.append(f"{label} {value:.0f} K" + (f" ({', '.join(notes)})" if notes else ""))
            if parts:
                lines.append(f"{name}: transition temperature — " + "; ".join(parts))
    return lines


def _structure(record_id) -> str:
    """The input structure an expansion record belongs to (its id is ``<structure>/expansion``)."""
    return str(record_id).rsplit("/", 1)[0]


def _order_name(order: int) -> str:
    return {2: "pair", 3: "triplet", 4: "quadruplet"}.get(order, f"{order}-body")
