"""The campaign report: one self-contained HTML file (plots embedded), verdict first, then one section per step.

Input is the ``results.json`` dict assembled by :mod:`atomtune.campaign.assemble`; every section is optional and a
failed step appears in the failures section instead of silently missing. No network resources: images are data URIs,
styles inline, no JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from atomtune.report.summary import ERROR_ROWS, verdict

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1.2em 2em;
color:#1d2330;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dde6;padding-bottom:.2em;margin-top:1.8em}
h3{margin-bottom:.3em}.meta{color:#5b6475;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.88em}
th,td{border:1px solid #d8dde6;padding:.25em .6em;text-align:right}th{background:#f1f4f9}
td.text,th.text{text-align:left}td.best{background:#dff3e4;font-weight:600}
.verdict{background:#f6f9ff;border-left:4px solid #3d6fd8;padding:.6em 1.2em;margin:1em 0}
.verdict li{margin:.2em 0}.failure{background:#fff3f1;border-left:4px solid #d8543d;padding:.4em 1em;margin:.4em 0}
figure{display:inline-block;margin:.4em .6em .4em 0;vertical-align:top}figure img{max-width:540px;border:1px solid #e3e7ee}
figcaption{font-size:.8em;color:#5b6475}
"""


def render_report(results: dict, out_path: Path) -> Path:
    """Write the HTML report for ``results`` to ``out_path`` and return the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    title = results.get("title") or results.get("name", "atomtune campaign")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>campaign <b>{_e(results.get('name', ''))}</b> · atomtune {_e(results.get('atomtune_version', ''))}"
        f" · {_e(results.get('machine', ''))} · created {_e(results.get('created', ''))}"
        + (f" · wall time {results['wall_time_s'] / 60:.1f} min" if results.get("wall_time_s") else "")
        + "</p>",
        _summary_section(results),
        _data_section(results.get("data")),
        _errors_section(results),
        _finetune_section(results.get("finetune", {})),
        _baselines_section(results.get("baselines", {})),
        _scans_section(results.get("scans", {})),
        _active_learning_section(results.get("active_learning", {})),
        _tasks_section(results.get("tasks", {}), results),
        _phase_diagram_section(results),
        _failures_section(results.get("failures", [])),
        "</body></html>",
    ]
    out_path.write_text("\n".join(part for part in parts if part))
    return out_path


def _summary_section(results: dict) -> str:
    lines = verdict(results)
    if not lines:
        lines = ["No step finished with results to compare yet; see the failures below."]
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f"<section id='summary'><h2>Summary</h2><div class='verdict'><ul>{items}</ul></div></section>"


def _data_section(data: dict | None) -> str:
    if not data:
        return ""
    rows = [
        ("structures", data.get("n_structures")),
        ("atoms", data.get("n_atoms")),
        ("elements", " ".join(data.get("elements", []))),
        ("sources", ", ".join(data.get("sources", []))),
        ("split", ", ".join(f"{k} {v}" for k, v in data.get("splits", {}).items())
         + (f" (by {data['split_by']})" if data.get("split_by") else "")),
    ]
    table = "<table>" + "".join(f"<tr><th class='text'>{_e(k)}</th><td class='text'>{_e(v)}</td></tr>" for k, v in rows)
    table += "</table>"
    failures = data.get("label_failures") or []
    note = f"<p class='failure'>{len(failures)} structure(s) failed labelling: {_e('; '.join(failures[:5]))}</p>" if failures else ""
    return f"<section id='data'><h2>Data</h2>{table}{note}{_figures(data.get('plots', []))}</section>"


def _errors_section(results: dict) -> str:
    errors = results.get("errors", {})
    if not errors:
        return ""
    kinds = {m["label"]: m.get("kind", "") for m in results.get("models", [])}
    labels = list(errors)
    header = "<tr><th class='text'>metric</th>" + "".join(
        f"<th>{_e(label)}<br><span class='meta'>{_e(kinds.get(label, ''))}</span></th>" for label in labels
    ) + "</tr>"
    body = []
    for key, name in ERROR_ROWS:
        values = [errors[label].get(key) for label in labels]
        if all(v is None for v in values):
            continue
        body.append(_row(name, values, lower_is_better=True))
    elements = sorted({e for m in errors.values() for e in m.get("per_element", {})})
    for element in elements:
        values = [errors[label].get("per_element", {}).get(element, {}).get("force_mae_mev_per_a") for label in labels]
        body.append(_row(f"force MAE {element} (meV/Å)", values, lower_is_better=True))
    note = ""
    any_metrics = next(iter(errors.values()))
    if "aligned_note" in any_metrics:
        note = f"<p class='meta'>E0-aligned rows: {_e(any_metrics['aligned_note'])}.</p>"
    table = f"<table>{header}{''.join(body)}</table>"
    plots = _figures(list(results.get("error_plots", {}).values()))
    return f"<section id='errors'><h2>Errors on the test set: zero-shot vs fine-tuned</h2>{table}{note}{plots}</section>"


def _finetune_section(finetune: dict) -> str:
    if not finetune:
        return ""
    columns = [("strategy", "strategy"), ("epochs", "epochs"), ("trainable_parameters", "trainable params"),
               ("total_parameters", "total params"), ("wall_time_s", "wall time (s)")]
    header = "<tr><th class='text'>model</th>" + "".join(f"<th>{_e(name)}</th>" for _, name in columns)
    header += "<th class='text'>E0 shift (eV/atom)</th></tr>"
    rows = []
    plots = []
    for label, run in finetune.items():
        cells = "".join(f"<td>{_fmt(run.get(key))}</td>" for key, _ in columns)
        shift = ", ".join(f"{k} {v:+.3f}" for k, v in (run.get("e0_shift_ev") or {}).items())
        rows.append(f"<tr><td class='text'>{_e(label)}</td>{cells}<td class='text'>{_e(shift)}</td></tr>")
        if run.get("learning_curve_png"):
            plots.append((run["learning_curve_png"], f"learning curve: {label}"))
    table = f"<table>{header}{''.join(rows)}</table>"
    return f"<section id='finetune'><h2>Fine-tuning</h2>{table}{_figures(plots)}</section>"


def _scans_section(scans: dict) -> str:
    if not scans:
        return ""
    parts = ["<section id='scans'><h2>Strategy scans</h2>"]
    for name, scan in scans.items():
        rows = scan.get("rows", [])
        keys = [k for k in rows[0] if k not in ("label",)] if rows else []
        header = "<tr>" + "".join(f"<th>{_e(k)}</th>" for k in keys) + "</tr>"
        body = "".join("<tr>" + "".join(f"<td>{_fmt(row.get(k))}</td>" for k in keys) + "</tr>" for row in rows)
        parts.append(f"<h3>{_e(name)}</h3><table>{header}{body}</table>{_figures([scan.get('plot')])}")
    parts.append("</section>")
    return "".join(parts)


def _active_learning_section(loops: dict) -> str:
    """One block per active-learning loop (the learn package's own section: iterations, stability, plots)."""
    if not loops:
        return ""
    from pathlib import Path as _Path

    from atomtune.learn.report import section_html

    parts = ["<section id='active-learning'><h2>Active learning</h2>"]
    for label, loop in loops.items():
        parts.append(f"<h3>{_e(label)}</h3>")
        parts.append(section_html(loop["result"], {name: _Path(path) for name, path in loop.get("plots", {}).items()}))
    parts.append("</section>")
    return "".join(parts)


def _tasks_section(tasks: dict, results: dict) -> str:
    if not tasks:
        return ""
    labels = [m["label"] for m in results.get("models", [])]
    parts = ["<section id='tasks'><h2>Property tasks</h2>"]
    for name, task in tasks.items():
        reference = task.get("reference")
        missing = task.get("missing") or []
        note = f"<p class='failure'>no result from: {_e(', '.join(missing))} (see failures)</p>" if missing else ""
        ref_note = f"<p class='meta'>reference: {_e(reference)}; highlighted: closest to it.</p>" if reference else ""
        parts.append(
            f"<div id='task-{_e(name)}'><h3>{_e(name)}</h3>{_task_table(task, labels)}"
            f"{ref_note}{note}{_figures(task.get('plots', []))}</div>"
        )
    parts.append("</section>")
    return "".join(parts)


def _task_table(task: dict, labels: list[str]) -> str:
    """A comparison's rows as a table: text columns, then the reference and one column per model (closest highlighted)."""
    reference = task.get("reference")
    rows = task.get("rows", [])
    numeric = [c for c in _columns(rows) if c == reference or c in labels]
    text = [c for c in _columns(rows) if c not in numeric and not c.startswith("Δ") and "minus" not in c]
    header = "".join(f"<th class='text'>{_e(c)}</th>" for c in text)
    header += "".join(f"<th>{_e(c)}{' (reference)' if c == reference else ''}</th>" for c in numeric)
    body = []
    for row in rows:
        cells = "".join(f"<td class='text'>{_e(_fmt(row.get(c)))}</td>" for c in text)
        best = _closest(row, numeric, reference)
        for c in numeric:
            css = " class='best'" if c == best else ""
            cells += f"<td{css}>{_fmt(row.get(c))}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def _phase_diagram_section(results: dict) -> str:
    from atomtune.report.phase_diagram import section_html

    labels = [m["label"] for m in results.get("models", [])]
    return section_html(results.get("phase_diagram", {}), _figures, lambda entry: _task_table(entry, labels))


def _baselines_section(baselines: dict) -> str:
    """Each baseline trained on the campaign's splits: its kind, budget and held-out errors."""
    if not baselines:
        return ""
    header = ("<tr><th class='text'>baseline</th><th class='text'>kind</th><th>train structures</th>"
              "<th>valid structures</th><th>epochs run (kept)</th><th>training time (s)</th>"
              "<th>valid energy MAE (meV/atom)</th><th>test energy MAE (meV/atom)</th>"
              "<th>test force MAE (meV/Å)</th><th class='text'>note</th></tr>")
    rows = []
    for label, run in baselines.items():
        epochs = "–" if run.get("epochs_run") is None else f"{run['epochs_run']} ({_fmt(run.get('best_epoch'))})"
        valid, test = run.get("valid_errors") or {}, run.get("test_errors") or {}
        rows.append(
            f"<tr><td class='text'>{_e(label)}</td><td class='text'>{_e(run.get('kind', ''))}</td>"
            f"<td>{_fmt(run.get('n_train'))}</td><td>{_fmt(run.get('n_valid'))}</td><td>{_e(epochs)}</td>"
            f"<td>{_fmt(run.get('train_seconds'))}</td><td>{_fmt(valid.get('energy_mae_mev_per_atom'))}</td>"
            f"<td>{_fmt(test.get('energy_mae_mev_per_atom'))}</td><td>{_fmt(test.get('force_mae_mev_per_a'))}</td>"
            f"<td class='text'>{_e(run.get('note') or '')}</td></tr>"
        )
    note = ("<p class='meta'>Trained on the campaign's train split (validated on valid, scored on test), with the "
            "budget recorded; a from-scratch model is then a column of every table like the fine-tuned ones.</p>")
    return f"<section id='baselines'><h2>Baselines</h2><table>{header}{''.join(rows)}</table>{note}</section>"


def _failures_section(failures: list[dict]) -> str:
    if not failures:
        return "<section id='failures'><h2>Failures</h2><p>None: every step finished.</p></section>"
    items = []
    for failure in failures:
        skipped = failure.get("skipped_dependants") or []
        extra = f"<br><span class='meta'>skipped because of it: {_e(', '.join(skipped))}</span>" if skipped else ""
        items.append(f"<div class='failure'><b>{_e(failure['step'])}</b>: {_e(failure['error'])}{extra}</div>")
    return f"<section id='failures'><h2>Failures</h2>{''.join(items)}</section>"


# -- helpers --------------------------------------------------------------------------------------------------------
def _row(name: str, values: list, lower_is_better: bool) -> str:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    best = (min(finite) if lower_is_better else max(finite)) if len(finite) > 1 else None
    cells = "".join(f"<td{' class=best' if v == best else ''}>{_fmt(v)}</td>" for v in values)
    return f"<tr><td class='text'>{_e(name)}</td>{cells}</tr>"


def _closest(row: dict, columns: list[str], reference: str | None) -> str | None:
    if not reference or not isinstance(row.get(reference), (int, float)):
        return None
    candidates = [(abs(row[c] - row[reference]), c) for c in columns
                  if c != reference and isinstance(row.get(c), (int, float))]
    return min(candidates)[1] if len(candidates) > 1 else None


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _figures(paths) -> str:
    items = []
    for entry in paths or []:
        path, caption = entry if isinstance(entry, tuple) else (entry, Path(str(entry)).stem if entry else "")
        if not path or not Path(path).exists():
            continue
        data = base64.b64encode(Path(path).read_bytes()).decode()
        items.append(f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "<div>" + "".join(items) + "</div>" if items else ""


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _e(value) -> str:
    return html.escape(str(value), quote=True)
