"""The campaign file: one YAML from data to verdict, validated before any work starts.

Validated with pydantic. Every error names the file and line and says what to do: unknown keys get the nearest valid key,
wrong types the expected type, missing files the path tried, unknown backbones and tasks the known ones.

Example (the shipped demo, ``atomtune demo --print`` shows it in full)::

    name: ni-alloy
    data:
      sources: [{path: ni_alloy_pbe.extxyz}]
    split: {fractions: {train: 0.7, valid: 0.1, test: 0.2}, by: composition}
    models: [chgnet-0.3.0, sevennet-0]
    finetune:
      - {name: lora, strategy: lora, lora_rank: 8, epochs: 5}
    tasks:
      - {task: eos, structures: ni_alloy_reference.extxyz}
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atomtune.data.dataset import MAX_STRESS_GPA
from atomtune.exceptions import AtomtuneError
from atomtune.finetune.spec import FinetuneSpec
from atomtune.yaml_files import line_of, read_yaml_mapping


class CampaignError(AtomtuneError):
    """An invalid campaign file (names file:line and the fix)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(Strict):
    """One data source. ``path``: extxyz / ASE db / parquet / MPtrj JSON / vasprun.xml / OC22 db, or ``lematerial``
    (the Hugging Face LeMat-Bulk stream, online; ``options: {config: compatible_pbe}``). ``reader``: ``auto`` or one of
    lematerial, mptrj, vasp, oc22, extxyz, db. ``curate``: the options of ``atomtune data curate`` (``preset: heo``,
    ``exclude: [...]``, ``max_atoms`` …), applied while streaming."""

    path: str
    reader: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)
    curate: dict[str, Any] | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    limit: int | None = Field(default=None, gt=0)
    # stress labels above this are refused on read (a file in kBar read as eV/Å³); null accepts any
    max_stress_gpa: float | None = Field(default=MAX_STRESS_GPA, gt=0)


class Label(Strict):
    """Relabel the data with a reference calculator (``gpaw``, ``emt`` or ``module:Class``) before splitting."""

    calculator: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    workers: int = Field(default=1, gt=0)


class Data(Strict):
    sources: list[Source] = Field(min_length=1)
    label: Label | None = None
    show: bool = True  # data overview plots in the report


class Split(Strict):
    """``by: composition`` keeps every reduced formula in one part (no composition leaks from train into test)."""

    fractions: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1})
    by: Literal["random", "composition"] = "composition"
    seed: int = 0

    @field_validator("fractions")
    @classmethod
    def _needs_train_and_test(cls, value: dict[str, float]) -> dict[str, float]:
        for name in ("train", "test"):
            if name not in value:
                raise ValueError(f"fractions must include '{name}' (have {sorted(value)})")
        if any(v < 0 for v in value.values()):
            raise ValueError("fractions must be non-negative")
        return value


class Finetune(FinetuneSpec):
    """One fine-tuning run per backbone in ``models``: every field of :class:`~atomtune.finetune.spec.FinetuneSpec`
    (the same settings and defaults as ``atomtune finetune``), plus its ``name``, an optional ``scan``
    (``{freeze_depth: [1, 2, all]}`` → one run per value) and ``models`` (restrict to these backbones)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    scan: dict[str, list[Any]] | None = None
    models: list[str] | None = None

    def spec(self, **overrides) -> FinetuneSpec:
        """The run's :class:`FinetuneSpec` (``overrides``: a scanned value, a resolved path)."""
        fields = self.model_dump(exclude={"name", "scan", "models"})
        return FinetuneSpec.model_validate({**fields, **overrides})


class ActiveLearningRun(Strict):
    """An active-learning loop (``atomtune learn``) inside a campaign: ``name`` plus the settings of
    :class:`~atomtune.learn.spec.LearnSpec`. ``model`` defaults to the campaign's first model, ``start`` to the train
    split and ``test`` to the test split; the final committee becomes a model of the campaign (errors and every task)."""

    model_config = ConfigDict(extra="allow")

    name: str
    model: str | None = None
    start: str | None = None
    test: str | None = None

    def learn_settings(self, model: str, start: str, test: str | None) -> dict:
        settings = {key: value for key, value in self.model_dump().items() if key != "name"}
        settings.update(model=self.model or model, start=self.start or start, test=self.test or test)
        return settings


