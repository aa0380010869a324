"""The active-learning loop: committee → explore → flag → select → label with the reference → retrain → repeat.

``ActiveLearning(spec).run(out)``. Iteration 0 fine-tunes a committee on the start set (one shared E0 fit). Each next
iteration explores with the current committee (MD / rattles, :mod:`atomtune.learn.explore`), keeps the flagged frames,
picks at most ``selection.per_iteration`` diverse ones among them (:mod:`atomtune.data.select` on the committee's
embeddings), labels them with the user's calculator through the cached labeller (:func:`atomtune.data.label.label`),
adds them to the training (and a share to the validation) set, continues fine-tuning every member from its last weights on
all data so far (earlier data is replayed by construction), recalibrates α on the validation set and scores the held-out
set. It stops when the label budget is spent, nothing is flagged, the wall-time budget is over or after
``max_iterations``. A final exploration with the last committee (same seeds as iteration 1) measures MD stability
before vs after.

Every stage writes its result atomically into ``out/iteration-NNN/`` and is skipped when it is there, labels are cached
per structure in ``out/label-cache/`` and committee members checkpoint every epoch: a killed loop rerun with the same
settings resumes where it stopped without relabelling or refitting anything finished.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.exceptions import AtomtuneError
from atomtune.learn.explore import Exploration, explore
from atomtune.learn.spec import LearnSpec, SelectionSpec
from atomtune.models.base import json_default

STATE_FILE = "learn.json"
RESULTS_FILE = "learn_results.json"
LABEL_CACHE = "label-cache"


@dataclass
class IterationRecord:
    """What one iteration did and what it reached (units in names; errors on the committee mean)."""

    iteration: int
    labels_added: int = 0
    labels_failed: int = 0
    label_failures: list[str] = field(default_factory=list)
    label_cpu_time_s: float = 0.0
    label_wall_time_s: float = 0.0
    candidates: int = 0
    flagged: int = 0
    flagged_fraction: float = 0.0
    selected_ids: list[str] = field(default_factory=list)
    max_force_std_quantiles_ev_per_a: dict = field(default_factory=dict)
    uncertainty_values: list[float] = field(default_factory=list)
    md_runs: list[dict] = field(default_factory=list)
    train_structures: int = 0
    valid_structures: int = 0
    valid_errors: dict = field(default_factory=dict)
    test_errors: dict | None = None
    calibration: dict = field(default_factory=dict)
    test_calibration: dict | None = None
    seconds: dict = field(default_factory=dict)


@dataclass
class LearnResult:
    """The whole run: iteration records, why it stopped, the final MD check, where the last committee is."""

    iterations: list[IterationRecord]
    stop_reason: str
    final_check: dict | None
    committee_dir: str
    labels_used: int

    def as_dict(self) -> dict:
        return {**asdict(self), "iterations": [asdict(r) for r in self.iterations]}


class ActiveLearning:
    """``ActiveLearning(LearnSpec(...)).run("al/")``: the loop, resumable. ``labeller`` is replaceable in tests only
    through the calculator spec (any ASE calculator by ``module:Class``), never a mock of the loop itself."""

    def __init__(self, spec: LearnSpec):
        self.spec = spec

    # -- the loop ----------------------------------------------------------------------------------------------------
    def run(self, out: str | Path, progress: bool = True) -> LearnResult:
        spec = self.spec
        out = Path(out)
        started = time.monotonic()
        self._check_state(out)
        from atomtune.data.label import CalculatorSpec

        CalculatorSpec.parse(spec.calculator, spec.calculator_kwargs)  # unknown calculator: fail before any training
        start = self._read_labelled(spec.start, "start")
        train, valid = split_start(start, spec.valid_fraction, spec.seed)
        test = self._read_labelled(spec.test, "test") if spec.test else None
        explore_from = self._exploration_structures(start)

        records: list[IterationRecord] = []
        committee, record = self._initial_committee(out, train, valid, test)
        records.append(record)
        previous_seconds = sum(r.seconds.get("total", 0.0) for r in records)
        stop_reason = "max_iterations"
        for iteration in range(1, spec.max_iterations + 1):
            directory = out / f"iteration-{iteration:03d}"
            done = directory / "record.json"
            if done.exists():
                record = IterationRecord(**json.loads(done.read_text()))
                records.append(record)
                committee = _load_committee(directory / "committee", spec.device)
                train, valid = _extend(train, valid, directory)
                previous_seconds += record.seconds.get("total", 0.0)
                continue
            used = sum(r.labels_added + r.labels_failed for r in records)
            remaining = spec.budget_labels - used
            if remaining <= 0:
                stop_reason = "label budget spent"
                break
            if spec.wall_time_s is not None and previous_seconds + (time.monotonic() - started) > spec.wall_time_s:
                stop_reason = "wall-time budget over"
                break
            record, committee, train, valid, stop = self._iteration(
                iteration, directory, committee, train, valid, test, explore_from, remaining, used, progress
            )
            if stop:
                stop_reason = stop
                break
            records.append(record)
        else:
            used = sum(r.labels_added + r.labels_failed for r in records)
            stop_reason = "label budget spent" if used >= spec.budget_labels else "max_iterations"

        final_check = None
        if spec.final_check:
            final_check = self._final_check(out, committee, explore_from, len(records) - 1, progress)
        result = LearnResult(records, stop_reason, final_check, str(_committee_dir(out, records[-1].iteration)),
                             sum(r.labels_added + r.labels_failed for r in records))
        _write_json(out / RESULTS_FILE, {"spec": spec.model_dump(), **result.as_dict()})
        from atomtune.learn.report import write_report

        write_report(result.as_dict(), out, committee=committee, test=test)
        return result

    # -- stages ------------------------------------------------------------------------------------------------------
    def _initial_committee(self, out: Path, train, valid, test):
        directory = out / "iteration-000"
        done = directory / "record.json"
        if done.exists():
            return _load_committee(directory / "committee", self.spec.device), IterationRecord(
                **json.loads(done.read_text()))
        from atomtune.models.registry import load_potential

        began = time.monotonic()
        base = load_potential(self.spec.model, device=self.spec.device)
        committee = self._train(base, train, valid, directory / "committee", None, 0)
        record = IterationRecord(iteration=0, train_structures=len(train), valid_structures=len(valid))
        self._evaluate(record, committee, valid, test)
        record.seconds = {"train": time.monotonic() - began, "total": time.monotonic() - began}
        _write_json(done, asdict(record))
        return committee, record

    def _iteration(self, iteration, directory, committee, train, valid, test, explore_from, remaining, used, progress):
        spec = self.spec
        seconds: dict[str, float] = {}
        record = IterationRecord(iteration=iteration)

        # 1. explore with the current committee (cached: exploration.json + candidates.extxyz of the flagged frames)
        began = time.monotonic()
        summary, flagged = self._explore_cached(directory, committee, explore_from, spec.seed + iteration, progress)
        seconds["explore"] = time.monotonic() - began
        for key in ("candidates", "flagged", "flagged_fraction", "max_force_std_quantiles_ev_per_a",
                    "uncertainty_values", "md_runs"):
            setattr(record, key, summary[key])
        if not flagged:
            record.seconds = {**seconds, "total": sum(seconds.values())}
            _write_json(directory / "no-flags.json", asdict(record))
            return record, committee, train, valid, "no frame flagged"

        # 2. select (cached: selected.extxyz)
        selected_file = directory / "selected.extxyz"
        if selected_file.exists():
            selected = _read_frames(selected_file)
        else:
            count = min(spec.explore.selection.per_iteration, remaining)
            chosen = select_frames(committee, flagged, spec.explore.selection, count, spec.seed + iteration)
            _write_frames(selected_file, [flagged[i] for i in chosen])
            # What is on disk is what is used: a resumed run reads these frames back (extxyz rounds positions), and
            # the label cache is keyed by a hash of the positions, so the first run must label the very same numbers.
            selected = _read_frames(selected_file)
        record.selected_ids = [str(a.info["id"]) for a in selected]

        # 3. label (cached per structure in out/label-cache; failures recorded, the loop goes on)
        began = time.monotonic()
        labelled, failures = self._label(selected, directory.parent / LABEL_CACHE, progress)
        seconds["label"] = time.monotonic() - began
        record.labels_added, record.labels_failed = len(labelled), len(failures)
        record.label_failures = [str(f) for f in failures]
        record.label_cpu_time_s = float(sum(a.info.get("label_cpu_time_s", 0.0) for a in labelled))
        record.label_wall_time_s = float(sum(a.info.get("label_wall_time_s", 0.0) for a in labelled))
        new_train, new_valid = split_new(labelled, spec.valid_fraction, used)
        for name, part in (("new_train", new_train), ("new_valid", new_valid)):
            if part:
                Dataset(part).write(directory / f"{name}.extxyz")
            else:
                _write_frames(directory / f"{name}.extxyz", [])
        train, valid = list(train) + new_train, list(valid) + new_valid

        # 4. retrain every member from its last weights on all data so far, recalibrate
        began = time.monotonic()
        if labelled:
            committee = self._train(committee.members[0], train, valid, directory / "committee", committee, iteration)
        else:  # every label failed: the committee stays as it was (saved again so the iteration is complete)
            committee.save(directory / "committee")
        seconds["train"] = time.monotonic() - began
        record.train_structures, record.valid_structures = len(train), len(valid)
        self._evaluate(record, committee, valid, test)
        record.seconds = {**seconds, "total": sum(seconds.values())}
        _write_json(directory / "record.json", asdict(record))
        return record, committee, train, valid, ""

    def _explore_cached(self, directory: Path, committee, structures, seed: int, progress: bool):
        summary_file = directory / "exploration.json"
        candidates_file = directory / "flagged.extxyz"
        if summary_file.exists() and candidates_file.exists():
            return json.loads(summary_file.read_text()), _read_frames(candidates_file)
        exploration: Exploration = explore(committee, structures, self.spec.explore, seed=seed, progress=progress)
        _write_frames(candidates_file, [c.atoms for c in exploration.flagged])
        summary = exploration.summary()
        _write_json(summary_file, summary)
        return summary, _read_frames(candidates_file)  # as a resumed run will see them (see selection below)

    def _label(self, structures: Sequence[Atoms], cache_dir: Path, progress: bool):
        from atomtune.data.label import CalculatorSpec, label

        calculator = CalculatorSpec.parse(self.spec.calculator, self.spec.calculator_kwargs)
        data, failures = label(structures, calculator, cache_dir, workers=self.spec.label_workers, progress=progress)
        return list(data), failures

    def _train(self, base, train, valid, directory: Path, previous, iteration: int):
        from atomtune.uncertainty.train import CommitteeSpec, train_committee

        spec = self.spec
        finetune = spec.finetune.model_copy(update={"seed": spec.seed})
        replay = list(Dataset.read(finetune.replay_data)) if finetune.replay_data else None
        has_stress = all(labels.stress is not None for labels in Dataset(list(train)).labels())
        # (train_committee keeps each member's last epoch: restored to its start, a member would duplicate it.)
        settings = finetune.training_settings(base.backbone, has_stress, progress=False, n_train=len(list(train)))
        committee_spec = CommitteeSpec(size=spec.committee_size, kind=spec.committee_kind,
                                       seed=spec.seed + 1000 * iteration)
        result = train_committee(base, train, valid, committee_spec, settings, finetune.strategy_object(replay),
                                 out=directory, resume=True, model_spec=spec.model, continue_from=previous)
        return result.potential

    def _evaluate(self, record: IterationRecord, committee, valid, test) -> None:
        from atomtune.finetune.featurized import FeaturizedSet
        from atomtune.finetune.metrics import errors
        from atomtune.uncertainty import calibration

        batch_size = self.spec.finetune.batch_size
        record.valid_errors = errors(committee, FeaturizedSet.build("valid", valid, committee), batch_size)
        record.calibration = {q: _brief(r) for q, r in calibration.evaluate(committee, valid).items()}
        if test:
            record.test_errors = errors(committee, FeaturizedSet.build("test", test, committee), batch_size)
            record.test_calibration = {q: _brief(r) for q, r in calibration.evaluate(committee, test).items()}

    def _final_check(self, out: Path, committee, structures, last_iteration: int, progress: bool) -> dict:
        """Explore once more with the last committee, with iteration 1's seeds: MD stability and flags before vs after."""
        path = out / "final" / f"after-iteration-{last_iteration:03d}.json"
        if path.exists():
            return json.loads(path.read_text())
        exploration = explore(committee, structures, self.spec.explore, seed=self.spec.seed + 1, progress=progress)
        summary = {"after_iteration": last_iteration, **exploration.summary()}
        _write_json(path, summary)
        return summary

    # -- inputs ------------------------------------------------------------------------------------------------------
    def _check_state(self, out: Path) -> None:
        """A loop directory belongs to one set of settings: refuse to mix two runs' iterations."""
        out.mkdir(parents=True, exist_ok=True)
        state_file = out / STATE_FILE
        fingerprint = self.spec.fingerprint()
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state.get("fingerprint") != fingerprint:
                raise AtomtuneError(
                    f"{out} holds an active-learning run with other settings (fingerprint {state.get('fingerprint')} "
                    f"vs {fingerprint}); rerun with the same settings to resume it, or choose another --out."
                )
            return
        _write_json(state_file, {"fingerprint": fingerprint, "spec": self.spec.model_dump()})

    def _read_labelled(self, path: str, what: str) -> list[Atoms]:
        data = Dataset.read(path)
        if what == "start" and len(data) < 2:
            raise AtomtuneError(
                f"{path}: the start set has {len(data)} structure(s); the loop needs at least 2 (one to train, one to "
                f"validate and calibrate)."
            )
        return list(data)

    def _exploration_structures(self, start: list[Atoms]) -> list[Atoms]:
        if self.spec.explore.structures is None:
            return start
        from ase.io import read

        path = Path(self.spec.explore.structures)
        if not path.exists():
            raise AtomtuneError(f"exploration structures file {path} not found (explore file: structures).")
        return list(read(path, index=":"))


