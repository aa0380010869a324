"""One fine-tuning run as a typed spec: the strategy and training settings, validated, with one home for every default.

``atomtune finetune`` maps its options onto a :class:`FinetuneSpec`; a campaign's ``finetune:`` entry *is* one (plus its
name); both call :meth:`FinetuneSpec.fit`. The defaults are read from the classes that use them (the strategies'
constructors, :class:`~atomtune.finetune.TrainingSettings`), so no default is written twice; :meth:`fingerprint` is the
cache key of the settings (every default spelled out).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atomtune.exceptions import AtomtuneError
from atomtune.finetune.loop import TrainingSettings
from atomtune.finetune.loss import LossWeights
from atomtune.finetune.strategies import Freeze, LoRA, Replay
from atomtune.finetune.strategies.lora import LAYER_KINDS


def _argument_default(cls, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


def _training_default(name: str):
    return TrainingSettings.__dataclass_fields__[name].default


STRATEGY_NAMES = ("full", "freeze", "lora", "replay", "mace-multihead", "auto")

#: Starting learning rate (AdamW, per optimizer step) per backbone family and strategy. Freeze and LoRA train few
#: parameters from a good start and want larger steps than full fine-tuning. Measured with 5-epoch runs on the EMT
#: Cu–Ni–Al cells of benchmarks/bench_finetune_first_try.py (test force RMSE, docs/finetuning.md): CHGNet full 1e-3
#: (chgnet.trainer.Trainer's default) 266 meV/Å vs 3e-3 188; freeze 1e-3 no gain, 3e-3 264, 1e-2 194; LoRA 3e-3 215,
#: 1e-2 152 (zero-shot 319). SevenNet: full 1e-3, not the 4e-3 of sevenn's presets/fine_tune.yaml: on the shipped GPAW
#: set (benchmarks/bench_finetune_data_efficiency.py split, test errors) 4e-3 made energies worse than zero-shot at
#: N = 10 (126 vs 28 meV/atom, forces 0.197 vs 0.176 eV/Å) and N = 25 (57 vs 38 meV/atom), while 1e-3 gave 26 / 15
#: meV/atom and forces 0.152 / 0.162 eV/Å; freeze / LoRA as measured in docs/finetuning.md. MACE: mace_run_train's default --lr 0.01 diverged on the small test model in float32 without
#: mace's SWA stage, so full starts at 3e-3 as for CHGNet.
DEFAULT_LEARNING_RATES: dict[str, dict[str, float]] = {
    "chgnet": {"full": 3e-3, "freeze": 1e-2, "lora": 1e-2},
    "sevennet": {"full": 1e-3, "freeze": 1.2e-2, "lora": 1.2e-2},
    "mace": {"full": 3e-3, "freeze": 1e-2, "lora": 1e-2},
    "other": {"full": 1e-3, "freeze": 1e-2, "lora": 1e-2},
}
#: Without ``epochs``, a run takes at least this many optimizer steps (small data sets) and at least
#: :data:`MIN_EPOCHS` epochs, at most :data:`MAX_EPOCHS`.
MIN_OPTIMIZER_STEPS = 150
MIN_EPOCHS, MAX_EPOCHS = 5, 30


def default_learning_rate(backbone: str, strategy: str) -> float:
    """The learning rate a fine-tune of ``backbone`` with ``strategy`` starts from when none is given (replay: its
    base strategy's; an unknown backbone: :data:`DEFAULT_LEARNING_RATES` ``["other"]``)."""
    rates = DEFAULT_LEARNING_RATES.get(backbone, DEFAULT_LEARNING_RATES["other"])
    return rates.get(strategy, rates["full"])


def default_epochs(n_train: int, batch_size: int) -> int:
    """Epochs for ``n_train`` structures when none are given: ≥ :data:`MIN_OPTIMIZER_STEPS` optimizer steps."""
    steps_per_epoch = max(1, -(-n_train // batch_size))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, -(-MIN_OPTIMIZER_STEPS // steps_per_epoch))))


def parse_budget(value) -> float | None:
    """Seconds from ``"90s"``, ``"10m"``, ``"1.5h"`` or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        units = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
        number, unit = text.rstrip("abcdefghijklmnopqrstuvwxyz"), text[len(text.rstrip("abcdefghijklmnopqrstuvwxyz")):]
        if unit not in units or not number:
            raise ValueError(f"budget {value!r}: write a duration like 90s, 10m or 1.5h")
        seconds = float(number) * units[unit]
    if not seconds > 0:
        raise ValueError(f"budget must be positive, got {value!r}")
    return seconds


class FinetuneSpec(BaseModel):
    """Settings of one fine-tuning run (units: learning rate per optimizer step; loss weights as in
    :class:`~atomtune.finetune.LossWeights`, None = the backbone's documented default).

    - ``strategy``: full | freeze | lora | replay | mace-multihead (mace_run_train's own replay fine-tuning);
    - ``freeze_depth``: blocks that train, counted from the readout (``"all"``; None: the backbone's
      ``default_freeze_depth``); ``lora_rank``, ``lora_alpha`` (None: 2·r), ``lora_targets``; ``replay_*``: data
      replayed every epoch, generated pseudo-labelled structures, loss weight, structures per epoch, what trains under
      replay (``replay_base``);
    - training: ``epochs`` (None: enough for :data:`MIN_OPTIMIZER_STEPS` steps, 5–30 epochs), ``learning_rate`` (None:
      :func:`default_learning_rate` of the backbone and strategy), ``budget`` (wall time, ``"10m"``; for ``auto`` the
      whole search, else a stop for one run), ``batch_size``, ``weight_decay``, ``scheduler``, ``warmup_fraction``,
      ``selection_metric`` (what picks the saved epoch), ``gradient_clip`` (0: off), ``ema_decay`` (0: off), ``patience``
      (early stopping, 0: off), ``loss`` (mse | huber), ``huber_delta``;
    - ``drop_missing_stress``: train structures without stress on energy and forces only (None: when the training set
      has no stress labels at all); ``e0``: re-estimate per-element E0s first; ``dtype``; ``seed``.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["full", "freeze", "lora", "replay", "mace-multihead", "auto"] = "full"
    freeze_depth: int | Literal["all"] | None = _argument_default(Freeze, "depth")
    lora_rank: int = Field(default=_argument_default(LoRA, "rank"), gt=0)
    lora_alpha: float | None = Field(default=_argument_default(LoRA, "alpha"), gt=0)
    lora_targets: tuple[str, ...] = LAYER_KINDS
    replay_data: str | None = None
    replay_generate: int = Field(default=_argument_default(Replay, "generate"), ge=0)
    replay_weight: float = Field(default=_argument_default(Replay, "weight"), ge=0)
    replay_per_epoch: int | None = Field(default=_argument_default(Replay, "per_epoch"), gt=0)
    replay_base: Literal["full", "freeze", "lora"] = "full"
    epochs: int | None = Field(default=None, gt=0)
    learning_rate: float | None = Field(default=None, gt=0, le=1)
    budget: str | float | None = None
    selection_metric: Literal["balanced", "forces_rmse", "energy_mae", "loss"] = _training_default("selection_metric")
    warmup_fraction: float = Field(default=_training_default("warmup_fraction"), ge=0, lt=1)
    batch_size: int = Field(default=_training_default("batch_size"), gt=0)
    weight_decay: float = Field(default=_training_default("weight_decay"), ge=0)
    scheduler: Literal["cosine", "plateau", "constant"] = _training_default("scheduler")
    gradient_clip: float = Field(default=_training_default("gradient_clip"), ge=0)
    ema_decay: float = Field(default=_training_default("ema_decay"), ge=0, lt=1)
    patience: int = Field(default=_training_default("early_stopping_patience"), ge=0)
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(default=LossWeights.__dataclass_fields__["huber_delta"].default, gt=0)
    energy_weight: float | None = Field(default=None, ge=0)
    forces_weight: float | None = Field(default=None, ge=0)
    stress_weight: float | None = Field(default=None, ge=0)
    drop_missing_stress: bool | None = None
    e0: bool = _training_default("refit_e0")
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = _training_default("seed")

    @field_validator("freeze_depth", mode="before")
    @classmethod
    def _depth(cls, value):
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)  # "2" from a command line
        return value

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _targets(cls, value):
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = sorted(set(value) - set(LAYER_KINDS))
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; use {', '.join(LAYER_KINDS)}")
        return tuple(value)

    @field_validator("budget")
    @classmethod
    def _budget(cls, value):
        parse_budget(value)  # raises ValueError with the format
        return value

    @property
    def budget_seconds(self) -> float | None:
        return parse_budget(self.budget)

    @model_validator(mode="after")
    def _replay_needs_replay(self) -> FinetuneSpec:
        if self.strategy not in ("replay", "mace-multihead") and (self.replay_data or self.replay_generate):
            raise ValueError("replay_data / replay_generate need strategy 'replay' (with replay_base for the rest)")
        if self.strategy == "replay" and not (self.replay_data or self.replay_generate):
            raise ValueError("strategy 'replay' needs replay_data (a labelled file to mix in) or replay_generate > 0")
        return self

    # -- building the objects -----------------------------------------------------------------------------------------
    def strategy_object(self, replay_structures=None):
        """The :class:`~atomtune.finetune.Strategy` (``replay_structures``: the read ``replay_data``)."""
        from atomtune.finetune import Freeze, Full, LoRA, Replay

        def simple(name: str):
            if name == "freeze":
                return Freeze(self.freeze_depth)
            if name == "lora":
                return LoRA(self.lora_rank, self.lora_alpha, targets=self.lora_targets, seed=self.seed)
            return Full()

        if self.strategy == "replay":
            return Replay(replay_structures, weight=self.replay_weight, generate=self.replay_generate,
                          per_epoch=self.replay_per_epoch, base=simple(self.replay_base), seed=self.seed)
        if self.strategy in ("mace-multihead", "auto"):
            raise AtomtuneError(f"strategy {self.strategy!r} is not one atomtune Strategy: mace-multihead runs "
                                f"mace_run_train itself, auto searches over full / freeze / LoRA (FinetuneSpec.fit).")
        return simple(self.strategy)

    def loss_weights(self, backbone: str):
        """The backbone's documented loss weights with this spec's overrides and error kind."""
        from atomtune.finetune import default_loss_weights

        weights = default_loss_weights(backbone)
        overrides = {name: getattr(self, f"{name}_weight") for name in ("energy", "forces", "stress")
                     if getattr(self, f"{name}_weight") is not None}
        weights = dataclasses.replace(weights, kind=self.loss, huber_delta=self.huber_delta, **overrides)
        if overrides:
            weights = dataclasses.replace(weights, source=f"{weights.source}; overridden: {', '.join(sorted(overrides))}")
        return weights

    def resolved_learning_rate(self, backbone: str) -> float:
        strategy = self.replay_base if self.strategy == "replay" and self.replay_base != "full" else self.strategy
        return self.learning_rate if self.learning_rate is not None else default_learning_rate(backbone, strategy)

    def resolved_epochs(self, n_train: int) -> int:
        return self.epochs if self.epochs is not None else default_epochs(n_train, self.batch_size)

    def training_settings(self, backbone: str, has_stress: bool = True, progress: bool = True,
                          keep_checkpoint: bool = False, n_train: int = 0, learning_curve: bool = True) -> TrainingSettings:
        """The trainer's settings for a ``backbone`` (``has_stress``: does the training set carry stress labels;
        ``n_train``: its size, for the default number of epochs)."""
        drop = self.drop_missing_stress if self.drop_missing_stress is not None else not has_stress
        return TrainingSettings(
            epochs=self.resolved_epochs(n_train), learning_rate=self.resolved_learning_rate(backbone),
            batch_size=self.batch_size, warmup_fraction=self.warmup_fraction,
            selection_metric=self.selection_metric, max_seconds=self.budget_seconds,
            weight_decay=self.weight_decay, scheduler=self.scheduler, gradient_clip=self.gradient_clip or None,
            ema_decay=self.ema_decay or None, early_stopping_patience=self.patience or None,
            loss=self.loss_weights(backbone), refit_e0=self.e0, drop_missing_stress=drop, dtype=self.dtype,
            seed=self.seed, progress=progress, keep_checkpoint=keep_checkpoint, learning_curve=learning_curve,
        )

    def fingerprint(self) -> str:
        """A short hash of every setting (defaults included) and of the replay file's content, for cache keys."""
        from atomtune.campaign.cache import file_fingerprint

        payload = self.model_dump(mode="json")
        if self.replay_data and Path(self.replay_data).is_file():
            payload["replay_data"] = file_fingerprint(Path(self.replay_data))
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # -- doing the work ----------------------------------------------------------------------------------------------
    def fit(self, model: str, train, valid, out: str | Path, device: str = "cpu", resume: bool = False,
            general=None, progress: bool = True, keep_checkpoint: bool = False, trust: bool = False, log=print,
            learning_curve: bool = True):
        """Load ``model`` (checkpoint name, file or directory) and fine-tune it on ``train`` (validated on ``valid``);
        the result (:class:`~atomtune.finetune.FitResult`) is saved in ``out`` (a model like any other)."""
        from atomtune.data.dataset import Dataset
        from atomtune.envs.worker import fit_in_environment
        from atomtune.finetune import Trainer
        from atomtune.models import load_potential

        in_environment = fit_in_environment(self, model, train, valid, out, device=device, resume=resume,
                                            general=general, trust=trust)
        if in_environment is not None:  # a family with its own environment (pet-mad, nequip:…): the fit runs there
            return in_environment
        if self.strategy == "mace-multihead":
            return self._fit_mace_multihead(model, train, valid, out, device, trust)
        if self.strategy == "auto":
            from atomtune.finetune.auto import AutoSearch

            return AutoSearch(self).fit(model, train, valid, out, device=device, resume=resume, general=general,
                                        progress=progress, trust=trust, log=log)
        replay = list(Dataset.read(self.replay_data)) if self.replay_data else None
        strategy = self.strategy_object(replay)
        potential = load_potential(model, device=device, dtype=self.dtype, trust=trust)
        has_stress = all(labels.stress is not None for labels in Dataset(list(train)).labels())
        settings = self.training_settings(potential.backbone, has_stress, progress, keep_checkpoint, len(list(train)),
                                          learning_curve)
        log(f"fine-tuning {potential.name} with {strategy!r}; loss weights E {settings.loss.energy:g}, "
            f"F {settings.loss.forces:g}, S {settings.loss.stress:g} ({settings.loss.kind}; {settings.loss.source})")
        return Trainer(settings).fit(potential, list(train), list(valid), strategy, out=out, resume=resume,
                                     general=list(general) if general is not None else None, model_spec=model)

    def _fit_mace_multihead(self, model: str, train, valid, out, device: str, trust: bool):
        """mace's own multihead replay fine-tuning; the replay head gets ``replay_data`` and/or generated pseudo-labels."""
        from atomtune.data.dataset import Dataset
        from atomtune.finetune.mace_multihead import MaceMultiheadFinetune
        from atomtune.finetune.strategies.replay import generate_around, pseudo_label
        from atomtune.files import OutputLock
        from atomtune.models import load_potential

        foundation = load_potential(model, device=device, dtype="float64", trust=trust)
        if foundation.backbone != "mace":
            raise AtomtuneError(f"strategy mace-multihead needs a MACE model; {model} is {foundation.backbone}.")
        train, valid = list(train), list(valid)
        foundation.check_elements(train + valid, where="the training or validation set")
        replay = list(Dataset.read(self.replay_data)) if self.replay_data else []
        if self.replay_generate:
            replay += pseudo_label(foundation, generate_around(train, self.replay_generate, self.seed))
        weights = self.loss_weights("mace")
        has_stress = all(labels.stress is not None for labels in Dataset(train).labels())
        native = MaceMultiheadFinetune(
            str(model) if Path(model).exists() else foundation.checkpoint,
            epochs=self.resolved_epochs(len(train)), learning_rate=self.resolved_learning_rate("mace"),
            batch_size=self.batch_size,
            energy_weight=weights.energy, forces_weight=weights.forces,
            stress_weight=weights.stress if has_stress else 0.0,
            weight_pt_head=self.replay_weight, seed=self.seed, device=device,
        )
        with OutputLock(out, "fine-tuning (mace multihead)"):
            return native.run(train, valid, replay, Path(out), model_spec=model)


__all__ = ["FinetuneSpec", "STRATEGY_NAMES"]
