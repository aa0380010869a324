"""The active-learning report: per iteration, labels added, flagged fraction, σ distribution, held-out errors and
calibration; views of the selected structures; MD stability (time to failure at each temperature) before vs after.

``write_report(results, out)`` writes PNGs and a self-contained ``report.html`` (images as data URIs) into the loop's
directory; :func:`section_html` is the same content as one section, for a campaign report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

PLOTS = {
    "progress": "al_progress.png",
    "sigma": "al_sigma.png",
    "stability": "al_md_stability.png",
    "calibration": "al_calibration.png",
}


def write_report(results: dict, out: str | Path, committee=None, test=None) -> Path:
    """Plots and ``report.html`` for a loop's results (``LearnResult.as_dict()``); returns the HTML path."""
    out = Path(out)
    images = plot_all(results, out, committee=committee, test=test)
    body = section_html(results, images)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>atomtune active learning</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1180px;margin:auto;padding:1em 2em;color:#1d2330}"
        "table{border-collapse:collapse;font-size:.88em;margin:.6em 0}th,td{border:1px solid #d8dde6;padding:.25em .6em;"
        "text-align:right}th{background:#f1f4f9}td.text{text-align:left}img{max-width:560px;border:1px solid #e3e7ee;"
        "margin:.3em}</style></head><body><h1>Active learning</h1>" + body + "</body></html>"
    )
    path = out / "report.html"
    path.write_text(page)
    return path