BASELINE_KINDS = ("mace-scratch", "nequip-scratch", "regression")


class Baseline(Strict):
    """A baseline trained on the campaign's splits (``atomtune baseline``): ``name`` (its column label), ``kind``
    (``mace-scratch``, ``nequip-scratch`` or ``regression``) and ``settings`` (fields of the kind's spec:
    :class:`~atomtune.baselines.mace_scratch.MaceScratchSpec`, :class:`~atomtune.baselines.nequip_scratch.NequipScratchSpec`
    or :class:`~atomtune.baselines.regression.RegressionSpec`). A from-scratch MLIP is then a model like any other
    (errors and every task); a regression baseline predicts energy per atom only, so it appears in the errors table and
    nowhere else."""

    name: str
    kind: Literal["mace-scratch", "nequip-scratch", "regression"]
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def potential(self) -> bool:
        """Whether the baseline is a Potential (forces, relaxations, tasks), not an energy-only regression."""
        return self.kind != "regression"


class Task(Strict):
    """A property task run on the reference and on every model. ``structures``: file of input structures
    (default: the campaign's relaxed reference structures, or the test split for ``errors``)."""

    task: str
    structures: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = Field(default=None, gt=0)


class Reference(Strict):
    """Reference column of the property tasks: a calculator run live (``emt``, ``gpaw``, ``module:Class``) and/or
    precomputed reference task results (JSON written by the same task functions, e.g. shipped GPAW numbers)."""

    calculator: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    results: str | None = None
    label: str = "reference"


class Report(Strict):
    title: str | None = None
    file: str = "report.html"


class Campaign(Strict):
    name: str
    data: Data
    split: Split = Field(default_factory=Split)
    models: list[str] = Field(min_length=1)
    finetune: list[Finetune] = Field(default_factory=list)
    baselines: list[Baseline] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    active_learning: list[ActiveLearningRun] = Field(default_factory=list)
    reference: Reference = Field(default_factory=Reference)
    report: Report = Field(default_factory=Report)
    workers: int | None = Field(default=None, ge=0)  # Dask workers (default: cores); 0 = all steps in this process
    device: str = "cpu"
    # Allow model files that are pickles by design (MACE *.model): loading them can run code, so only for your own files.
    trust_models: bool = False

    # Set by load_campaign: the folder relative paths are resolved against.
    base_dir: Path | None = Field(default=None, exclude=True)

    def resolve(self, path: str) -> Path:
        """A path from the file, relative to the campaign file's folder (``package:`` = atomtune's shipped resources)."""
        if path.startswith("package:"):
            from importlib.resources import files

            return Path(str(files("atomtune") / "resources" / path.removeprefix("package:")))
        candidate = Path(path).expanduser()
        if not candidate.is_absolute() and self.base_dir is not None:
            candidate = self.base_dir / candidate
        return candidate

    def resolve_model(self, spec: str) -> str:
        """A model spec from the file with its file path made absolute against the campaign file's folder, like every
        other path in the file: a plain path (a ``.model`` file, a fine-tuned directory) or the path part of a family
        spec (``nequip:./m.nequip.zip``, ``orb:ARCHITECTURE@./w.ckpt``). A spec whose path does not exist there, and a
        named checkpoint, pass unchanged (the registry then reports it)."""
        resolved = self.resolve(spec)
        if resolved.exists():
            return str(resolved)
        parts = _family_file_part(spec)
        if parts is None:
            return spec
        head, target = parts
        candidate = self.resolve(target)
        if not candidate.exists() or Path(target).expanduser().is_absolute():
            return spec
        return f"{head}{candidate}"


_MODEL_FILE_SUFFIXES = (".zip", ".pt", ".pth", ".ckpt", ".model", ".json", ".yaml")


