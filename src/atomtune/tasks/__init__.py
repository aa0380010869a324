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
import math
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


__all__ = ["TASKS", "as_calculator", "json_ready", "load_task", "run_each", "structure_label"]
