"""One property-task run as a typed spec: which task, its validated settings, and how it runs on a calculator.

``atomtune bench`` and a campaign's task steps both build a :class:`TaskRun` and call :meth:`TaskRun.run` on the reference
(a :class:`~atomtune.data.label.CalculatorSpec`, built per structure because a DFT calculator's k-points and spin depend
on the cell) or on a model (a Potential, so relax-based tasks batch). Settings are checked against the task's own
``Settings`` dataclass (names and types) before any work starts; the defaults live only there.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ase import Atoms
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from atomtune.exceptions import AtomtuneError


class TaskSettingsError(AtomtuneError):
    """Task settings with an unknown name or a value of the wrong type."""


class TaskRun(BaseModel):
    """``task``: a name in :data:`atomtune.tasks.TASKS`; ``settings``: fields of that task's ``Settings`` (validated
    against the field types; a list is accepted for a tuple, a quoted number is refused);
    ``limit``: use only the first N structures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    settings: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TaskRun:
        from atomtune.tasks import load_task

        self.task_settings_for(load_task(self.task), self.settings)
        return self

    @staticmethod
    def task_settings_for(module: ModuleType, settings: dict[str, Any]):
        """The task's ``Settings`` object for ``settings``; :class:`TaskSettingsError` names every bad key / value."""
        settings_class = module.Settings
        name = module.__name__.rsplit(".", 1)[-1]
        fields = [field.name for field in dataclasses.fields(settings_class)]
        problems = []
        for key in settings:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                problems.append(f"unknown {name} setting '{key}'.{hint} Valid: {', '.join(fields)}")
        defaults = {field.name: field.default for field in dataclasses.fields(settings_class)}
        hints = typing.get_type_hints(settings_class)
        for key, value in settings.items():
            default = defaults.get(key)
            # pydantic would turn "0.01" into 0.01; a quoted number in a settings file is a typo worth naming, unless
            # the field also takes words (cluster_expansion's relax: true, false, "volume" or "pressure")
            takes_strings = hints.get(key) is str or str in typing.get_args(hints.get(key))
            if isinstance(value, str) and isinstance(default, (int, float, bool)) and not takes_strings:
                kind = ("true or false" if isinstance(default, bool) else
                        "a whole number" if isinstance(default, int) else "a number")
                problems.append(f"{name} setting '{key}' must be {kind} (like {default!r}), got the string {value!r}")
        if problems:
            raise TaskSettingsError("; ".join(problems) + ".")
        try:
            return TypeAdapter(settings_class).validate_python(dict(settings))
        except ValidationError as error:
            details = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']} (got {item.get('input')!r})"
                for item in error.errors()
            )
            raise TaskSettingsError(f"{name} settings: {details}. `atomtune bench --help` lists each task's settings.")

    def module(self) -> ModuleType:
        from atomtune.tasks import load_task

        return load_task(self.task)

    def task_settings(self):
        """The task's ``Settings`` dataclass with these settings (its own defaults for the rest)."""
        return self.task_settings_for(self.module(), self.settings)

    def fingerprint(self) -> str:
        """A short hash of the task and its resolved settings (every default spelled out), for cache keys."""
        resolved = dataclasses.asdict(self.task_settings())
        payload = json.dumps({"task": self.module().__name__, "settings": resolved, "limit": self.limit},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def select(self, structures: Sequence[Atoms]) -> list[Atoms]:
        """The structures this run uses (the first ``limit``), each with an ``id`` fixed up front."""
        chosen = list(structures)[: self.limit] if self.limit else list(structures)
        for index, atoms in enumerate(chosen):
            atoms.info.setdefault("id", str(index))
        return chosen

    def run(self, structures: Sequence[Atoms], calculator, progress: bool = True) -> list[dict]:
        """Records of the task on ``calculator``: a :class:`~atomtune.data.label.CalculatorSpec` (the reference, one
        calculator built per structure) or a Potential / ASE calculator (one call over all structures)."""
        from atomtune.data.label import CalculatorSpec

        module, settings = self.module(), self.task_settings()
        structures = self.select(structures)
        if isinstance(calculator, CalculatorSpec):
            records = []
            for atoms in structures:
                records.extend(module.run([atoms], calculator.task_calculator(atoms), settings, progress=progress))
            return records
        return module.run(structures, calculator, settings, progress=progress)


__all__ = ["TaskRun", "TaskSettingsError"]
