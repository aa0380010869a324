"""The typed results of campaign steps: what a step returns, what the cache stores and what the report is built from.

Each step function returns ``Record(...).to_dict()`` (plain JSON for the cache and for Dask), and
:mod:`atomtune.campaign.assemble` reads results back with ``Record.from_dict`` — so a field is named once, here, with
its unit, instead of being re-spelled as a dict key in the step, the assembler and the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(kw_only=True)
class StepRecord:
    wall_time_s: float | None = None  # set by the runner after the step

    @classmethod
    def from_dict(cls, data: dict):
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class FinetuneRecord(StepRecord):
    """One fine-tuning run: the model directory, the strategy's settings, validation errors before and after
    (``*_mev_per_atom``, ``forces_*`` eV/Å plus ``force_*_mev_per_a``, ``stress_*_gpa``) and the per-epoch history."""

    model_dir: str
    strategy: str
    settings: dict
    epochs: int | None
    best_epoch: int | None
    trainable_parameters: int | None
    total_parameters: int | None
    seconds_per_epoch: float | None
    e0_shift_ev: dict = field(default_factory=dict)
    valid_metrics: dict = field(default_factory=dict)
    zero_shot_valid_metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    learning_curve_png: str | None = None


@dataclass(kw_only=True)
class ErrorsRecord(StepRecord):
    """Energy / force / stress errors of one model on the test split (metrics keyed as in :mod:`atomtune.tasks.errors`)."""

    label: str
    metrics: dict
    plot: str | None = None


@dataclass(kw_only=True)
class TaskRecord(StepRecord):
    """One property task on one calculator: its per-structure records."""

    label: str
    records: list


@dataclass(kw_only=True)
class CompareRecord(StepRecord):
    """One task side by side over the reference and every model that finished (``missing``: those that did not)."""

    task: str
    rows: list
    plots: list
    reference: str | None
    missing: list = field(default_factory=list)
    #: The report section it belongs to: ``tasks`` (property tasks) or ``phase_diagram`` (cluster expansion, Monte Carlo).
    section: str = "tasks"
    #: Phase-diagram tasks: per label, the task's own summary records (an expansion's ECIs, CV error and ground states;
    #: a Monte Carlo run's transition temperature), see :mod:`atomtune.report.phase_diagram`.
    summaries: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class BaselineRecord(StepRecord):
    """One baseline trained on the campaign's splits: ``model_dir`` (a model directory for a from-scratch MLIP, the
    regression model's folder for a regression baseline), its ``kind``, the spec it ran with, the budget it used
    (``train_seconds``, ``epochs_run``, ``best_epoch``), the split sizes and its validation / test errors (keys as in
    :mod:`atomtune.tasks.errors`; a regression baseline has energy errors only). ``potential``: whether it is a model
    the tasks can run on (False for energy-only regression)."""

    label: str
    kind: str
    model_dir: str
    potential: bool
    spec: dict
    train_seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    n_train: int | None = None
    n_valid: int | None = None
    valid_errors: dict = field(default_factory=dict)
    test_errors: dict = field(default_factory=dict)
    note: str | None = None


@dataclass(kw_only=True)
class ScanRecord(StepRecord):
    """Validation errors against one scanned fine-tuning setting."""

    parameter: str
    rows: list
    plot: str


@dataclass(kw_only=True)
class ActiveLearningRecord(StepRecord):
    """An active-learning loop: its final committee (``model_dir``), the loop's result (iterations, labels, why it
    stopped) and its plots."""

    label: str
    model_dir: str
    result: dict
    plots: dict = field(default_factory=dict)


__all__ = ["ActiveLearningRecord", "BaselineRecord", "CompareRecord", "ErrorsRecord", "FinetuneRecord", "ScanRecord", "StepRecord", "TaskRecord"]
