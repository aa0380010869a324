"""Tasks: the properties atomtune benchmarks, each one function of (structures, calculator, settings) → records.

The last box of the flow before the report. Every module here follows one shape (``Settings`` dataclass; ``run`` → one
JSON-serialisable record per structure with ``"id"`` and unit-named properties, and a record with ``"error"`` for a
structure that fails instead of dropping it; ``compare`` → rows of a side-by-side table; ``plot`` → PNG paths). The
reference (DFT, EMT, any ASE calculator) and each model (``potential.calculator()``, or the Potential itself where a
task batches) are interchangeable inputs: "DFT vs zero-shot vs fine-tuned" is the same call three times.

:data:`TASKS` maps a task name to its module; :func:`load_task` imports one. The pieces every task shares (record ids,
the per-structure loop that turns a failure into an error record, JSON-safe values) are defined here, beside the shape
they belong to.
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
from ase import Atoms

from atomtune.exceptions import AtomtuneError

#: task name → module (``atomtune bench --task NAME``).
TASKS: dict[str, str] = {
    "errors": "atomtune.tasks.errors",
    "relax": "atomtune.tasks.relax",
    "substitution": "atomtune.tasks.substitution",
    "eos": "atomtune.tasks.eos",
    "elastic": "atomtune.tasks.elastic",
    "phonons": "atomtune.tasks.phonons",
    "md": "atomtune.tasks.md",
    "surface": "atomtune.tasks.surface",
    "vacancy": "atomtune.tasks.vacancy",
    "stacking_fault": "atomtune.tasks.stacking_fault",
    "adsorption": "atomtune.tasks.adsorption",
    "composition_scan": "atomtune.tasks.composition_scan",
    "grain_boundary": "atomtune.tasks.grain_boundary",
    "cluster_expansion": "atomtune.tasks.cluster_expansion",
    "monte_carlo": "atomtune.tasks.monte_carlo",
}


def load_task(name: str) -> ModuleType:
    """The module of task ``name`` (``run``, ``compare``, ``plot``, ``Settings``)."""
    key = name.strip().lower().replace("-", "_")
    if key not in TASKS:
        close = difflib.get_close_matches(key, TASKS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise AtomtuneError(f"unknown task {name!r}.{hint} Tasks: {', '.join(TASKS)}.")
    try:
        return importlib.import_module(TASKS[key])
    except ModuleNotFoundError as error:
        if error.name == TASKS[key]:
            raise AtomtuneError(f"task {key!r} is listed but its module {TASKS[key]} is not installed yet.") from None
        raise


def settings_fields(name: str) -> list[dict]:
    """Each setting of task ``name``: ``{"name", "type", "default", "description"}``, from its ``Settings`` dataclass.

    Names, types and defaults are the dataclass's own fields (``default_factory`` called), so they cannot drift from what
    the task runs with; a description is the part of the ``Settings`` docstring that defines the field: the text after
    the field's name (in double backquotes, then a colon) up to the next field's definition; fields named together
    before one colon share it, a field named and followed by a semicolon has none.
    """
    from dataclasses import MISSING, fields

    settings_class = load_task(name).Settings
    entries = []
    for item in fields(settings_class):
        if item.default is not MISSING:
            default = item.default
        elif item.default_factory is not MISSING:
            default = item.default_factory()
        else:
            default = MISSING
        entries.append({"name": item.name, "type": str(item.type), "default": default})
    descriptions = _field_descriptions(settings_class.__doc__ or "", [entry["name"] for entry in entries])
    for entry in entries:
        entry["description"] = descriptions.get(entry["name"], "")
    return entries


def settings_help(name: str, descriptions: bool = True) -> str:
    """Plain-text help for task ``name``'s settings: ``name = default (type)`` per field as JSON values (what
    ``atomtune bench --settings`` takes), each followed by its description unless ``descriptions`` is False."""
    lines = [f"{load_task(name).__name__.rsplit('.', 1)[-1]} settings (--settings '{{\"name\": value, …}}'):"]
    for entry in settings_fields(name):
        lines.append(f"  {entry['name']} = {_as_json(entry['default'])}  ({entry['type']})")
        if descriptions and entry["description"]:
            lines.extend(f"      {line}" for line in textwrap.wrap(entry["description"], 100))
    return "\n".join(lines)


def settings_overview(tasks: Sequence[str] | None = None) -> str:
    """One paragraph per task listing its settings with their defaults (JSON), for ``atomtune bench --help``; paragraphs
    are separated by blank lines (typer/rich keeps them apart)."""
    paragraphs = ["Task settings and their defaults (JSON; change them with --settings '{\"fmax\": 0.02}'):"]
    for name in tasks or TASKS:
        values = ", ".join(f"{entry['name']}={_as_json(entry['default'])}" for entry in settings_fields(name))
        paragraphs.append(f"{name}: {values}")
    return "\n\n".join(paragraphs)


def _as_json(value) -> str:
    from dataclasses import MISSING

    if value is MISSING:
        return "(required)"
    try:
        return json.dumps(json_ready(value), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


#: Where a Settings docstring defines a field: its double-backquoted name followed by a colon (after an optional
#: parenthesis), or starting a clause (at the start, after ". " or "; ", or after another field in a list).
_DEFINITION = (
    r"(?:``{name}``(?=\s*(?:\([^)]*\))?\s*:)|(?:(?<=^)|(?<=[.;]\s)|(?<=\),\s)|(?<=``,\s)|(?<=``\s/\s))``{name}``)"
)


def _field_descriptions(docstring: str, names: Sequence[str]) -> dict[str, str]:
    """Field → its description in a Settings docstring (see :func:`settings_fields`). Hand-written: the docstrings are
    free prose shared by the source and the help, and no docstring library splits prose by inline-code names."""
    text = " ".join(docstring.split())
    starts: list[tuple[int, int, str]] = []  # (start, end of the name, field)
    for name in names:
        match = re.search(_DEFINITION.format(name=re.escape(name)), text)
        if match:
            starts.append((match.start(), match.end(), name))
    starts.sort()
    segments = {}
    for k, (_, end, name) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(text)
        segments[name] = text[end:stop]
    descriptions: dict[str, str] = {}
    pending: list[tuple[str, str]] = []  # fields listed before the shared description: (name, own parenthesis)
    for _, _, name in starts:
        segment = segments[name].strip()
        parenthesis = re.match(r"\([^)]*\)", segment)
        own = parenthesis.group(0) if parenthesis else ""
        rest = segment[len(own):].strip()
        if rest.startswith(";") or not rest:  # "``a``; ``b``: …": a is named without a description
            descriptions[name], pending = _plain(own), []
            continue
        rest = re.sub(r"^(?:[:,/]|\band\b|\bor\b|\s)+", "", rest)
        rest = re.sub(r"[;,/]\s*(?:and|or)?\s*$", "", rest).strip()
        if not rest:  # "``a``, ``b``: …" or "``a`` / ``b``: …": a shares b's description
            pending.append((name, own))
            continue
        descriptions[name] = _plain(f"{own} {rest}".strip())
        for waiting, waiting_own in pending:
            descriptions[waiting] = _plain(f"{waiting_own} {rest}".strip())
        pending = []
    for name in names:  # mentioned only inside another field's description: point there
        if name not in descriptions:
            owner = next((other for other, segment in segments.items() if f"``{name}``" in segment), None)
            if owner is not None:
                descriptions[name] = f"see {owner}"
    return descriptions


def _plain(text: str) -> str:
    """Docstring markup removed (````x```` → x, :class:`X` → X)."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def structure_label(atoms: Atoms, index: int) -> str:
    """The id a record carries: ``atoms.info["id"]`` when set, else the structure's index in the input."""
    return str(atoms.info.get("id", index))