def _family_file_part(spec: str) -> tuple[str, str] | None:
    """A family spec split before its path part: ``nequip:./m.nequip.zip`` → (``nequip:``, ``./m.nequip.zip``),
    ``orb:ARCH@./w.ckpt`` → (``orb:ARCH@``, ``./w.ckpt``); None for a spec that names no family environment."""
    from atomtune.envs.specs import SPECS

    prefix, separator, rest = spec.partition(":")
    if not (separator and prefix in SPECS and rest):
        return None
    head, at, tail = rest.rpartition("@")
    return (f"{prefix}:{head}@", tail) if at else (f"{prefix}:", rest)


def _missing_family_file(campaign: Campaign, spec: str) -> str | None:
    """The path part of a family spec (``nequip:./m.nequip.zip``, ``orb:ARCH@./w.ckpt``) when it names a file (a folder
    in it or a model-file suffix) that exists neither next to the campaign file nor as given; None otherwise (a
    checkpoint name such as ``uma:uma-s-1p1``, or a file that exists)."""
    parts = _family_file_part(spec)
    if parts is None:
        return None
    target = parts[1]
    looks_like_file = ":" not in target and ("/" in target or target.endswith(_MODEL_FILE_SUFFIXES))
    if not looks_like_file or campaign.resolve(target).exists() or Path(target).expanduser().exists():
        return None
    return target


def load_campaign(path: str | Path, check_files: bool = True) -> Campaign:
    """Read and validate a campaign file; raise :class:`CampaignError` with ``file:line`` and the fix."""
    path = Path(path)
    raw, root = read_yaml_mapping(path, CampaignError, "a campaign file is name:, data:, models:, …")
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as error:
        raise CampaignError(_explain(error, path, root)) from None
    campaign.base_dir = path.resolve().parent
    problems = []
    if check_files:
        problems += _check_references(campaign, path, root)
    if problems:
        raise CampaignError("\n".join(problems))
    return campaign


def _explain(error: ValidationError, path: Path, root) -> str:
    lines = []
    for item in error.errors():
        location = [part for part in item["loc"] if not (isinstance(part, str) and "[" in part)]
        line = line_of(root, location)
        where = ".".join(str(part) for part in location)
        if item["type"] == "extra_forbidden":
            key = location[-1]
            valid = _fields_at(location[:-1])
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            parent = ".".join(str(part) for part in location[:-1])
            lines.append(f"{path}:{line}: unknown key '{key}' {'in ' + parent if parent else 'at the top level'}.{hint} "
                         f"Valid keys: {', '.join(valid)}.")
        elif item["type"] == "missing":
            lines.append(f"{path}:{line}: '{where}' is required; add it.")
        else:
            lines.append(f"{path}:{line}: {where}: {item['msg']} (got {item.get('input')!r}).")
    return "\n".join(lines)


def _fields_at(location) -> list[str]:
    """Field names of the model reached by ``location`` from Campaign."""
    model: type[BaseModel] = Campaign
    for part in location:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        found = None
        for candidate in _model_types(annotation):
            found = candidate
        if found is None:
            return []
        model = found
    return [name for name in model.model_fields if name != "base_dir"]


def _model_types(annotation):
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _model_types(argument)




