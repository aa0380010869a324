"""Settings of the active-learning loop: the exploration file (YAML, validated with file:line) and the loop's spec.

``explore.yaml`` says how new structures are found and when one is flagged; the loop's budgets, committee and calculator
come from :class:`LearnSpec` (the ``atomtune learn`` options, or a campaign's ``active_learning`` step). Example::

    explorers:
      - {kind: md, temperatures_k: [600, 1000, 1500], steps: 300, timestep_fs: 2.0, sample_interval: 10}
      - {kind: rattle, count: 8, stdev: 0.08, max_strain: 0.02}
    flag: {metric: relative, threshold: 0.2, epsilon: 0.2}
    selection: {method: fps, per_iteration: 8}
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atomtune.yaml_files import line_of, read_yaml_mapping
from atomtune.exceptions import AtomtuneError
from atomtune.finetune.spec import FinetuneSpec


class ExploreFileError(AtomtuneError):
    """An invalid exploration file (names file:line and the fix)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MDExplorer(Strict):
    """Molecular dynamics with the committee (ASE integrators of :mod:`atomtune.tasks.md`).

    ``temperatures_k``: one segment of ``steps`` steps per temperature, in order (a ramp); velocities are drawn at the
    first (cells of fewer than 4 atoms are repeated to 4 or more). ``ensemble``: nvt | npt (``pressure_gpa``).
    ``sample_interval``: steps between uncertainty checks (each check is a candidate frame). ``hal_tau``: hyperactive
    learning — the MD runs on E − τσ_E with τ = ``hal_tau`` × mean |F| / mean |∂σ_E/∂r| at the start (van der Oord et
    al. 2023); 0 is plain MD. ``stop_on_flag``: end this run at its first flagged frame (the frames after it are where
    the model is already known to be wrong). ``max_energy_change_ev_per_atom``: the run is stopped as exploded when the
    potential energy per atom moves further than this from its start (besides tasks/md.py's minimum-distance, force and
    temperature checks). ``supercell``: repeat the start cell first."""

    kind: Literal["md"] = "md"
    temperatures_k: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [600.0], min_length=1)
    steps: int = Field(default=200, gt=0)
    timestep_fs: float = Field(default=2.0, gt=0)
    ensemble: Literal["nvt", "npt"] = "nvt"
    thermostat: Literal["langevin", "bussi", "nose-hoover"] = "langevin"
    pressure_gpa: float = 0.0
    sample_interval: int = Field(default=10, gt=0)
    hal_tau: float = Field(default=0.0, ge=0)
    stop_on_flag: bool = False
    max_energy_change_ev_per_atom: float = Field(default=1.0, gt=0)
    supercell: list[int] | None = Field(default=None, min_length=3, max_length=3)


class RattleExplorer(Strict):
    """Rattled (Gaussian, ``stdev`` Å) and optionally strained (≤ ``max_strain``) copies of each start structure
    (:mod:`atomtune.data.generate`), ``count`` per structure."""

    kind: Literal["rattle"] = "rattle"
    count: int = Field(default=8, gt=0)
    stdev: float = Field(default=0.05, gt=0)
    max_strain: float = Field(default=0.0, ge=0, lt=0.5)


class FlagSpec(Strict):
    """When a frame is flagged: ``metric`` ``relative`` is max over atoms of σ_F / (|F̄| + ``epsilon``) (ε in eV/Å),
    ``absolute`` is max over atoms of σ_F (eV/Å); flagged when above ``threshold``. σ_F is the committee's calibrated
    per-atom force spread."""

    metric: Literal["relative", "absolute"] = "relative"
    threshold: float = Field(default=0.2, gt=0)
    epsilon: float = Field(default=0.2, gt=0)


class SelectionSpec(Strict):
    """Which flagged frames are labelled: at most ``per_iteration``, picked by ``method`` — ``fps`` (farthest-point
    sampling on the committee's embeddings), ``direct`` (DIRECT), ``uncertainty`` (the most uncertain) or ``random``."""

    method: Literal["fps", "direct", "uncertainty", "random"] = "fps"
    per_iteration: int = Field(default=8, gt=0)


class ExploreSpec(Strict):
    """The exploration file: ``explorers`` (md / rattle), ``flag``, ``selection``, and optionally ``structures`` (a file of
    start structures for exploration; default: the loop's start set)."""

    explorers: list[Annotated[MDExplorer | RattleExplorer, Field(discriminator="kind")]] = Field(min_length=1)
    flag: FlagSpec = Field(default_factory=FlagSpec)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    structures: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> ExploreSpec:
        """Read and validate ``path``; :class:`ExploreFileError` names file:line for each problem."""
        path = Path(path)
        content, root = read_yaml_mapping(path, ExploreFileError, "'explorers', and 'flag', 'selection'")
        try:
            spec = cls.model_validate(content)
        except ValidationError as error:
            raise ExploreFileError(_explain(error, root, path)) from None
        if spec.structures is not None and not Path(spec.structures).is_absolute():
            spec = spec.model_copy(update={"structures": str(path.parent / spec.structures)})
        return spec


