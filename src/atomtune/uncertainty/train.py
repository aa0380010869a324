"""Training committees through the one fine-tuning loop (:class:`atomtune.finetune.Trainer`), full or shallow.

``full``: one E0 re-estimation on the whole training set, shared; then K members, each a copy of the (shifted) foundation
model fine-tuned with the chosen strategy on its own bootstrap resample of the training set and its own seed (shuffling,
adapter initialisation). ``shallow``: one trunk fine-tuned with the strategy (member 0, E0 re-estimated there), then K − 1
more readout heads: copies of the trunk whose readout block (``blocks()[-1]``) starts from the trunk's readout perturbed by
seeded noise and trains alone (``Freeze(1)``) on a bootstrap resample. Every member's run lives in ``out/fits/member-k``
(checkpoints, metrics, learning curve) so a killed run resumes member by member; the committee is then calibrated on the
validation set (α per quantity) and saved to ``out``.

``continue_from`` fine-tunes an existing committee further (the active-learning loop's retraining): each member starts
from its own last weights, E0s stay as they are (shared), nothing is re-initialised.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from atomtune.exceptions import AtomtuneError
from atomtune.finetune import (
    FitResult,
    Freeze,
    Full,
    Strategy,
    Trainer,
    TrainingSettings,
)
from atomtune.finetune.loop import METRICS_FILE
from atomtune.models.base import Potential, json_default
from atomtune.uncertainty.committee import (
    KINDS,
    CommitteeError,
    CommitteePotential,
    readout_block,
)

COMMITTEE_METRICS_FILE = "committee_metrics.json"
CALIBRATION_PLOT = "calibration.png"


@dataclass(frozen=True)
class CommitteeSpec:
    """How a committee is made.

    ``size``: members K (≥ 2). ``kind``: ``full`` (K fine-tunes) or ``shallow`` (one trunk, K readout heads).
    ``bootstrap``: each member trains on a resample (with replacement) of the training set, the same size.
    ``head_noise``: shallow only — each extra head starts from the trunk's readout plus Gaussian noise of this many
    standard deviations of each weight tensor (heads trained from one start on near-identical data barely differ).
    ``seed``: member k uses ``seed + k`` for its resample, shuffling and adapter initialisation.
    ``calibrate``: fit α per quantity on the validation set after training.
    """

    size: int = 4
    kind: str = "full"
    bootstrap: bool = True
    head_noise: float = 0.1
    seed: int = 0
    calibrate: bool = True

    def check(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 2:
            raise CommitteeError(
                f"--committee {self.size!r}: a committee needs K ≥ 2 members (the spread of one model is zero); "
                f"4–8 is usual."
            )
        if self.kind not in KINDS:
            raise CommitteeError(f"--committee-kind {self.kind!r}: use full or shallow.")
        if not self.head_noise >= 0:
            raise CommitteeError(f"head noise must be ≥ 0, got {self.head_noise}.")


def train_committee(
    base: Potential,
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    spec: CommitteeSpec,
    settings: TrainingSettings | None = None,
    strategy: Strategy | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    model_spec: str | None = None,
    continue_from: CommitteePotential | None = None,
) -> FitResult:
    """Fine-tune a committee from ``base`` (or further from ``continue_from``) and return a :class:`FitResult` whose
    ``potential`` is the calibrated :class:`CommitteePotential` and whose ``metrics`` hold the committee's validation
    errors (``final``), each member's metrics (``members``) and the calibration records (``calibration``).

    ``settings``: one member's fine-tuning settings (the member's seed is ``spec.seed + k``; E0 refit happens once;
    ``restore_best`` is off for members, see below);
    ``strategy``: what trains in a full member / in the trunk (copied per member; default :class:`Full`);
    ``out``: the committee directory (a model like any other) with ``fits/member-k`` run directories; ``resume``: reuse
    finished members and continue an unfinished one from its checkpoint.
    """
    spec.check()
    settings = settings or TrainingSettings()
    strategy = strategy or Full()
    train, valid = list(train), list(valid)
    out = Path(out) if out is not None else None
    if continue_from is not None:
        if continue_from.size != spec.size or continue_from.kind != spec.kind:
            raise CommitteeError(
                f"cannot continue a {continue_from.kind} committee of {continue_from.size} as a {spec.kind} one of "
                f"{spec.size}."
            )
        base = continue_from.members[0]
    if out is not None and resume and _finished(out):
        from atomtune.models.registry import load_potential

        metrics = json.loads((out / COMMITTEE_METRICS_FILE).read_text())
        return FitResult(load_potential(str(out)), metrics.get("history", []), metrics, out)
    if out is not None and not resume and _finished(out):
        raise AtomtuneError(f"{out} already holds a finished committee; pass --resume to reuse it or choose another --out.")

    e0_report = None
    if continue_from is None and settings.refit_e0:
        from atomtune.finetune.e0 import reestimate_element_energies
        from atomtune.finetune.featurized import FeaturizedSet

        base = copy.deepcopy(base)
        base.check_elements(train, where="the training set")
        e0_report = reestimate_element_energies(base, FeaturizedSet.build("train", train, base), settings.batch_size)
    # Members keep their last (EMA) weights, not the best validation epoch: on small validation sets epoch 0 (the
    # starting model) is often "best", and members restored to one start are identical — zero spread.
    member_settings = replace(settings, refit_e0=False, restore_best=False)

    members: list[Potential] = []
    member_metrics: list[dict] = []
    history: list[dict] = []
    for k in range(spec.size):
        if spec.kind == "full" or k == 0:
            start = copy.deepcopy(continue_from.members[k] if continue_from is not None else base)
            member_strategy = copy.deepcopy(strategy)
            if hasattr(member_strategy, "seed"):
                member_strategy.seed = spec.seed + k
        else:
            # A head: the trunk trained above with this member's own readout (its last one, or a perturbed copy).
            start = copy.deepcopy(members[0])
            if continue_from is not None:
                readout_block(start).load_state_dict(readout_block(continue_from.members[k]).state_dict())
            else:
                _perturb(readout_block(start), spec.head_noise, spec.seed + k)
            member_strategy = Freeze(1)
        data = bootstrap(train, spec.seed + k) if spec.bootstrap else train
        run_dir = out / "fits" / f"member-{k}" if out is not None else None
        result = _fit_member(start, data, valid, member_strategy, replace(member_settings, seed=spec.seed + k),
                             run_dir, resume, model_spec)
        members.append(result.potential)
        member_metrics.append({"member": k, "final": result.metrics.get("final"), "epochs_run": result.metrics.get(
            "epochs_run"), "structures": len(data), "unique_structures": len({id(a) for a in data})})
        if k == 0:
            history = result.history
    committee = CommitteePotential(members, kind=spec.kind, checkpoint=model_spec or base.checkpoint)
    metrics = _committee_metrics(committee, valid, spec, member_metrics, e0_report, history, settings)
    if out is not None:
        committee.save(out, extra={"committee_spec": spec.__dict__, "finetune": {"metrics": COMMITTEE_METRICS_FILE}})
        if metrics.get("calibration"):
            from atomtune.uncertainty.calibration import (
                QuantityCalibration,
                plot_calibration,
            )

            plot_calibration({q: QuantityCalibration(**r) for q, r in metrics["calibration"].items()},
                             out / CALIBRATION_PLOT, title=f"{committee.name} on the validation set")
        tmp = out / (COMMITTEE_METRICS_FILE + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2, default=json_default))
        os.replace(tmp, out / COMMITTEE_METRICS_FILE)
    return FitResult(committee, history, metrics, out)


def finetune_committee(
    spec,
    model: str,
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    out: str | Path | None,
    size: int,
    kind: str = "full",
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    trust: bool = False,
    log=print,
) -> FitResult:
    """What ``atomtune finetune --committee K --committee-kind full|shallow`` runs: the committee version of
    :meth:`atomtune.finetune.spec.FinetuneSpec.fit`. ``spec`` (a FinetuneSpec) gives each member's strategy and
    training settings; its seed is the committee's seed (member k: seed + k). Returns a FitResult whose ``metrics`` has
    the keys the single-model CLI prints (``zero_shot``, ``final``, ``epochs_run``, ``best_epoch``) plus ``members``
    and ``calibration``."""
    from atomtune.data.dataset import Dataset
    from atomtune.models.registry import load_potential

    committee_spec = CommitteeSpec(size=size, kind=kind, seed=spec.seed)
    committee_spec.check()  # before the (slow) model load
    if spec.strategy == "mace-multihead":
        raise CommitteeError("--committee runs atomtune's own fine-tuning loop per member; mace-multihead runs "
                             "mace_run_train instead. Use --strategy full / freeze / lora / replay.")
    replay = list(Dataset.read(spec.replay_data)) if spec.replay_data else None
    strategy = spec.strategy_object(replay)
    base = load_potential(model, device=device, dtype=spec.dtype, trust=trust)
    has_stress = all(labels.stress is not None for labels in Dataset(list(train)).labels())
    settings = spec.training_settings(base.backbone, has_stress, progress, n_train=len(list(train)))
    log(f"fine-tuning a {kind} committee of {size} from {base.name} with {strategy!r}")
    return train_committee(base, train, valid, committee_spec, settings, strategy, out=out, resume=resume,
                           model_spec=model)


def bootstrap(structures: Sequence[Atoms], seed: int) -> list[Atoms]:
    """A resample with replacement of ``structures`` (same size; seeded): the classic bagging committee."""
    structures = list(structures)
    rng = np.random.default_rng([seed, len(structures)])
    picked = rng.integers(0, len(structures), size=len(structures))
    return [structures[i] for i in sorted(picked)]


def _fit_member(start, data, valid, strategy, settings, run_dir, resume, model_spec) -> FitResult:
    from atomtune.finetune import checkpoint as checkpoints
    from atomtune.models.registry import load_potential

    if run_dir is not None and (run_dir / METRICS_FILE).exists():
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        if metrics.get("finished") and resume:
            member = load_potential(str(run_dir))
            return FitResult(member.to(start.device).to(_dtype_of(start)), metrics["history"], metrics, run_dir)
    continuing = resume and run_dir is not None and checkpoints.checkpoint_path(run_dir).exists()
    return Trainer(settings).fit(start, data, valid, strategy, out=run_dir, resume=continuing, model_spec=model_spec)


def _committee_metrics(committee, valid, spec, member_metrics, e0_report, history, settings) -> dict:
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.metrics import errors

    metrics: dict = {
        "finished": True,
        "committee": {"size": spec.size, "kind": spec.kind, "bootstrap": spec.bootstrap, "seed": spec.seed},
        "members": member_metrics,
        "e0": e0_report,
        "history": history,
        "epochs_run": max((m.get("epochs_run") or 0) for m in member_metrics),
        "best_epoch": None,
        "zero_shot": {},
        "final": {"valid": errors(committee, FeaturizedSet.build("valid", valid, committee), settings.batch_size)},
    }
    if spec.calibrate:
        from atomtune.uncertainty.calibration import calibrate

        records = calibrate(committee, valid, apply=True, batch_size=settings.batch_size)
        metrics["calibration"] = {q: r.as_dict() for q, r in records.items()}
    return metrics


def _perturb(module: torch.nn.Module, noise: float, seed: int) -> None:
    """Add seeded Gaussian noise of ``noise`` × each tensor's standard deviation to a module's parameters."""
    if noise <= 0:
        return
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for parameter in module.parameters():
            scale = float(parameter.detach().double().std()) if parameter.numel() > 1 else abs(float(parameter))
            scale = scale or 1e-3
            parameter.add_(noise * scale * torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(
                parameter.dtype))


def _dtype_of(potential: Potential) -> torch.dtype:
    for parameter in potential.parameters():
        return parameter.dtype
    return torch.float32


def _finished(out: Path) -> bool:
    path = out / COMMITTEE_METRICS_FILE
    if not path.exists():
        return False
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except json.JSONDecodeError:
        return False