def _check_references(campaign: Campaign, path: Path, root) -> list[str]:
    """Missing files, unknown backbones and unknown tasks, each with file:line."""
    from atomtune.models.registry import ALIASES, CHECKPOINTS
    from atomtune.tasks import TASKS

    problems = []
    for k, source in enumerate(campaign.data.sources):
        if source.path == "lematerial" or (source.reader == "lematerial" and not Path(source.path).suffix):
            continue  # the Hugging Face stream, resolved online
        if not any(campaign.resolve(p).exists() for p in _glob_or_path(campaign, source.path)):
            line = line_of(root, ["data", "sources", k, "path"])
            problems.append(f"{path}:{line}: data file {source.path!r} not found (looked in {campaign.base_dir}).")
    from atomtune.envs.worker import environment_route

    names = [info.name for info in CHECKPOINTS] + list(ALIASES)
    for k, model in enumerate(campaign.models):
        if model in names or Path(campaign.resolve_model(model)).exists():
            continue  # a named checkpoint, a file or a directory
        missing = _missing_family_file(campaign, model)
        if missing is not None:
            problems.append(f"{path}:{line_of(root, ['models', k])}: model file {missing!r} of {model!r} not found "
                            f"(looked in {campaign.base_dir}). Give a path relative to the campaign file or absolute.")
            continue
        if environment_route(model) is not None:
            continue  # a model of a family environment (nequip:PATH, a public checkpoint of the family, …)
        line = line_of(root, ["models", k])
        close = difflib.get_close_matches(model, names, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        problems.append(f"{path}:{line}: unknown model {model!r}.{hint} `atomtune models` lists them; a .model file "
                        f"or a fine-tuned directory also works.")
    for k, task in enumerate(campaign.tasks):
        if task.task not in TASKS:
            line = line_of(root, ["tasks", k, "task"])
            close = difflib.get_close_matches(task.task, list(TASKS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"{path}:{line}: unknown task {task.task!r}.{hint} Known: {', '.join(TASKS)}.")
        else:
            problems += _check_task_settings(task, path, line_of(root, ["tasks", k, "settings"]))
        if task.structures and not campaign.resolve(task.structures).exists():
            line = line_of(root, ["tasks", k, "structures"])
            problems.append(f"{path}:{line}: structures file {task.structures!r} not found.")
    for k, run in enumerate(campaign.finetune):
        if run.replay_data and not campaign.resolve(run.replay_data).exists():
            line = line_of(root, ["finetune", k, "replay_data"])
            problems.append(f"{path}:{line}: replay data {run.replay_data!r} not found.")
    for k, run in enumerate(campaign.active_learning):
        from atomtune.learn.spec import LearnSpec

        line = line_of(root, ["active_learning", k])
        try:  # the split files do not exist yet: placeholders for the type checks
            LearnSpec.build(**run.learn_settings(campaign.models[0], "train-split.extxyz", None))
        except AtomtuneError as error:
            problems.append(f"{path}:{line}: active_learning {run.name!r}: {error}")
    for k, baseline in enumerate(campaign.baselines):
        problems += _check_baseline(baseline, path, line_of(root, ["baselines", k]))
    labels = [baseline.name for baseline in campaign.baselines]
    for k, name in enumerate(labels):
        if labels.index(name) != k or name in campaign.models:
            problems.append(f"{path}:{line_of(root, ['baselines', k, 'name'])}: baseline name {name!r} is used twice "
                            f"(names label the report's columns); rename it.")
    if campaign.reference.results and not campaign.resolve(campaign.reference.results).exists():
        line = line_of(root, ["reference", "results"])
        problems.append(f"{path}:{line}: reference results {campaign.reference.results!r} not found.")
    return problems


def _check_baseline(baseline: Baseline, path: Path, line: int) -> list[str]:
    """A baseline's ``settings`` must build the kind's spec (names and values), before any work starts."""
    from atomtune.baselines import build_spec

    try:
        build_spec(baseline.kind, baseline.settings, where=f"baseline {baseline.name!r} settings")
    except AtomtuneError as error:
        return [f"{path}:{line}: {error}"]
    except (TypeError, ValueError) as error:
        return [f"{path}:{line}: baseline {baseline.name!r} settings: {error}"]
    return []


def _check_task_settings(task: Task, path: Path, line: int) -> list[str]:
    """A task's ``settings`` must be fields of that task's ``Settings``, of the right types (before any work starts)."""
    from atomtune.tasks.spec import TaskRun

    try:
        TaskRun(task=task.task, settings=task.settings, limit=task.limit)
    except AtomtuneError as error:
        return [f"{path}:{line}: {error}"]
    return []


def _glob_or_path(campaign: Campaign, pattern: str) -> list[str]:
    if any(char in pattern for char in "*?["):
        base = campaign.resolve(".")
        return [str(p) for p in sorted(base.glob(pattern))] or [pattern]
    return [pattern]
