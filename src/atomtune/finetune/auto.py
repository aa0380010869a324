"""``--strategy auto --budget 10m``: choose the strategy (full / freeze depth / LoRA rank) and learning rate within a
wall-time budget by successive halving, then train the winner for the rest of the budget.

Synchronous successive halving (Jamieson & Talwalkar, AISTATS 2016; the building block of Hyperband): every candidate
trains for a short slice of time, the best third (by the validation score of the run's selection metric, balanced by
default, :func:`~atomtune.finetune.loop.selection_score`) continue from where they stopped with three times the time,
until one is left; it then trains afresh from the foundation model with its defaults for what remains of the budget. The
search only gets the time a fixed run of the default epochs would not need, so the winner trains as long as a fixed
strategy would. The winner's best slice replaces the fresh run only when it is better on validation beyond the noise of
the few validation structures (a paired bootstrap over them); within the noise the run that trained more epochs is kept.
A budget that holds fewer than three trials, or a validation set too small to tell candidates apart, trains the first
candidate without a search. Each slice is an ordinary checkpointed fine-tuning run in ``OUT/search/<candidate>/rung-k``,
so a killed search resumes: finished slices are read back, the interrupted one continues from its checkpoint.

Hand-written rather than Optuna: the candidates are a handful of discrete settings and the rungs are wall-time slices of
runs that continue from each other's saved models; Optuna's SuccessiveHalvingPruner prunes each trial against earlier
trials as it goes (the first trial is never stopped), and resuming a killed trial needs its RDB storage heartbeat, while
here a slice is already a resumable run on disk.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomtune.exceptions import AtomtuneError
from atomtune.files import OutputLock, atomic_write_json
from atomtune.finetune.loop import METRICS_FILE, SELECTION_METRICS, selection_score, worse_than_zero_shot

#: Default budget of ``--strategy auto`` when none is given.
DEFAULT_BUDGET_SECONDS = 600.0
#: Share of the budget spent choosing; the rest trains the winner.
SEARCH_FRACTION = 0.5
#: Keep the best 1/ETA of the candidates at each rung.
ETA = 3
SEARCH_FILE = "search.json"
#: Fewer validation structures than this: no search (its choices would follow their noise; on the GPAW set with 2
#: validation structures two runs of the same search ended 28 % better and 55 % worse than zero-shot on held-out forces),
#: the first candidate trains for the whole budget.
SMALL_VALIDATION = 5
#: A search slice replaces the winner's fresh run only when it has the lower balanced score on at least this share of
#: paired bootstrap resamples of the validation structures (Efron & Tibshirani 1993); between this and 1 − it the
#: difference is within the validation noise and the run that trained more epochs is kept. On the GPAW set (SevenNet-0,
#: N = 25, 5 validation structures) a 3-epoch LoRA slice scored below the 14-epoch fresh run on validation and was kept
#: by the old "lower score wins" rule: 185 meV/Å on the 40 test structures, where the fresh run's fixed LoRA gave 123.
CLEARLY_BETTER = 0.9
BOOTSTRAP_RESAMPLES = 2000
#: The selection metrics (``FinetuneSpec.selection_metric``) that score single validation structures, so that the
#: search can resample them; ``loss`` is a whole-set number.
SEARCH_METRICS = tuple(metric for metric in SELECTION_METRICS if metric != "loss")


class BudgetError(AtomtuneError):
    """The time budget cannot hold even one training step."""


@dataclass(frozen=True)
class Candidate:
    name: str
    overrides: dict


def candidates_for(spec) -> list[Candidate]:
    """The default search space around ``spec``, most promising first (a short budget keeps the first ones): full,
    LoRA rank 8, freeze at the backbone's default depth, full at 3× the rate, LoRA rank 32, freeze of the readout only
    (each at the strategy's default rate unless ``spec.learning_rate`` pins it)."""
    rate = {} if spec.learning_rate is None else {"learning_rate": spec.learning_rate}
    return [
        Candidate("full", {"strategy": "full", **rate}),
        Candidate("lora-8", {"strategy": "lora", "lora_rank": 8, **rate}),
        Candidate("freeze", {"strategy": "freeze", **rate}),
        Candidate("full-lr3x", {"strategy": "full", "learning_rate_factor": 3.0}),
        Candidate("lora-32", {"strategy": "lora", "lora_rank": 32, **rate}),
        Candidate("freeze-1", {"strategy": "freeze", "freeze_depth": 1, **rate}),
    ]


@dataclass(frozen=True)
class StructureErrors:
    """One model's errors on each validation structure, to resample: |energy error| (meV/atom), the sum of squared
    force-component errors (eV²/Å²) and their count, the mean |stress error| over the 6 Voigt components (GPa; NaN for a
    structure without a stress label). :meth:`metrics` aggregates them as :func:`~atomtune.finetune.metrics.errors`
    does."""

    energy_mev_per_atom: np.ndarray
    forces_squared: np.ndarray
    forces_count: np.ndarray
    stress_gpa: np.ndarray

    @classmethod
    def of(cls, potential, structures, batch_size: int) -> StructureErrors:
        from atomtune.finetune.featurized import FeaturizedSet
        from atomtune.finetune.loss import GPA_PER_EV_PER_A3
        from atomtune.finetune.metrics import predict_set

        data = FeaturizedSet.build("valid", list(structures), potential)
        predicted = predict_set(potential, data, batch_size, stress=bool(data.has_stress.any()))
        n_atoms = np.array([len(atoms) for atoms in data.structures])
        energy = np.abs(predicted["energy"] - data.energies.numpy()) / n_atoms * 1000.0
        split = np.cumsum(n_atoms)[:-1]
        squared = [float((error**2).sum()) for error in np.split(
            predicted["forces"] - np.concatenate([f.numpy() for f in data.forces]), split)]
        stress = np.full(len(n_atoms), np.nan)
        mask = data.has_stress.numpy()
        if predicted.get("stress") is not None and mask.any():
            rows, columns = (0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)
            reference = np.stack([s.numpy() for s in data.stress])
            voigt = (predicted["stress"] - reference)[:, rows, columns] * GPA_PER_EV_PER_A3
            stress[mask] = np.abs(voigt[mask]).mean(axis=1)
        return cls(energy, np.array(squared), 3.0 * n_atoms, stress)

    def as_dict(self) -> dict[str, list]:
        return {key: getattr(self, key).tolist() for key in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, values: dict) -> StructureErrors:
        return cls(**{key: np.asarray(values[key], dtype=float) for key in cls.__dataclass_fields__})

    def metrics(self, indices=None) -> dict[str, float]:
        """Energy MAE, force RMSE and stress MAE of the structures ``indices`` (repeats count again; None: all)."""
        indices = np.arange(len(self.energy_mev_per_atom)) if indices is None else np.asarray(indices)
        stress = self.stress_gpa[indices]
        result = {
            "energy_mae_mev_per_atom": float(self.energy_mev_per_atom[indices].mean()),
            "forces_rmse": float(np.sqrt(self.forces_squared[indices].sum() / self.forces_count[indices].sum())),
        }
        if np.isfinite(stress).any():
            result["stress_mae_gpa"] = float(np.nanmean(stress))
        return result


def rank_within_noise(results: list[tuple], order: list, reference: dict, metric: str = "balanced") -> list:
    """Candidates of one rung, best first: ``results`` holds (score, candidate, row with ``per_structure`` errors).
    The candidates the best one does not beat on :data:`CLEARLY_BETTER` of paired bootstrap resamples of the
    validation structures are within its noise: they come first, in the search's ``order`` (most promising first, as
    the one-standard-error rule prefers the default within the noise); the others follow by score. After one or two
    short epochs per trial the candidate that starts fastest (LoRA at a high rate) leads on a handful of structures
    without being the one that ends best."""
    ranked = sorted(results, key=lambda item: item[0])
    best = ranked[0]
    best_errors = StructureErrors.from_dict(best[2]["per_structure"]) if "per_structure" in best[2] else None

    def tied(item) -> bool:
        if item is best:
            return True
        if best_errors is None or "per_structure" not in item[2]:
            return False
        return share_better(best_errors, StructureErrors.from_dict(item[2]["per_structure"]),
                            reference, metric) < CLEARLY_BETTER

    position = {candidate.name: index for index, candidate in enumerate(order)}
    ties = sorted((item for item in ranked if tied(item)), key=lambda item: position.get(item[1].name, len(order)))
    return [item[1] for item in ties] + [item[1] for item in ranked if not tied(item)]


#: A search slice runs until its time is up; its epoch count is only this ceiling.
SLICE_EPOCH_CEILING = 10_000


def slice_schedule(rung: int) -> dict:
    """The schedule of a search slice: a constant rate until its time is up. A continuation (rung ≥ 1) restarts AdamW
    from the previous rung's weights with empty moment estimates, whose first steps move every weight by about the full
    rate at once; it warms up linearly over its first epoch (a fraction of the epoch ceiling), as a fresh run does
    (rung 1 of the GPAW search: 4 of 10 continuations without warm-up gained nothing on validation)."""
    warmup = 0.0 if rung == 0 else 1.0 / SLICE_EPOCH_CEILING
    return {"epochs": SLICE_EPOCH_CEILING, "scheduler": "constant", "warmup_fraction": warmup}


def slice_or_fresh(share: float, slice_epochs: int, fresh_epochs: int) -> tuple[str, str]:
    """``"slice"`` or ``"fresh"`` and why. ``share``: the share of bootstrap resamples on which the slice has the
    lower score. The slice when that is at least :data:`CLEARLY_BETTER`, the fresh run when it is at most
    1 − :data:`CLEARLY_BETTER`; in between (within the noise) the one that trained more epochs, the fresh run on equal
    epochs."""
    if share >= CLEARLY_BETTER:
        return "slice", f"better on {share:.0%} of bootstrap resamples of the validation structures"
    if share > 1 - CLEARLY_BETTER and slice_epochs > fresh_epochs:
        return "slice", (f"within the validation noise (better on {share:.0%} of resamples) and trained longer "
                         f"({slice_epochs} vs {fresh_epochs} epochs)")
    return "fresh", (f"the slice is better on {share:.0%} of bootstrap resamples of the validation structures (needs "
                     f"{CLEARLY_BETTER:.0%}" + (")" if share <= 1 - CLEARLY_BETTER else
                                               f", or more epochs than the fresh run's {fresh_epochs})"))


def share_better(candidate: StructureErrors, other: StructureErrors, reference: dict, metric: str = "balanced",
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """Share of paired bootstrap resamples of the validation structures (the same structures for both models) on which
    ``candidate`` has the strictly lower score by ``metric`` (:func:`~atomtune.finetune.loop.selection_score`; the
    balanced one takes ratios to ``reference``, the E0-aligned zero-shot errors)."""
    count = len(candidate.energy_mev_per_atom)
    draws = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    wins = 0
    for indices in draws:
        mine = selection_score(metric, math.nan, candidate.metrics(indices), reference)
        theirs = selection_score(metric, math.nan, other.metrics(indices), reference)
        wins += mine < theirs - 1e-12
    return wins / resamples


class AutoSearch:
    """``AutoSearch(spec).fit(model, train, valid, out)``; ``spec``: a FinetuneSpec with ``strategy="auto"`` whose
    other settings (batch size, loss weights, E0, seed …) every candidate shares."""

    def __init__(self, spec, candidates: list[Candidate] | None = None):
        self.spec = spec
        self.candidates = candidates

    @property
    def metric(self) -> str:
        """What ranks the candidates and picks slice or fresh run: the spec's ``selection_metric``."""
        return self.spec.selection_metric

    def fit(self, model: str, train, valid, out, device: str = "cpu", resume: bool = False, general=None,
            progress: bool = True, trust: bool = False, log=print):
        out = Path(out)
        with OutputLock(out, "fine-tuning (auto)"):
            return self._fit(model, list(train), list(valid), out, device, general, progress, trust, log)

    # -- the search --------------------------------------------------------------------------------------------------
    def _fit(self, model, train, valid, out, device, general, progress, trust, log):
        if self.metric not in SEARCH_METRICS:
            raise AtomtuneError(
                f"--strategy auto ranks its candidates by {', '.join(SEARCH_METRICS)} on each validation structure; "
                f"--selection-metric {self.metric} is a whole-set loss that cannot be resampled per structure: use "
                f"one of those.")
        budget = self.spec.budget_seconds or DEFAULT_BUDGET_SECONDS
        started = time.perf_counter()
        deadline = started + budget
        state = self._read_state(out)
        candidates = candidates_for(self.spec) if self.candidates is None else list(self.candidates)
        if not candidates:
            raise AtomtuneError("--strategy auto has nothing to search: the candidate list is empty.")
        log(f"auto: {len(candidates)} candidates ({', '.join(c.name for c in candidates)}), budget {budget:.0f} s "
            f"(at most {SEARCH_FRACTION:.0%} to choose, the rest to train the winner)")

        self._probe(model, train, valid, device, trust, budget, state, out)
        if len(valid) < SMALL_VALIDATION:
            reason = (f"the validation set has {len(valid)} structure(s), fewer than the {SMALL_VALIDATION} a search "
                      f"needs to tell candidates apart (on the GPAW set with 2 validation structures two runs of the "
                      f"same search ended 28 % better and 55 % worse than zero-shot on held-out forces); give at least "
                      f"{SMALL_VALIDATION} validation structures for a search")
            warnings.warn(f"auto: {reason}", stacklevel=3)
            return self._train_without_search(candidates[0], reason, model, train, valid, out, device, trust, general,
                                              progress, deadline, started, state, log)
        # A candidate costs loading, featurizing and validation in every slice (about 1.5 slices per candidate over the
        # rungs; counted twice, since the probe sees a 4-structure set) plus at least one epoch of training: keep as
        # many candidates (most promising first) as the search time holds; fewer than ETA: no search (below).
        overhead = max(state["run_seconds"] - state["step_seconds"], 1e-3)
        epoch_seconds = state["step_seconds"] * math.ceil(len(train) / self.spec.batch_size)
        per_candidate = 3.0 * overhead + epoch_seconds
        fixed_seconds = self._fixed_run_seconds(state, len(train), len(valid))
        state["winner_reserve_seconds"] = max(budget * (1 - SEARCH_FRACTION), fixed_seconds)
        search_seconds = budget - state["winner_reserve_seconds"] - state["probe_seconds"]
        fitting = int(search_seconds / per_candidate) if search_seconds > 0 else 0
        if fitting < min(ETA, len(candidates)):
            # Successive halving needs ETA candidates to halve once; with fewer, a search would spend the budget on
            # one-epoch trials whose ranking is noise, or take epochs from the winner. Train the first (most promising)
            # candidate for all of it.
            needed = max((state["probe_seconds"] + ETA * per_candidate) / SEARCH_FRACTION,
                         state["probe_seconds"] + ETA * per_candidate + fixed_seconds)
            reason = (f"the budget of {budget:.0f} s holds {fitting} trial(s) besides the {fixed_seconds:.0f} s a run "
                      f"of the default {self.spec.resolved_epochs(len(train))} epochs needs, fewer than the {ETA} a "
                      f"search needs (here one training step on a batch of {self.spec.batch_size} structures takes "
                      f"{state['step_seconds']:.2f} s, an epoch of {len(train)} structures {epoch_seconds:.0f} s, and "
                      f"each trial run costs about {overhead:.0f} s of loading and validation; a search needs "
                      f"--budget ≥ {math.ceil(needed / 60)}m)")
            return self._train_without_search(candidates[0], reason, model, train, valid, out, device, trust, general,
                                              progress, deadline, started, state, log)
        if fitting < len(candidates):
            log(f"auto: the budget fits {fitting} of {len(candidates)} candidates; trying "
                f"{', '.join(c.name for c in candidates[:fitting])}")
            candidates = candidates[:fitting]
        rungs = max(1, math.ceil(math.log(len(candidates), ETA)))
        alive = list(candidates)
        reference = None
        for rung in range(rungs):
            if len(alive) == 1 and rung > 0:
                break
            if rung > 0 and self._search_time_left(state, alive, len(train), deadline) <= 0:
                log(f"auto: the epochs measured in rung {rung - 1} leave no time for rung {rung} beside the winner's "
                    f"{state['winner_reserve_seconds']:.0f} s; {alive[0].name} wins")
                for candidate in alive[1:]:
                    state["stopped"].setdefault(candidate.name, {"rung": rung - 1,
                                                                 "seconds": time.perf_counter() - started})
                alive = alive[:1]
                break
            slice_seconds = search_seconds / (rungs * len(alive))
            results = []
            for candidate in alive:
                row = self._run_slice(candidate, rung, slice_seconds, model, train, valid, out, device, trust,
                                      deadline, state)
                if row is None:
                    continue
                reference = reference or row["reference"]
                row["score"] = selection_score(self.metric, math.nan, row["valid"], reference)
                results.append((row["score"], candidate, row))
                self._write_state(out, state)
            if not results:
                raise AtomtuneError("auto: every candidate failed in the first rung; see the search log in "
                                    f"{out / SEARCH_FILE}.")
            ranked = rank_within_noise(results, candidates, reference, self.metric)
            keep = max(1, len(alive) // ETA)
            for candidate in ranked[keep:]:
                state["stopped"].setdefault(candidate.name, {"rung": rung,
                                                             "seconds": time.perf_counter() - started})
            alive = ranked[:keep]
            log(f"auto rung {rung}: kept {', '.join(c.name for c in alive)} (scores "
                f"{', '.join(f'{c.name} {s:.3f}' for s, c, _ in sorted(results, key=lambda item: item[0]))}; "
                f"candidates within the validation noise of the best keep the search order)")
        winner = alive[0]
        state["winner"] = winner.name
        remaining = deadline - time.perf_counter()
        log(f"auto: {winner.name} wins; training it afresh for {max(remaining, 0):.0f} s")
        result, fresh = self._train_winner(winner, model, train, valid, out, device, trust, general, progress,
                                           remaining, state, log)
        best_slice = min((row for row in state["rows"].values() if row.get("candidate") == winner.name
                          and "score" in row), key=lambda row: row["score"])
        slice_directory = out / "search" / winner.name / f"rung-{best_slice['rung']}"
        state["final_score"] = selection_score(self.metric, math.nan, result.metrics["final"]["valid"], reference)
        if fresh:
            result = self._slice_or_fresh(result, best_slice, slice_directory, valid, out, device, reference, state,
                                          log)
        return self._finish(result, winner.name, budget, started, state, out, log)

    def _slice_or_fresh(self, result, best_slice, slice_directory, valid, out, device, reference, state, log):
        """The winner's fresh run, or its best search slice when that is better on validation beyond the noise of the
        validation structures (:data:`CLEARLY_BETTER` of paired bootstrap resamples); within the noise the run that
        trained more epochs. The decision goes to ``state["decision"]``."""
        from atomtune.models import load_potential

        share = share_better(StructureErrors.from_dict(best_slice["per_structure"]),
                             StructureErrors.of(result.potential, valid, self.spec.batch_size), reference, self.metric)
        fresh_epochs, slice_epochs = result.metrics["epochs_run"], best_slice["epochs"]
        kept, why = slice_or_fresh(share, slice_epochs, fresh_epochs)
        state["decision"] = {"slice": f"{best_slice['candidate']}/rung-{best_slice['rung']}", "kept": kept,
                             "slice_score": best_slice["score"], "fresh_score": state["final_score"],
                             "slice_epochs": slice_epochs, "fresh_epochs": fresh_epochs,
                             "share_slice_better": share, "reason": why}
        log(f"auto: keeping the {'best search slice' if kept == 'slice' else 'fresh run'} of "
            f"{best_slice['candidate']} (validation score slice {best_slice['score']:.3f}, fresh "
            f"{state['final_score']:.3f}): {why}")
        if kept == "slice":
            result = self._adopt_slice(slice_directory, out, load_potential(str(slice_directory), device=device))
            state["final_score"] = best_slice["score"]
        return result

    def _finish(self, result, winner: str, budget: float, started: float, state: dict, out: Path, log):
        """The search's summary: a row for the returned model in the search log, the plot, ``metrics.json``'s
        ``search`` entry, and a note when the model is the E0-aligned zero-shot (nothing beat it on validation)."""
        metrics, decision = result.metrics, state.get("decision", {})
        # an adopted slice starts from the previous rung's model: its saved epoch 0 is not the zero-shot model
        zero_shot_kept = metrics.get("saved_epoch") == 0 and decision.get("kept") != "slice"
        if zero_shot_kept:
            log("auto: no epoch of the winner beat the E0-aligned zero-shot on the validation score; the model is the "
                "foundation model with the per-element energies refitted on the training set")
        history = metrics.get("history", [])
        state["rows"][f"{winner}/final"] = {
            "candidate": winner, "rung": "final", "finished": True, "valid": metrics["final"]["valid"],
            "score": state.get("final_score"), "learning_rate": (getattr(result, "record", None) or {}).get(
                "settings", {}).get("learning_rate"),
            "seconds": sum(h.get("seconds", 0.0) for h in history),
            "epochs": decision["slice_epochs"] if decision.get("kept") == "slice" else metrics.get("epochs_run"),
            "curve": [[h.get("seconds", 0.0), h["valid_score"]] for h in history
                      if h.get("epoch", 0) > 0 and "valid_score" in h],
        }
        state["total_seconds"] = time.perf_counter() - started
        self._write_state(out, state)
        plot_search(state, out / "search.png")
        metrics["search"] = {"winner": winner, "file": SEARCH_FILE, "plot": "search.png", "budget_seconds": budget,
                             "total_seconds": state["total_seconds"], "zero_shot_kept": zero_shot_kept}
        for key in ("search_skipped", "decision"):
            if key in state:
                metrics["search"][key.removeprefix("search_")] = state[key]
        atomic_write_json(out / "metrics.json", metrics)
        return result

    def _probe(self, model, train, valid, device, trust, budget, state, out) -> None:
        """Time one training step on one batch before searching; refuse a budget that cannot hold one."""
        if "probe_seconds" in state:
            return
        from atomtune.finetune import Full, Trainer
        from atomtune.models import load_potential

        started = time.perf_counter()
        potential = load_potential(model, device=device, dtype=self.spec.dtype, trust=trust)
        batch = train[: self.spec.batch_size]
        settings = self.spec.model_copy(update={"strategy": "full", "epochs": 1, "e0": False, "budget": None})
        settings = settings.training_settings(potential.backbone, progress=False, n_train=len(batch),
                                              learning_curve=False)
        Trainer(settings).fit(potential, batch, valid[:1], Full())
        first = time.perf_counter()  # the first run in a process pays one-off imports and warm-up; time a second one
        potential = load_potential(model, device=device, dtype=self.spec.dtype, trust=trust)
        probe = Trainer(settings).fit(potential, batch, valid[:1], Full())
        seconds = time.perf_counter() - first
        step = probe.history[-1]["seconds"]  # one optimizer step and one validation structure
        state.update(probe_seconds=time.perf_counter() - started, run_seconds=seconds, step_seconds=step,
                     backbone=potential.backbone)
        if state["probe_seconds"] + step > budget:
            raise BudgetError(
                f"a budget of {budget:.0f} s is too short: one training step on a batch of {len(batch)} structures "
                f"takes {step:.2f} s here (loading and checking the model {seconds - step:.1f} s). Give a longer "
                f"--budget, or choose a strategy and --epochs yourself."
            )
        self._write_state(out, state)

    def _spec_of(self, candidate: Candidate, backbone: str | None, **changes):
        overrides = dict(candidate.overrides)
        factor = overrides.pop("learning_rate_factor", None)
        spec = self.spec.model_copy(update={**overrides, "budget": None, **changes})
        if factor is not None and backbone is not None:
            spec = spec.model_copy(update={"learning_rate": spec.resolved_learning_rate(backbone) * factor})
        return type(self.spec).model_validate(spec.model_dump())

    def _run_slice(self, candidate, rung, seconds, model, train, valid, out, device, trust, deadline, state):
        """Train ``candidate`` for ``seconds`` more (continuing from its previous rung); its row of the search log."""
        from atomtune.finetune.checkpoint import has_checkpoint

        key = f"{candidate.name}/rung-{rung}"
        if key in state["rows"] and state["rows"][key].get("finished"):
            return state["rows"][key]
        directory = out / "search" / candidate.name / f"rung-{rung}"
        start_from = model if rung == 0 else str(out / "search" / candidate.name / f"rung-{rung - 1}")
        # the slice's training time: its share, less what loading, featurizing and validating a run costs
        overhead = state.get("overhead_seconds", state["run_seconds"])
        # leave the winner its share: never eat into the time after the search phase
        search_end = deadline - self._winner_reserve(state)
        seconds = max(1.0, min(seconds, search_end - time.perf_counter()) - overhead)
        backbone = state.get("backbone")
        spec = self._spec_of(candidate, backbone, **slice_schedule(rung), e0=self.spec.e0 if rung == 0 else False,
                             budget=seconds)
        began = time.perf_counter()
        try:
            result = spec.fit(start_from, train, valid, directory, device=device, resume=has_checkpoint(directory),
                              progress=False, trust=trust, log=lambda message: None, learning_curve=False)
        except AtomtuneError as error:  # a candidate the backbone cannot do (e.g. a freeze depth it lacks)
            state["rows"][key] = {"candidate": candidate.name, "rung": rung, "error": str(error), "finished": True}
            state["stopped"][candidate.name] = {"rung": rung, "error": str(error)}
            return None
        # each validation structure's errors, for telling differences from the noise of a few structures
        per_structure = StructureErrors.of(result.potential, valid, self.spec.batch_size).as_dict()
        metrics = json.loads((directory / METRICS_FILE).read_text())
        trained = sum(h.get("seconds", 0.0) for h in metrics["history"])
        state["overhead_seconds"] = max(state.get("overhead_seconds", 0.0), time.perf_counter() - began - trained)
        zero_shot = metrics["zero_shot"].get("valid_after_e0") or metrics["zero_shot"]["valid"]
        previous = state["rows"].get(f"{candidate.name}/rung-{rung - 1}", {})
        row = {
            "candidate": candidate.name, "rung": rung, "finished": True,
            "settings": {k: v for k, v in spec.model_dump().items() if k in ("strategy", "freeze_depth", "lora_rank")},
            "learning_rate": result.record.get("settings", {}).get("learning_rate"),
            "seconds": trained + previous.get("seconds", 0.0),
            "epochs": metrics["epochs_run"] + previous.get("epochs", 0),
            "valid": metrics["final"]["valid"],
            "per_structure": per_structure,
            "reference": previous.get("reference") or zero_shot,
            "curve": previous.get("curve", []) + [
                [h.get("seconds", 0.0), h["valid_score"]] for h in metrics["history"] if h["epoch"] > 0
            ],
        }
        state["rows"][key] = row
        return row

    def _winner_reserve(self, state: dict) -> float:
        budget = self.spec.budget_seconds or DEFAULT_BUDGET_SECONDS
        return state.get("winner_reserve_seconds", budget * (1 - SEARCH_FRACTION))

    def _search_time_left(self, state: dict, alive: list[Candidate], n_train: int, deadline: float) -> float:
        """Seconds left for the next rung once the winner's reserve is set again from the epochs the search measured
        (the probe's one step underestimated them: SevenNet-0, N = 50, under load 10, an epoch with validation took
        12 s where the probe said 7, and the winner trained 7 of the default 15 epochs); the next rung needs at least
        one epoch and one run's overhead per candidate, or nothing is left."""
        rows = [row for row in state["rows"].values() if isinstance(row.get("rung"), int) and row.get("epochs")
                and row["candidate"] in {candidate.name for candidate in alive}]
        if not rows:
            return 0.0
        epoch_seconds = max(row["seconds"] / row["epochs"] for row in rows)
        overhead = state.get("overhead_seconds", state["run_seconds"])
        state["winner_reserve_seconds"] = max(state["winner_reserve_seconds"],
                                              overhead + self.spec.resolved_epochs(n_train) * epoch_seconds)
        left = deadline - state["winner_reserve_seconds"] - time.perf_counter()
        return left - len(alive) * (overhead + epoch_seconds) if left > 0 else left

    def _fixed_run_seconds(self, state: dict, n_train: int, n_valid: int) -> float:
        """What a fixed run of the default epochs takes, from the probe: loading and checking the model, then every
        epoch's training steps and validation batches (a validation batch counted as a training step: an upper
        bound)."""
        steps = math.ceil(n_train / self.spec.batch_size) + math.ceil(n_valid / self.spec.batch_size)
        return state["run_seconds"] + self.spec.resolved_epochs(n_train) * steps * state["step_seconds"]

    def _train_without_search(self, candidate, reason, model, train, valid, out, device, trust, general, progress,
                              deadline, started, state, log):
        """A budget too short to compare candidates: ``candidate`` (the first, most promising one) trains from ``model``
        with its defaults for the whole remaining budget, as a fixed strategy would; the search log says why."""
        from atomtune.finetune.checkpoint import has_checkpoint

        log(f"auto: no search: {reason}; training {candidate.name} for the whole budget")
        state.update(winner=candidate.name, search_skipped=reason)
        self._write_state(out, state)
        # the run's budget covers its epochs; loading, featurizing and the final validation come on top (the probe's
        # run less its step): without this a 2-minute SevenNet-0 run under load 10 took 133 s
        overhead = max(state["run_seconds"] - state["step_seconds"], 0.0)
        state["final_run_budget_seconds"] = max(deadline - time.perf_counter() - overhead, 1.0)
        spec = self._spec_of(candidate, state.get("backbone"), budget=state["final_run_budget_seconds"])
        result = spec.fit(model, train, valid, out, device=device, resume=has_checkpoint(out), general=general,
                          progress=progress, trust=trust, log=log)
        zero_shot = result.metrics["zero_shot"].get("valid_after_e0") or result.metrics["zero_shot"]["valid"]
        state["final_score"] = selection_score(self.metric, math.nan, result.metrics["final"]["valid"], zero_shot)
        return self._finish(result, candidate.name, deadline - started, started, state, out, log)

    def _train_winner(self, winner, model, train, valid, out, device, trust, general, progress, remaining, state,
                      log):
        """The winner trains afresh from ``model`` with its defaults (warm-up, cosine schedule, E0) for the time left,
        into ``out``. Continuing from its last slice restarted AdamW's moments at the full rate and scrambled the model
        (a continuation's validation score went 1.0 → 1.73 in its first epochs); a fresh run is the fixed strategy the
        search chose. :meth:`_fit` keeps the best slice instead when the fresh run ends worse on validation."""
        from atomtune.finetune.checkpoint import has_checkpoint
        from atomtune.models import load_potential

        rows = [row for row in state["rows"].values() if row.get("candidate") == winner.name and "valid" in row
                and isinstance(row["rung"], int)]
        last = max(rows, key=lambda row: row["rung"])
        training = remaining - state.get("overhead_seconds", state["run_seconds"])
        if training < 1.0:  # no time left to train the winner: its last slice is the result
            log("auto: no time left to train the winner afresh; its last search slice is the model")
            directory = out / "search" / winner.name / f"rung-{last['rung']}"
            return self._adopt_slice(directory, out, load_potential(str(directory), device=device)), False
        # a run cut by the budget stops mid-schedule at a high rate: give it the epochs its time holds (measured on
        # its search slices), so warm-up and cosine complete
        epoch_seconds = last["seconds"] / max(last["epochs"], 1)
        epochs = self.spec.resolved_epochs(len(train))
        if epoch_seconds > 0 and training / epoch_seconds < epochs:
            epochs = max(1, int(training / epoch_seconds))
            log(f"auto: {winner.name}'s {training:.0f} s hold {epochs} epochs of {epoch_seconds:.1f} s; training "
                f"{epochs} so that its schedule completes")
        state["final_run_budget_seconds"] = training
        spec = self._spec_of(winner, state.get("backbone"), budget=training, epochs=epochs)
        return spec.fit(model, train, valid, out, device=device, resume=has_checkpoint(out), general=general,
                        progress=progress, trust=trust, log=log), True

    @staticmethod
    def _adopt_slice(directory: Path, out: Path, potential):
        """A search slice's model (``potential``, loaded from ``directory``) and metrics as the result in ``out``; its
        zero-shot and "worse than zero-shot" are the foundation model's (rung 0's start), not its own start (the
        previous rung's model)."""
        from atomtune.finetune import FitResult

        metrics = json.loads((directory / METRICS_FILE).read_text())
        first = directory.parent / "rung-0" / METRICS_FILE
        if first.is_file():
            metrics["zero_shot"] = json.loads(first.read_text())["zero_shot"]
        metrics["worse_than_zero_shot"] = worse_than_zero_shot(metrics["zero_shot"], metrics["final"]["valid"])
        potential.save(out)
        atomic_write_json(out / METRICS_FILE, metrics)
        return FitResult(potential, metrics["history"], metrics, out)

    # -- state on disk -----------------------------------------------------------------------------------------------
    def _read_state(self, out: Path) -> dict:
        path = out / SEARCH_FILE
        fingerprint = self.spec.fingerprint()
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except ValueError:
                state = {}
            if state.get("spec") == fingerprint:
                return state
        return {"spec": fingerprint, "rows": {}, "stopped": {}}

    @staticmethod
    def _write_state(out: Path, state: dict) -> None:
        atomic_write_json(out / SEARCH_FILE, state, lenient=True)


def plot_search(state: dict, path: Path) -> Path:
    """Validation score (balanced, 1 = zero-shot after E0) against training time for every candidate, a cross where a
    candidate was stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.0, 4.0))
    by_candidate: dict[str, list] = {}
    for row in state["rows"].values():
        if "curve" in row:
            name = row["candidate"] + (" (trained afresh)" if row.get("rung") == "final" else "")
            current = by_candidate.get(name)
            if current is None or len(row["curve"]) > len(current):
                by_candidate[name] = row["curve"]
    for name, curve in sorted(by_candidate.items()):
        times = list(_cumulative([point[0] for point in curve]))
        scores = [point[1] for point in curve]
        (line,) = axis.plot(times, scores, "o-", ms=3, label=name + (" (winner)" if name == state.get("winner") else ""))
        if name in state.get("stopped", {}) and times:
            axis.plot(times[-1], scores[-1], "x", color=line.get_color(), ms=9)
    axis.axhline(1.0, color="0.6", lw=0.8, ls="--")
    axis.set_xlabel("training time (s)")
    axis.set_ylabel("validation score (1 = E0-aligned zero-shot)")
    axis.set_title("strategy search (× = stopped)")
    if by_candidate:
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _cumulative(values):
    total = 0.0
    for value in values:
        total += value
        yield total


__all__ = ["AutoSearch", "BudgetError", "Candidate", "StructureErrors", "candidates_for", "plot_search",
           "rank_within_noise", "share_better", "slice_or_fresh"]