def plot_all(results: dict, out: Path, committee=None, test=None) -> dict[str, Path]:
    """Every plot of the report that the results allow (a missing held-out set leaves its curves out)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    iterations = results["iterations"]
    images: dict[str, Path] = {}
    numbers = [r["iteration"] for r in iterations]

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    axes = figure.subplots(1, 3)
    cumulative = np.cumsum([r["labels_added"] for r in iterations])
    axes[0].plot(numbers, cumulative, "o-", label="labels (cumulative)")
    axes[0].bar(numbers, [r["labels_failed"] for r in iterations], color="tab:red", alpha=0.5, label="failed labels")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("labels")
    axes[0].legend(fontsize=8)
    axes[1].plot(numbers[1:], [r["flagged_fraction"] for r in iterations[1:]], "o-")
    axes[1].set_xlabel("iteration (exploration with the committee of the one before)")
    axes[1].set_ylabel("flagged fraction of explored frames")
    for key, style, name in (("valid_errors", "o-", "validation"), ("test_errors", "s-", "held-out")):
        values = [(r["iteration"], r[key]["forces_rmse"]) for r in iterations if r.get(key)]
        if values:
            axes[2].plot(*zip(*values), style, label=f"{name} force RMSE")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("force RMSE (eV/Å)")
    axes[2].legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    images["progress"] = out / PLOTS["progress"]
    figure.savefig(images["progress"], dpi=110)

    explored = [r for r in iterations if r.get("uncertainty_values")]
    final = results.get("final_check") or {}
    if explored or final.get("uncertainty_values"):
        figure = Figure(figsize=(7, 3.8), layout="constrained")
        axis = figure.subplots()
        data = [r["uncertainty_values"] for r in explored]
        names = [f"it {r['iteration']}" for r in explored]
        if final.get("uncertainty_values"):
            data.append(final["uncertainty_values"])
            names.append("final")
        axis.boxplot(data, showfliers=True)
        axis.set_xticks(range(1, len(names) + 1), names)
        axis.set_yscale("log")
        axis.set_ylabel("flag metric of explored frames")
        axis.set_title("uncertainty of explored frames per iteration")
        images["sigma"] = out / PLOTS["sigma"]
        figure.savefig(images["sigma"], dpi=110)

    stability = stability_table(results)
    if stability:
        figure = Figure(figsize=(7, 3.8), layout="constrained")
        axis = figure.subplots()
        for temperature, row in sorted(stability.items()):
            xs = [k for k in row]
            axis.plot(range(len(xs)), [row[k]["mean_time_ps"] for k in xs], "o-", label=f"{temperature:.0f} K")
            axis.set_xticks(range(len(xs)), xs)
        axis.set_ylabel("mean time survived at T (ps)")
        axis.set_title("MD stability with the committee (explosions end a run)")
        axis.legend(fontsize=8)
        images["stability"] = out / PLOTS["stability"]
        figure.savefig(images["stability"], dpi=110)

    if committee is not None and test:
        from atomtune.uncertainty.calibration import evaluate, plot_calibration

        try:
            images["calibration"] = plot_calibration(evaluate(committee, test), out / PLOTS["calibration"],
                                                     title="last committee on the held-out set")
        except Exception as error:  # a zero-spread committee cannot be plotted; the tables say so
            images.pop("calibration", None)
            (out / "calibration_error.txt").write_text(str(error))

    selected = _selected_structures(out, iterations)
    if selected:
        from atomtune.data.show import plot_examples

        images["selected"] = plot_examples(selected, out / "al_selected.png", n_examples=6)
    return images


def stability_table(results: dict) -> dict[float, dict[str, dict]]:
    """temperature (K) → {"it N" / "final" → runs that reached that temperature's segment of the ramp, how many exploded
    in it, and ``mean_time_ps`` they survived in it (time to failure, or the segment's length when they did not fail)}."""
    table: dict[float, dict[str, dict]] = {}
    sources = [(f"it {r['iteration']}", r.get("md_runs") or []) for r in results["iterations"]]
    final = results.get("final_check") or {}
    if final.get("md_runs"):
        sources.append(("final", final["md_runs"]))
    for name, runs in sources:
        for run in runs:
            temperatures = run["temperatures_k"]
            per_segment = run["steps_requested"] / len(temperatures)
            step_ps = run["time_ps"] / run["steps_completed"] if run["steps_completed"] else 0.0
            for k, temperature in enumerate(temperatures):
                if run["steps_completed"] < k * per_segment or (k and run["steps_completed"] == k * per_segment
                                                                 and run["exploded"]):
                    break  # the run ended before this segment
                done = min(run["steps_completed"] - k * per_segment, per_segment)
                failed_here = run["exploded"] and run["steps_completed"] <= (k + 1) * per_segment
                entry = table.setdefault(temperature, {}).setdefault(name, {"runs": 0, "exploded": 0, "times": []})
                entry["runs"] += 1
                entry["exploded"] += int(failed_here)
                entry["times"].append(done * step_ps)
    for row in table.values():
        for entry in row.values():
            entry["mean_time_ps"] = float(np.mean(entry.pop("times")))
    return table


def section_html(results: dict, images: dict[str, Path] | None = None) -> str:
    """The report section: summary line, per-iteration table, MD stability table, plots (embedded)."""
    iterations = results["iterations"]
    parts = [
        f"<p>Stopped: <b>{_e(results.get('stop_reason', ''))}</b>; {results.get('labels_used', 0)} labels used; "
        f"last committee: <code>{_e(results.get('committee_dir', ''))}</code>.</p>",
        "<table><tr><th>iteration</th><th>labels added</th><th>failed</th><th>label CPU (s)</th><th>flagged / explored"
        "</th><th>train / valid</th><th>valid F RMSE (eV/Å)</th><th>held-out F RMSE (eV/Å)</th><th>held-out E MAE "
        "(meV/atom)</th><th>α forces</th><th>ρ(σ,|ε|) forces held-out (a calibrated σ's)</th><th>miscal. area held-out"
        "</th></tr>",
    ]
    for r in iterations:
        test = r.get("test_errors") or {}
        calibration = (r.get("calibration") or {}).get("forces", {})
        test_calibration = (r.get("test_calibration") or {}).get("forces", {})
        parts.append(
            "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
                r["iteration"], r["labels_added"], r["labels_failed"], f"{r['label_cpu_time_s']:.1f}",
                f"{r['flagged']} / {r['candidates']}", f"{r['train_structures']} / {r['valid_structures']}",
                _f(r.get("valid_errors", {}).get("forces_rmse")), _f(test.get("forces_rmse")),
                _f(test.get("energy_mae_mev_per_atom"), 1), _f(calibration.get("alpha"), 2),
                _f(test_calibration.get("spearman"), 2) + (f" ({test_calibration['spearman_ideal']:.2f})" if
                                                         test_calibration.get("spearman_ideal") is not None else ""),
                _f(test_calibration.get("miscalibration_area"), 3),
            )) + "</tr>"
        )
    parts.append("</table>")
    stability = stability_table(results)
    if stability:
        parts.append("<h3>MD stability per temperature (runs that exploded at T / runs that reached T, mean time "
                     "survived at T)</h3><table><tr><th>T (K)"
                     "</th>" + "".join(f"<th>{_e(k)}</th>" for k in next(iter(stability.values()))) + "</tr>")
        for temperature, row in sorted(stability.items()):
            parts.append(f"<tr><td>{temperature:.0f}</td>" + "".join(
                f"<td>{e['exploded']}/{e['runs']}, {e['mean_time_ps']:.2f} ps</td>" for e in row.values()) + "</tr>")
        parts.append("</table>")
    failures = [f for r in iterations for f in r.get("label_failures", [])]
    if failures:
        parts.append("<h3>Label failures (recorded; the loop went on)</h3><ul>" + "".join(
            f"<li>{_e(f)}</li>" for f in failures) + "</ul>")
    for name, path in (images or {}).items():
        if path and Path(path).exists():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            parts.append(f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{_e(name)}</figcaption></figure>")
    return "\n".join(parts)


def _selected_structures(out: Path, iterations: list[dict]):
    from ase.io import read

    frames = []
    for r in iterations:
        path = out / f"iteration-{r['iteration']:03d}" / "selected.extxyz"
        if path.exists() and path.stat().st_size:
            frames += list(read(path, index=":", format="extxyz"))
    return frames


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _e(text) -> str:
    return html.escape(str(text))
