"""Reading a campaign's ``results.json`` (written by :mod:`atomtune.campaign.assemble`) back for the report.

The file is checked against the shape the report relies on before anything is rendered, so a hand-edited, truncated or
foreign JSON file gives one message naming the file and the place (line and column, or the key path) instead of a
traceback from deep inside the HTML code. The shape is a pydantic model of only what the report reads; every other key
is allowed and passed through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from atomtune.exceptions import AtomtuneError


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Model(_Section):
    label: str
    kind: str | None = None
    base: str | None = None


class _ErrorMetrics(_Section):
    per_element: dict[str, dict] = {}


class _FinetuneRun(_Section):
    e0_shift_ev: dict[str, float] | None = None
    learning_curve_png: str | None = None


class _Scan(_Section):
    rows: list[dict] = []
    plot: str | None = None


class _Task(_Section):
    reference: str | None = None
    rows: list[dict] = []
    missing: list[str] | None = None
    plots: list = []


class _PhaseDiagram(_Task):
    task: str | None = None
    summaries: dict[str, list[dict]] = {}


class _Failure(_Section):
    step: str
    error: str
    skipped_dependants: list[str] | None = None


class _Data(_Section):
    elements: list[str] = []
    sources: list[str] = []
    splits: dict = {}
    label_failures: list[str] | None = None
    plots: list = []


class ResultsFile(_Section):
    """What the report reads from ``results.json`` (types only; other keys pass through)."""

    name: str = ""
    title: str | None = None
    wall_time_s: float | None = None
    data: _Data | None = None
    models: list[_Model] = []
    errors: dict[str, _ErrorMetrics] = {}
    error_plots: dict[str, str] = {}
    finetune: dict[str, _FinetuneRun] = {}
    scans: dict[str, _Scan] = {}
    tasks: dict[str, _Task] = {}
    baselines: dict[str, _Section] = {}
    phase_diagram: dict[str, _PhaseDiagram] = {}
    failures: list[_Failure] = []


def read_results(path: str | Path) -> dict:
    """The results dict in ``path``; :class:`AtomtuneError` naming the file and what is wrong when it is missing, empty,
    not UTF-8, not JSON (with line and column) or not shaped like a campaign's results (with the key path)."""
    path = Path(path)
    hint = "`atomtune run campaign.yaml` writes results.json; re-run it (finished steps come from its cache)."
    if not path.is_file():
        raise AtomtuneError(f"{path}: not found (or not a file). {hint}")
    raw = path.read_bytes()
    if not raw.strip():
        raise AtomtuneError(f"{path}: the file is empty. {hint}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AtomtuneError(f"{path}: not a UTF-8 text file (byte {error.start}); not a results.json. {hint}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        raise AtomtuneError(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}. The file is truncated or "
            f"was edited by hand. {hint}"
        ) from None
    if not isinstance(results, dict):
        raise AtomtuneError(
            f"{path}: holds a JSON {type(results).__name__}, but a results.json is a JSON object (name, models, errors, "
            f"tasks, …). {hint}"
        )
    try:
        ResultsFile.model_validate(results)
    except ValidationError as error:
        first = error.errors()[0]
        where = " → ".join(repr(part) for part in first["loc"])
        value = json.dumps(first.get("input"), default=str)
        value = value if len(value) <= 80 else value[:77] + "..."
        more = f" (and {error.error_count() - 1} more problem(s))" if error.error_count() > 1 else ""
        raise AtomtuneError(
            f"{path}: not shaped like a campaign's results.json at {where}: {first['msg']} (found {value}){more}. {hint}"
        ) from None
    return results