def as_calculator(calculator):
    """An ASE calculator for ``calculator``: a Potential gives its ``calculator()``; anything else is used as it is."""
    from atomtune.models.base import Potential

    return calculator.calculator() if isinstance(calculator, Potential) else calculator


def error_message(error: BaseException) -> str:
    """``"ErrorType: message"`` for an error record (AtomtuneError messages already say what to do)."""
    if isinstance(error, AtomtuneError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_each(
    structures: Sequence[Atoms],
    compute: Callable[[Atoms, str], dict | list[dict]],
    description: str,
    progress: bool = True,
) -> list[dict]:
    """Call ``compute(copy_of_atoms, id)`` for each structure; collect its record(s).

    A structure whose ``compute`` raises gives ``{"id": ..., "formula": ..., "error": "..."}`` and the loop goes on: one
    bad structure (an element the model lacks, an SCF that does not converge) never stops the others.
    """
    structures = list(structures)
    iterator = enumerate(structures)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(structures), desc=description, unit="structure")
    records: list[dict] = []
    for index, atoms in iterator:
        label = structure_label(atoms, index)
        try:
            produced = compute(atoms.copy(), label)
        except Exception as error:  # any failure of one structure becomes its record
            produced = {"id": label, "formula": atoms.get_chemical_formula(), "error": error_message(error)}
        records.extend(json_ready(produced) if isinstance(produced, list) else [json_ready(produced)])
    return records


def json_ready(value):
    """``value`` with numpy scalars/arrays turned into Python floats/lists and non-finite floats into ``None``."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


__all__ = [
    "TASKS",
    "as_calculator",
    "json_ready",
    "load_task",
    "run_each",
    "settings_fields",
    "settings_help",
    "settings_overview",
    "structure_label",
]