def split_start(structures: Sequence[Atoms], valid_fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Seeded split of the start set: at least one structure on each side."""
    structures = list(structures)
    order = np.random.default_rng(seed).permutation(len(structures))
    n_valid = min(len(structures) - 1, max(1, int(round(valid_fraction * len(structures)))))
    valid_index = set(order[:n_valid].tolist())
    return ([a for i, a in enumerate(structures) if i not in valid_index],
            [a for i, a in enumerate(structures) if i in valid_index])


def split_new(labelled: Sequence[Atoms], valid_fraction: float, labels_before: int) -> tuple[list[Atoms], list[Atoms]]:
    """Every ⌈1 / valid_fraction⌉-th new label overall (counting across iterations) goes to validation."""
    step = max(2, int(round(1.0 / valid_fraction)))
    train, valid = [], []
    for k, atoms in enumerate(labelled):
        (valid if (labels_before + k) % step == step - 1 else train).append(atoms)
    return train, valid


def select_frames(committee, frames: Sequence[Atoms], selection: SelectionSpec, count: int, seed: int) -> list[int]:
    """Indices of at most ``count`` frames: diverse (FPS / DIRECT on the committee's pooled embeddings), the most
    uncertain, or random; deterministic for a ``seed``. All of them when there are no more than ``count``."""
    frames = list(frames)
    if len(frames) <= count:
        return list(range(len(frames)))
    if selection.method == "uncertainty":
        values = np.array([float(a.info.get("uncertainty", 0.0)) for a in frames])
        return sorted(np.argsort(-values, kind="stable")[:count].tolist())
    from atomtune.data.select import (
        DirectSampler,
        FarthestPointSampler,
        RandomSampler,
        structure_features,
    )

    if selection.method == "random":
        return RandomSampler(count, seed=seed).select(np.zeros((len(frames), 1))).tolist()
    features = structure_features(committee, frames)
    if selection.method == "direct":
        chosen = DirectSampler(n_clusters=count, seed=seed).select(features).tolist()
        return chosen[:count]
    return FarthestPointSampler(count, seed=seed).select(features).tolist()


def _extend(train, valid, directory: Path):
    for name, target in (("new_train", train), ("new_valid", valid)):
        path = directory / f"{name}.extxyz"
        if path.exists() and path.stat().st_size > 0:
            target = target + list(Dataset.read(path))
        if name == "new_train":
            train = target
        else:
            valid = target
    return train, valid


def _brief(record) -> dict:
    """A calibration record without its curve arrays (the per-iteration table)."""
    return {k: v for k, v in record.as_dict().items() if k != "curve"}


def _committee_dir(out: Path, iteration: int) -> Path:
    return out / f"iteration-{iteration:03d}" / "committee"


def _load_committee(directory: Path, device: str):
    from atomtune.models.registry import load_potential

    return load_potential(str(directory), device=device)


def _read_frames(path: Path) -> list[Atoms]:
    from ase.io import read

    if path.stat().st_size == 0:
        return []
    return list(read(path, index=":", format="extxyz"))


def _write_frames(path: Path, frames: Sequence[Atoms]) -> None:
    from ase.io import write

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    plain = []
    for atoms in frames:
        frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.info.update({k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))})
        plain.append(frame)
    if plain:
        write(tmp, plain, format="extxyz")
    else:
        tmp.write_text("")
    os.replace(tmp, path)


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=json_default))
    os.replace(tmp, path)
