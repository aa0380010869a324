"""The one training loop: fine-tune any Potential on a labelled Dataset, whatever the strategy.

``Trainer(settings).fit(potential, train, valid, strategy, out=...)`` checks the inputs (before any compute), featurises
every structure once, re-estimates per-element E0s, applies the strategy (freeze / LoRA / replay …), trains with AdamW,
a cosine or plateau schedule, gradient clipping, an EMA of the weights and early stopping on the validation loss,
checkpoints atomically every epoch (``resume=True`` continues a killed run), merges the strategy away and saves a plain
Potential with its config, data fingerprints, E0s and metrics, a learning-curve plot and a metrics JSON.

It only uses the Potential protocol (``featurize`` once, then ``make_batch`` + ``forward`` every step), so it is the same
loop for CHGNet, SevenNet, MACE and the test toy. Sits in the ``finetune`` box between ``models`` and ``tasks``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from atomtune.data.dataset import Dataset, labels_of
from atomtune.exceptions import AtomtuneError
from atomtune.finetune import checkpoint as checkpoints
from atomtune.finetune.e0 import (
    energy_shift_state,
    reestimate_element_energies,
    restore_energy_shift,
    shift_element_energies,
)
from atomtune.finetune.ema import WeightAverage
from atomtune.finetune.featurized import FeaturizedSet
from atomtune.finetune.loss import EnergyForceStressLoss, LossWeights, default_loss_weights
from atomtune.finetune.metrics import errors, errors_from_predictions, predict_set
from atomtune.finetune.strategies.base import Strategy, count_parameters
from atomtune.finetune.strategies.full import Full
from atomtune.files import OutputLock, atomic_write_json
from atomtune.models.base import Potential

METRICS_FILE = "metrics.json"
LEARNING_CURVE_FILE = "learning_curve.png"
SCHEDULERS = ("cosine", "plateau", "constant")
#: What picks the best epoch and drives early stopping (see :func:`selection_score`).
SELECTION_METRICS = ("balanced", "forces_rmse", "energy_mae", "loss")
#: The validation errors the balanced score averages, each divided by its value at epoch 0 (the E0-aligned zero-shot).
BALANCED_TERMS = ("energy_mae_mev_per_atom", "forces_rmse", "stress_mae_gpa")
#: A balanced-score epoch whose worst term is more than this (relative) above its zero-shot value scores at least that
#: term's ratio, so gains elsewhere cannot buy it over the starting model. Measured need: on the shipped GPAW set (N = 50,
#: CHGNet, freeze at lr 1e-2) the mean of the ratios kept an epoch with held-out energy 43 → 23 meV/atom and stress
#: 1.77 → 1.26 GPa while forces went 104 → 117 meV/Å.
BALANCED_TOLERANCE = 0.10


class TrainingDivergedError(AtomtuneError):
    """The loss became NaN or inf; the message names the batch and where the last good checkpoint is."""


@dataclass
class TrainingSettings:
    """Settings of one fine-tuning run (defaults are right for a few hundred structures on CPU).

    - ``epochs``; ``learning_rate`` (AdamW); ``batch_size`` (structures per step); ``weight_decay`` (AdamW's, decoupled);
    - ``scheduler``: ``cosine`` (to 1 % of the start, over optimizer steps), ``plateau`` (× ``plateau_factor`` after
      ``plateau_patience`` epochs without validation improvement) or ``constant``; ``warmup_fraction``: the first part
      of the optimizer steps raises the learning rate linearly from 0 (cosine and constant; a short run is otherwise
      dominated by full-size steps on freshly initialised adapters);
    - ``selection_metric``: what picks the saved epoch and drives early stopping: ``balanced`` (default; the mean over
      energy MAE, force RMSE and stress MAE of each error divided by its value at epoch 0, the E0-aligned zero-shot, so
      no term with large numbers, like stress in the loss, decides alone; an epoch with one term more than
      :data:`BALANCED_TOLERANCE` worse than at epoch 0 scores at least that term's ratio, so it is not kept over the
      start for gains in the others), ``forces_rmse``, ``energy_mae`` or ``loss``
      (the raw weighted validation loss);
    - ``max_seconds``: wall-time budget for the epochs (checked before every optimizer step; None: no limit);
    - ``gradient_clip``: max gradient norm (None: off); ``ema_decay``: EMA of weights used for validation and the saved
      model (None: off; warmed up as min(decay, (1+n)/(10+n)) so short runs are not dominated by the start);
    - ``early_stopping_patience``: epochs without validation-loss improvement before stopping (None: never);
      ``restore_best``: save the weights of the best validation epoch (epoch 0, the starting model, included), not the
      last epoch's;
    - ``loss``: :class:`LossWeights` (None: the backbone's documented default, :data:`loss.DEFAULT_LOSS_WEIGHTS`);
    - ``refit_e0``: re-estimate per-element reference energies on the training set before training (on by default);
      ``realign_e0``: and again after every epoch (forces cannot see a per-element constant, so force-dominated
      training lets the energies drift by one: the tiny MACE's validation energy MAE went 23 → 60 meV/atom in 5 epochs
      while its forces improved 29 %; the refit costs one energy-only pass over the training set per epoch);
    - ``drop_missing_stress``: with a stress weight > 0, structures without stress labels are trained on energy and forces
      only (warning) instead of raising; ``dtype``: ``float32`` / ``float64`` / None (keep the potential's);
    - ``seed``: shuffling and adapter initialisation; ``progress``: a progress bar per epoch;
    - ``keep_checkpoint``: keep ``checkpoint.pt`` after a finished run (it is deleted by default); ``learning_curve``:
      draw ``learning_curve.png`` (seconds of matplotlib per run; the strategy search turns it off for its trial runs).
    """

    epochs: int = 30
    learning_rate: float = 1e-3
    batch_size: int = 4
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_fraction: float = 0.05
    selection_metric: str = "balanced"
    max_seconds: float | None = None
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    gradient_clip: float | None = 10.0
    ema_decay: float | None = 0.99
    early_stopping_patience: int | None = 10
    restore_best: bool = True
    loss: LossWeights | None = None
    refit_e0: bool = True
    realign_e0: bool = True
    drop_missing_stress: bool = False
    dtype: str | None = None
    seed: int = 0
    progress: bool = True
    keep_checkpoint: bool = False
    learning_curve: bool = True

    def check(self) -> None:
        """Raise :class:`AtomtuneError` for settings that make no sense (before anything runs)."""
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise AtomtuneError(f"epochs must be a whole number ≥ 1, got {self.epochs!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)):
            raise AtomtuneError(f"learning rate must be a finite number, got {self.learning_rate!r}.")
        if not 0 < self.learning_rate <= 1.0:
            raise AtomtuneError(
                f"learning rate {self.learning_rate:g} makes no sense for AdamW: use a value in (0, 1], "
                f"typically 1e-4 – 5e-3 for fine-tuning."
            )
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise AtomtuneError(f"batch size must be a whole number ≥ 1, got {self.batch_size!r}.")
        if not self.weight_decay >= 0:
            raise AtomtuneError(f"weight decay must be ≥ 0, got {self.weight_decay}.")
        if self.scheduler not in SCHEDULERS:
            raise AtomtuneError(f"unknown scheduler {self.scheduler!r}: use {', '.join(SCHEDULERS)}.")
        if self.selection_metric not in SELECTION_METRICS:
            raise AtomtuneError(
                f"unknown selection metric {self.selection_metric!r}: use {', '.join(SELECTION_METRICS)}."
            )
        if not 0 <= self.warmup_fraction < 1:
            raise AtomtuneError(f"warm-up fraction must be in [0, 1), got {self.warmup_fraction}.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise AtomtuneError(f"the time budget must be > 0 s, got {self.max_seconds}.")
        if not 0 < self.plateau_factor < 1:
            raise AtomtuneError(f"plateau factor must be in (0, 1), got {self.plateau_factor}.")
        if self.gradient_clip is not None and not self.gradient_clip > 0:
            raise AtomtuneError(f"gradient clip must be > 0 (or None for no clipping), got {self.gradient_clip}.")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise AtomtuneError(f"EMA decay must be in [0, 1) (or None for no EMA), got {self.ema_decay}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise AtomtuneError(f"early-stopping patience must be ≥ 1 epoch, got {self.early_stopping_patience}.")
        if self.dtype not in (None, "float32", "float64"):
            raise AtomtuneError(f"dtype {self.dtype!r} not supported: use float32 or float64.")

    def as_dict(self) -> dict:
        record = asdict(self)
        record["loss"] = self.loss.as_dict() if self.loss is not None else None
        return record


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns: the fine-tuned plain Potential, per-epoch history and the metrics record."""

    potential: Potential
    history: list[dict]
    metrics: dict
    out: Path | None = None
    record: dict = field(default_factory=dict)


class Trainer:
    """The fine-tuning loop. ``Trainer(TrainingSettings(epochs=20)).fit(potential, train, valid, LoRA(rank=8), out="ft")``.

    ``callback(epoch_record)`` (optional, in :meth:`fit`) runs after every epoch's checkpoint is written.
    """

    def __init__(self, settings: TrainingSettings | None = None):
        self.settings = settings or TrainingSettings()

    # -- checks before anything runs ---------------------------------------------------------------------------------
    def check_inputs(
        self,
        potential: Potential,
        train: Sequence[Atoms],
        valid: Sequence[Atoms],
        loss_weights: LossWeights,
        general: Sequence[Atoms] | None = None,
    ) -> LossWeights:
        """Raise :class:`AtomtuneError` on bad input; return the loss weights actually used (stress dropped if asked)."""
        self.settings.check()
        if len(train) == 0:
            raise AtomtuneError("the training set is empty: give at least one labelled structure (--train).")
        if len(valid) == 0:
            raise AtomtuneError(
                "the validation set is empty: give --valid FILE (or a --valid-fraction that leaves at least one structure)."
                " Early stopping and the saved metrics need it."
            )
        for name, structures in (("training set", train), ("validation set", valid), ("general set", general or [])):
            potential.check_elements(list(structures), where=f"the {name}")
            for k, atoms in enumerate(structures):
                label = labels_of(atoms)
                missing = [
                    what
                    for what, weight, value in (
                        ("energy", loss_weights.energy > 0 or self.settings.refit_e0, label.energy),
                        ("forces", loss_weights.forces > 0, label.forces),
                    )
                    if weight and value is None
                ]
                if missing:
                    raise AtomtuneError(
                        f"{name} structure {k} ({atoms.info.get('id', k)}, {atoms.get_chemical_formula()}) has no "
                        f"{' or '.join(missing)} label; label it or remove it."
                    )
        for name, structures in (("training set", train), ("validation set", valid)):
            if loss_weights.stress > 0:
                without = [k for k, atoms in enumerate(structures) if labels_of(atoms).stress is None]
                if not without:
                    continue
                if not self.settings.drop_missing_stress:
                    first = structures[without[0]]
                    raise AtomtuneError(
                        f"stress weight is {loss_weights.stress:g} but {len(without)} of {len(structures)} structures "
                        f"in the {name} have no stress label (first: structure {without[0]}, "
                        f"{first.info.get('id', without[0])}). Set --stress-weight 0, label stresses, or pass "
                        f"--drop-missing-stress to train those structures on energy and forces only."
                    )
                if name == "training set" and len(without) == len(structures):
                    warnings.warn(
                        "no training structure has a stress label: the stress term is dropped (--drop-missing-stress).",
                        stacklevel=3,
                    )
                    loss_weights = replace(loss_weights, stress=0.0)
                else:
                    warnings.warn(
                        f"{len(without)} of {len(structures)} structures in the {name} have no stress label: they are "
                        f"trained / scored on energy and forces only (--drop-missing-stress).",
                        stacklevel=3,
                    )
        return loss_weights

    # -- the loop ----------------------------------------------------------------------------------------------------
    def fit(
        self,
        potential: Potential,
        train: Sequence[Atoms],
        valid: Sequence[Atoms],
        strategy: Strategy | None = None,
        out: str | Path | None = None,
        resume: bool = False,
        general: Sequence[Atoms] | None = None,
        callback: Callable[[dict], None] | None = None,
        model_spec: str | None = None,
    ) -> FitResult:
        """Fine-tune ``potential`` in place on ``train`` (validated on ``valid``) and return the result.

        ``out``: directory for checkpoints, the saved model, ``metrics.json`` and ``learning_curve.png`` (None: nothing
        written, no checkpoints). ``resume``: continue from ``out/checkpoint.pt`` (same data and settings required).
        ``general``: a held-out "general" set scored before and after (forgetting; energies E0-aligned).
        ``model_spec``: what the user gave as ``--model`` (recorded in the metadata).
        """
        if out is None:
            return self._fit(potential, train, valid, strategy, None, resume, general, callback, model_spec)
        # One run per output directory: a second process pointed here gets a clear error instead of overwriting.
        with OutputLock(out, "fine-tuning"):
            return self._fit(potential, train, valid, strategy, out, resume, general, callback, model_spec)

    def _fit(self, potential, train, valid, strategy, out, resume, general, callback, model_spec) -> FitResult:
        settings = self.settings
        strategy = strategy or Full()
        train, valid = list(train), list(valid)
        general = list(general) if general else None
        loss_weights = self.check_inputs(
            potential, train, valid, settings.loss or default_loss_weights(potential.backbone), general
        )
        loss_function = EnergyForceStressLoss(loss_weights)
        out = Path(out) if out is not None else None
        run_signature = self._signature(potential, strategy, train, valid, loss_weights, model_spec)
        state = self._resume_state(out, resume, run_signature)

        torch.manual_seed(settings.seed)
        if settings.dtype is not None:
            potential.to(getattr(torch, settings.dtype))
            potential.element_energy_shift.data = potential.element_energy_shift.data.to(torch.float64)

        started = time.perf_counter()
        train_set = FeaturizedSet.build("train", train, potential)
        valid_set = FeaturizedSet.build("valid", valid, potential)
        general_set = FeaturizedSet.build("general", general, potential) if general else None
        featurize_seconds = time.perf_counter() - started
        batch_size = settings.batch_size

        if state is None:
            zero_shot = {"valid": errors(potential, valid_set, batch_size)}
            if general_set is not None:
                zero_shot["general"] = errors(potential, general_set, batch_size, align_e0=True)
            e0_report = reestimate_element_energies(potential, train_set, batch_size) if settings.refit_e0 else None
            if e0_report is not None:
                zero_shot["valid_after_e0"] = errors(potential, valid_set, batch_size)
                _warn_if_e0_hurts(zero_shot["valid"], zero_shot["valid_after_e0"])
        else:
            zero_shot, e0_report = state["zero_shot"], state["e0"]
            if e0_report is not None:
                shift_element_energies(potential, e0_report["fitted_offsets"])

        replay_sets = strategy.replay_sets(potential, train)
        strategy.apply(potential)
        named_trainable = {name: p for name, p in potential.named_parameters() if p.requires_grad}
        if not named_trainable:
            raise AtomtuneError(f"{strategy!r} leaves no parameter of {potential.name} to train.")
        parameter_counts = count_parameters(potential)

        optimizer = torch.optim.AdamW(
            list(named_trainable.values()), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        steps_per_epoch = math.ceil(len(train_set) / batch_size) + sum(
            math.ceil(min(len(replay), replay.per_epoch or len(train_set)) / batch_size) for replay in replay_sets
        )
        scheduler = self._scheduler(optimizer, steps_per_epoch)
        ema = WeightAverage(named_trainable, settings.ema_decay) if settings.ema_decay is not None else None

        history: list[dict] = []
        best = {"score": math.inf, "epoch": 0, "parameters": _copy(named_trainable),
                "energy_shift": energy_shift_state(potential)}
        stale_epochs, first_epoch = 0, 1
        if state is None:
            valid_loss0, valid_metrics0 = self._validate(potential, valid_set, loss_function, ema)
            score0 = selection_score(settings.selection_metric, valid_loss0, valid_metrics0, valid_metrics0)
            history.append({"epoch": 0, "valid_loss": valid_loss0, "valid_score": score0,
                            **_prefixed("valid", valid_metrics0)})
            best.update(score=score0, epoch=0)
        else:
            potential.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            torch.set_rng_state(state["torch_rng"])
            history, best, stale_epochs = state["history"], state["best"], state["stale_epochs"]
            first_epoch = state["epoch"] + 1
            if "energy_shift" in state:
                restore_energy_shift(potential, state["energy_shift"])
        reference_metrics = {key.removeprefix("valid_"): value for key, value in history[0].items()
                             if key.startswith("valid_")}
        self._budget_started, self._budget_hit = time.perf_counter(), False

        for epoch in range(first_epoch, settings.epochs + 1):
            if settings.early_stopping_patience is not None and stale_epochs >= settings.early_stopping_patience:
                break
            if self._budget_hit:
                break
            epoch_started = time.perf_counter()
            train_record = self._train_epoch(
                potential, epoch, train_set, replay_sets, loss_function, optimizer, ema, out, scheduler
            )
            if settings.refit_e0 and settings.realign_e0:
                with ema.swapped() if ema is not None else contextlib.nullcontext():
                    realigned = reestimate_element_energies(potential, train_set, batch_size)["fitted_offsets"]
                train_record["e0_realigned_ev_per_atom"] = realigned
            valid_loss, valid_metrics = self._validate(potential, valid_set, loss_function, ema)
            if not math.isfinite(valid_loss):
                raise TrainingDivergedError(
                    f"validation loss is {valid_loss} after epoch {epoch}. {self._checkpoint_note(out)}"
                )
            learning_rate = optimizer.param_groups[0]["lr"]
            if scheduler is not None and settings.scheduler == "plateau":
                scheduler.step(valid_loss)  # the other schedules step per optimizer step, in _train_epoch
            score = selection_score(settings.selection_metric, valid_loss, valid_metrics, reference_metrics)
            if score < best["score"]:
                source = ema.shadow if ema is not None else named_trainable
                best = {"score": score, "epoch": epoch, "parameters": _copy(source),
                        "energy_shift": energy_shift_state(potential)}
                stale_epochs = 0
            else:
                stale_epochs += 1
            record = {
                "epoch": epoch,
                "learning_rate": learning_rate,
                **train_record,
                "valid_loss": valid_loss,
                "valid_score": score,
                **_prefixed("valid", valid_metrics),
                "seconds": time.perf_counter() - epoch_started,
            }
            history.append(record)
            if settings.progress:
                _print_epoch(record, settings.epochs)
            if out is not None:
                checkpoints.write_checkpoint(
                    out,
                    {
                        "format": 1,
                        "signature": run_signature,
                        "epoch": epoch,
                        "model": potential.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "ema": ema.state_dict() if ema is not None else None,
                        "best": best,
                        "energy_shift": energy_shift_state(potential),
                        "stale_epochs": stale_epochs,
                        "history": history,
                        "zero_shot": zero_shot,
                        "e0": e0_report,
                        "torch_rng": torch.get_rng_state(),
                    },
                )
            if callback is not None:
                callback(record)
        stopped_early = history[-1]["epoch"] < settings.epochs

        # The saved model is the best validation epoch's (EMA) weights, or the last epoch's (EMA) weights.
        final_parameters = best["parameters"] if settings.restore_best else (ema.shadow if ema else None)
        if settings.restore_best and "energy_shift" in best:
            restore_energy_shift(potential, best["energy_shift"])
        if final_parameters is not None:
            with torch.no_grad():
                for name, parameter in named_trainable.items():
                    parameter.copy_(final_parameters[name])
        final = {"valid": errors(potential, valid_set, batch_size)}
        if general_set is not None:
            final["general"] = errors(potential, general_set, batch_size, align_e0=True)
        strategy.merge(potential)

        metrics = {
            "finished": True,
            "zero_shot": zero_shot,
            "final": final,
            "best_epoch": best["epoch"],
            "saved_epoch": best["epoch"] if settings.restore_best else history[-1]["epoch"],
            "epochs_run": history[-1]["epoch"],
            "stopped_early": bool(stopped_early),
            "stopped_by_budget": bool(self._budget_hit),
            "worse_than_zero_shot": worse_than_zero_shot(zero_shot, final["valid"]),
            "e0": e0_report,
            "parameters": parameter_counts,
            "featurize_seconds": featurize_seconds,
            "seconds_per_epoch": float(np.mean([h["seconds"] for h in history if "seconds" in h] or [0.0])),
            "history": history,
        }
        if general_set is not None:
            metrics["forgetting"] = _forgetting(zero_shot["general"], final["general"])
        if metrics["worse_than_zero_shot"]:
            warnings.warn(
                "after fine-tuning, validation "
                + ", ".join(f"{key} {v['fine_tuned']:.4g} (E0-aligned zero-shot {v['zero_shot']:.4g})"
                            for key, v in metrics["worse_than_zero_shot"].items())
                + " got worse; the saved epoch is the best by the selection metric "
                f"({settings.selection_metric}). More data, a lower learning rate or another strategy may help.",
                stacklevel=3,
            )
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base_model": model_spec or potential.name,
            "strategy": strategy.settings(),
            "settings": {**settings.as_dict(), "loss": loss_weights.as_dict()},
            "data": run_signature["data"],
            "element_energy_shift": potential.get_element_energy_shift(),
            "e0": e0_report,
            "metrics": {"zero_shot": zero_shot, "final": final, "best_epoch": best["epoch"]},
            "parameters": parameter_counts,
        }
        potential.training_history.append(record)
        if out is not None:
            self._write_outputs(potential, out, metrics)
        return FitResult(potential, history, metrics, out, record)

    # -- one epoch ---------------------------------------------------------------------------------------------------
    def _train_epoch(self, potential, epoch, train_set, replay_sets, loss_function, optimizer, ema, out, scheduler):
        settings = self.settings
        # Shuffling depends only on (seed, epoch): a resumed run sees exactly the batches the killed one would have.
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(len(train_set))
        schedule = [(train_set, order[i : i + settings.batch_size]) for i in range(0, len(order), settings.batch_size)]
        for replay in replay_sets:
            count = min(len(replay), replay.per_epoch or len(train_set))
            picked = rng.choice(len(replay), size=count, replace=False)
            schedule += [(replay, picked[i : i + settings.batch_size]) for i in range(0, count, settings.batch_size)]
        schedule = [schedule[k] for k in rng.permutation(len(schedule))]

        potential.train()
        want_forces = loss_function.weights.forces > 0
        want_stress = loss_function.needs_stress
        sums: dict[str, float] = {}
        count = 0
        progress = _progress(len(schedule), f"epoch {epoch}/{settings.epochs}", settings.progress)
        try:
            for step, (data, indices) in enumerate(schedule):
                if settings.max_seconds is not None and time.perf_counter() - self._budget_started > settings.max_seconds:
                    self._budget_hit = True  # the time budget ends here; this epoch is validated and saved as it is
                    break
                labelled = data.batch(indices, potential)
                optimizer.zero_grad(set_to_none=True)
                prediction = potential(labelled.batch, forces=want_forces, stress=want_stress)
                loss, terms = loss_function(prediction, labelled.target, labelled.batch.n_atoms)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss is {loss.item()} at epoch {epoch}, step {step + 1} ({data.name} batch of structures "
                        f"{', '.join(labelled.ids)}). {self._checkpoint_note(out)}"
                    )
                (data.weight * loss).backward()
                if settings.gradient_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(
                        [p for group in optimizer.param_groups for p in group["params"]], settings.gradient_clip
                    )
                    if not torch.isfinite(norm):
                        raise TrainingDivergedError(
                            f"gradient norm is {norm.item()} at epoch {epoch}, step {step + 1} ({data.name} batch of "
                            f"structures {', '.join(labelled.ids)}). {self._checkpoint_note(out)}"
                        )
                optimizer.step()
                if scheduler is not None and settings.scheduler != "plateau":
                    scheduler.step()
                if ema is not None:
                    ema.update()
                if data is train_set:
                    count += 1
                    sums["train_loss"] = sums.get("train_loss", 0.0) + float(loss.detach())
                    for name, value in terms.items():
                        sums[f"train_{name}"] = sums.get(f"train_{name}", 0.0) + float(value.detach())
                else:
                    sums["replay_loss"] = sums.get("replay_loss", 0.0) + float(loss.detach())
                    sums["replay_batches"] = sums.get("replay_batches", 0.0) + 1
                progress.set_postfix(loss=f"{float(loss.detach()):.4g}")
                progress.update()
        finally:
            progress.close()
        record = {key: value / max(count, 1) for key, value in sums.items() if key.startswith("train_")}
        if "replay_batches" in sums:
            record["replay_loss"] = sums["replay_loss"] / sums["replay_batches"]
        return record

    def _validate(self, potential, valid_set, loss_function, ema) -> tuple[float, dict]:
        """Validation loss (same weights as training) and errors, with the EMA weights when EMA is on."""
        def run():
            predicted = predict_set(potential, valid_set, self.settings.batch_size, loss_function.needs_stress)
            prediction = {key: torch.as_tensor(value) for key, value in predicted.items() if value is not None}
            n_atoms = torch.tensor([len(atoms) for atoms in valid_set.structures], dtype=torch.float64)
            target = {
                "energy": valid_set.energies,
                "forces": torch.cat(valid_set.forces),
                "stress": torch.stack(valid_set.stress),
                "stress_mask": valid_set.has_stress,
            }
            loss, _ = loss_function(prediction, target, n_atoms)
            return float(loss), errors_from_predictions(valid_set, predicted)

        if ema is None:
            return run()
        with ema.swapped():
            return run()

    # -- helpers -----------------------------------------------------------------------------------------------------
    def _scheduler(self, optimizer, steps_per_epoch: int):
        """Per-optimizer-step schedule (linear warm-up, then cosine to 1 % or constant), or per-epoch plateau."""
        settings = self.settings
        total = max(1, settings.epochs * steps_per_epoch)
        warmup = int(round(settings.warmup_fraction * total))
        if settings.scheduler in ("cosine", "constant"):
            cosine = settings.scheduler == "cosine"

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / (warmup + 1)
                if not cosine:
                    return 1.0
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

            return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        if settings.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=settings.plateau_factor, patience=settings.plateau_patience
            )
        return None

    def _signature(self, potential, strategy, train, valid, loss_weights, model_spec) -> dict:
        """What must match for ``resume``: model, strategy, data fingerprints, settings that change the trajectory."""
        ignored = ("progress", "keep_checkpoint", "max_seconds", "learning_curve")
        settings = {k: v for k, v in self.settings.as_dict().items() if k not in ignored}
        settings["loss"] = loss_weights.as_dict()
        return {
            "model": model_spec or potential.name,
            "strategy": strategy.settings(),
            "settings": settings,
            "data": {
                "train": {"fingerprint": Dataset(train).fingerprint(), "structures": len(train)},
                "valid": {"fingerprint": Dataset(valid).fingerprint(), "structures": len(valid)},
            },
        }

    def _resume_state(self, out: Path | None, resume: bool, signature: dict) -> dict | None:
        if out is None:
            if resume:
                raise AtomtuneError("resume needs the output directory of the run to continue (--out).")
            return None
        if not resume:
            # Not read without --resume: a file someone dropped into --out is never opened unless asked for.
            if checkpoints.has_checkpoint(out):
                raise AtomtuneError(
                    f"{out} holds the checkpoint of an unfinished run. Pass --resume to continue it, choose another "
                    f"--out, or delete {checkpoints.checkpoint_path(out)}."
                )
            return None
        state = checkpoints.read_checkpoint(out)
        if state is None:
            metrics_file = out / METRICS_FILE
            if metrics_file.exists() and json.loads(metrics_file.read_text()).get("finished"):
                raise AtomtuneError(f"{out}: this run already finished; nothing to resume (the model is in {out}).")
            warnings.warn(f"--resume: no checkpoint in {out}; starting from the beginning.", stacklevel=3)
            return None
        differences = _differences(state["signature"], signature)
        if differences:
            raise AtomtuneError(
                f"cannot resume {out}: the checkpoint was written by a different run ({'; '.join(differences[:5])}). "
                f"Rerun with exactly the same model, data, strategy and settings, or use another --out."
            )
        return state

    @staticmethod
    def _checkpoint_note(out: Path | None) -> str:
        if out is None:
            return "Training stopped (no --out, so no checkpoint). Lower the learning rate or check these structures."
        path = checkpoints.checkpoint_path(out)
        if path.exists():
            return (
                f"Training stopped; the last good checkpoint is kept at {path}. Check these structures' labels, or "
                f"lower --learning-rate / --gradient-clip and start again."
            )
        return "Training stopped in the first epoch (no checkpoint yet). Check these structures' labels or lower the LR."

    def _write_outputs(self, potential: Potential, out: Path, metrics: dict) -> None:
        from atomtune.finetune.learning_curve import plot_learning_curve

        out.mkdir(parents=True, exist_ok=True)
        potential.save(out, extra={"finetune": {"metrics": METRICS_FILE, "learning_curve": LEARNING_CURVE_FILE}})
        atomic_write_json(out / METRICS_FILE, metrics)
        if self.settings.learning_curve:
            plot_learning_curve(metrics["history"], out / LEARNING_CURVE_FILE, title=f"{potential.name} fine-tuning")
        if not self.settings.keep_checkpoint:
            checkpoints.checkpoint_path(out).unlink(missing_ok=True)


def selection_score(metric: str, valid_loss: float, metrics: dict, reference: dict) -> float:
    """The number that picks the saved epoch (lower is better); ``reference``: the epoch-0 validation metrics."""
    if metric == "loss":
        return float(valid_loss)
    if metric == "forces_rmse":
        return float(metrics["forces_rmse"])
    if metric == "energy_mae":
        return float(metrics["energy_mae_mev_per_atom"])
    ratios = [metrics[key] / reference[key] for key in BALANCED_TERMS
              if metrics.get(key) is not None and reference.get(key) and math.isfinite(reference[key])]
    if not ratios:
        return float(valid_loss)
    score, worst = float(np.mean(ratios)), float(max(ratios))
    return max(score, worst) if worst > 1.0 + BALANCED_TOLERANCE else score


def worse_than_zero_shot(zero_shot: dict, final: dict, tolerance: float = 0.05) -> dict:
    """Validation errors that ended more than ``tolerance`` (relative) above the E0-aligned zero-shot ones."""
    before = zero_shot.get("valid_after_e0") or zero_shot.get("valid") or {}
    return {key: {"zero_shot": before[key], "fine_tuned": final[key]} for key in BALANCED_TERMS
            if before.get(key) and final.get(key) is not None and final[key] > before[key] * (1 + tolerance)}


def _copy(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in parameters.items()}


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{key}": value for key, value in metrics.items()}


def _warn_if_e0_hurts(before: dict, after: dict) -> None:
    """E0s fitted on a few structures can extrapolate badly to compositions the training set does not span."""
    before_mae, after_mae = before["energy_mae_mev_per_atom"], after["energy_mae_mev_per_atom"]
    if after_mae > before_mae * 1.5 and after_mae - before_mae > 5.0:
        warnings.warn(
            f"E0 re-estimation made the validation energy MAE worse ({before_mae:.1f} → {after_mae:.1f} meV/atom): the "
            f"training compositions may not pin down the per-element energies of the validation structures. Add "
            f"training structures with more varied compositions, or pass --no-e0 if both sets share the model's DFT "
            f"setup.",
            stacklevel=3,
        )


def _forgetting(before: dict, after: dict) -> dict:
    return {
        "before": before,
        "after": after,
        "change": {key: after[key] - before[key] for key in before if key in after},
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return found


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="batch", disable=not enabled, leave=False)


def _print_epoch(record: dict, epochs: int) -> None:
    from tqdm.auto import tqdm

    parts = [f"epoch {record['epoch']}/{epochs}", f"train loss {record.get('train_loss', float('nan')):.4g}"]
    parts.append(f"valid loss {record['valid_loss']:.4g}")
    parts.append(f"E {record['valid_energy_mae_mev_per_atom']:.1f} meV/atom")
    parts.append(f"F {record['valid_forces_mae']:.4f} eV/Å")
    if "valid_stress_mae_gpa" in record:
        parts.append(f"S {record['valid_stress_mae_gpa']:.3f} GPa")
    parts.append(f"{record['seconds']:.1f} s")
    tqdm.write(" | ".join(parts))