class LearnSpec(Strict):
    """One active-learning run.

    ``model``: foundation model (name, file or directory) the committee is fine-tuned from. ``start``: labelled start
    structures (extxyz / db); ``test``: optional held-out labelled structures scored every iteration.
    ``calculator`` / ``calculator_kwargs``: the labeller (``gpaw``, ``emt``, ``module:Class``), through the cached
    labeller of :mod:`atomtune.data.label`. ``budget_labels``: new labels in all (failed labels count: they cost
    the calculator's time). ``max_iterations``; ``wall_time_s``: no new iteration starts after this (None: no limit).
    ``committee_size`` / ``committee_kind``; ``finetune``: each member's (re)training, the same
    :class:`~atomtune.finetune.spec.FinetuneSpec` as ``atomtune finetune`` (its seed is replaced by ``seed``; members
    keep their last epoch's weights, see :mod:`atomtune.learn.loop`); ``valid_fraction``: share of the start set and of each iteration's new labels
    kept for validation and calibration; ``seed``: everything random (MD, bootstrap, selection) derives from it.
    """

    model: str
    start: str
    explore: ExploreSpec
    calculator: str = "gpaw"
    calculator_kwargs: dict = Field(default_factory=dict)
    test: str | None = None
    budget_labels: int = Field(default=40, gt=0)
    max_iterations: int = Field(default=10, gt=0)
    wall_time_s: float | None = Field(default=None, gt=0)
    committee_size: int = 4
    committee_kind: Literal["full", "shallow"] = "full"
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    valid_fraction: float = Field(default=0.2, gt=0, lt=1)
    label_workers: int = Field(default=1, gt=0)
    final_check: bool = True
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def build(cls, **settings) -> LearnSpec:
        """Validate ``settings`` (the CLI's options, a campaign step); :class:`AtomtuneError` names each bad one."""
        try:
            return cls.model_validate(settings)
        except ValidationError as error:
            problems = [f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}" for item in error.errors()]
            raise AtomtuneError("invalid active-learning settings: " + "; ".join(problems) + ".") from None

    @model_validator(mode="after")
    def _budgets(self) -> LearnSpec:
        if self.finetune.strategy == "mace-multihead":
            raise ValueError("finetune.strategy mace-multihead runs mace_run_train, not a committee member's loop; "
                             "use full, freeze, lora or replay")
        if self.committee_size < 2:
            raise ValueError(f"committee_size {self.committee_size}: a committee needs K ≥ 2 members")
        per_iteration = self.explore.selection.per_iteration
        if self.budget_labels < per_iteration:
            raise ValueError(
                f"label budget {self.budget_labels} is smaller than one iteration's pick ({per_iteration}, "
                f"selection.per_iteration): raise --budget-labels or lower per_iteration"
            )
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the loop's results (not ``wall_time_s``, ``label_workers``, ``device``)."""
        record = self.model_dump(exclude={"wall_time_s", "label_workers", "device", "budget_labels", "max_iterations",
                                          "final_check"})
        return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _explain(error: ValidationError, root, path: Path) -> str:
    known_by_model = {
        "": set(ExploreSpec.model_fields), "flag": set(FlagSpec.model_fields),
        "selection": set(SelectionSpec.model_fields), "md": set(MDExplorer.model_fields),
        "rattle": set(RattleExplorer.model_fields),
    }
    lines = []
    for item in error.errors():
        location = [part for part in item["loc"]]
        # Discriminated unions insert the tag ("md" / "rattle") into the location; the YAML has no such node.
        yaml_location = [part for part in location if part not in ("md", "rattle") or isinstance(part, int)]
        line = line_of(root, yaml_location)
        where = ".".join(str(part) for part in yaml_location) or "top level"
        if item["type"] == "extra_forbidden":
            key = str(location[-1])
            parent = next((str(p) for p in reversed(location[:-1]) if str(p) in known_by_model), "")
            close = difflib.get_close_matches(key, sorted(known_by_model.get(parent, set())), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"{path}:{line}: unknown key '{key}' in {where.rsplit('.', 1)[0] if '.' in where else 'the top level'}.{hint}")
        elif item["type"] == "missing":
            lines.append(f"{path}:{line}: '{where}' is required; add it.")
        else:
            lines.append(f"{path}:{line}: {where}: {item['msg']} (got {item.get('input')!r}).")
    return "\n".join(lines)
