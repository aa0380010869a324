"""``--strategy auto --budget 10m``: choose the strategy (full / freeze depth / LoRA rank) and learning rate within a
wall-time budget by successive halving, then train the winner for the rest of the budget.

Synchronous successive halving (Jamieson & Talwalkar, AISTATS 2016; the building block of Hyperband): every candidate
trains for a short slice of time, the best third (by the balanced validation score, :func:`~atomtune.finetune.loop.
selection_score`) continue from where they stopped with three times the time, until one is left; it then trains afresh
from the foundation model with its defaults for what remains of the budget (the best slice is kept when that run ends
worse on validation); a budget that holds fewer than three trials trains the first candidate without a search. Each slice is an ordinary checkpointed fine-tuning run in ``OUT/search/<candidate>/rung-k``,
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

from atomtune.exceptions import AtomtuneError
from atomtune.files import OutputLock, atomic_write_json

#: Default budget of ``--strategy auto`` when none is given.
DEFAULT_BUDGET_SECONDS = 600.0
#: Share of the budget spent choosing; the rest trains the winner.
SEARCH_FRACTION = 0.5
#: Keep the best 1/ETA of the candidates at each rung.
ETA = 3
SEARCH_FILE = "search.json"
#: Fewer validation structures than this: the search warns that its choices follow their noise.
SMALL_VALIDATION = 5


class BudgetError(AtomtuneError):
    """The time budget cannot hold even one training step."""


@dataclass(frozen=True)
class Candidate:
    name: str
    overrides: dict


def candidates_for(spec) -> list[Candidate]:
    """The default search space around ``spec``, most promising first (a short budget keeps the first ones): full,
    LoRA rank 8, freeze of the last 2 blocks, full at 3× the rate, LoRA rank 32, freeze of the readout only (each at the
    strategy's default rate unless ``spec.learning_rate`` pins it)."""
    rate = {} if spec.learning_rate is None else {"learning_rate": spec.learning_rate}
    return [
        Candidate("full", {"strategy": "full", **rate}),
        Candidate("lora-8", {"strategy": "lora", "lora_rank": 8, **rate}),
        Candidate("freeze-2", {"strategy": "freeze", "freeze_depth": 2, **rate}),
        Candidate("full-lr3x", {"strategy": "full", "learning_rate_factor": 3.0}),
        Candidate("lora-32", {"strategy": "lora", "lora_rank": 32, **rate}),
        Candidate("freeze-1", {"strategy": "freeze", "freeze_depth": 1, **rate}),
    ]


#: The candidate a backbone's short budgets try first (a budget that holds fewer than three trials trains only it), where
#: measurement says it is not ``full``: SevenNet-0 on the shipped GPAW set (benchmarks/bench_finetune_auto.py, N = 25,
#: 2 and 5 min): LoRA r 8 at its default rate 123 meV/Å vs full 161 and freeze 178 (zero-shot 176); on the EMT cells of
#: docs/finetuning.md LoRA 190 vs full 202. CHGNet keeps ``full`` first (N = 50: full 58, LoRA 63 meV/Å).
FIRST_CANDIDATE: dict[str, str] = {"sevennet": "lora-8"}


def prefer_for_backbone(candidates: list[Candidate], backbone: str | None) -> list[Candidate]:
    """``candidates`` with the backbone's :data:`FIRST_CANDIDATE` moved to the front (unchanged for other backbones)."""
    first = FIRST_CANDIDATE.get(backbone or "")
    return sorted(candidates, key=lambda candidate: candidate.name != first) if first else list(candidates)


class AutoSearch:
    """``AutoSearch(spec).fit(model, train, valid, out)``; ``spec``: a FinetuneSpec with ``strategy="auto"`` whose
    other settings (batch size, loss weights, E0, seed …) every candidate shares."""

    def __init__(self, spec, candidates: list[Candidate] | None = None):
        self.spec = spec
        self.candidates = candidates

    def fit(self, model: str, train, valid, out, device: str = "cpu", resume: bool = False, general=None,
            progress: bool = True, trust: bool = False, log=print):
        out = Path(out)
        with OutputLock(out, "fine-tuning (auto)"):
            return self._fit(model, list(train), list(valid), out, device, general, progress, trust, log)

    # -- the search --------------------------------------------------------------------------------------------------
    def _fit(self, model, train, valid, out, device, general, progress, trust, log):
        from atomtune.finetune.loop import selection_score

        budget = self.spec.budget_seconds or DEFAULT_BUDGET_SECONDS
        started = time.perf_counter()
        deadline = started + budget
        state = self._read_state(out)
        candidates = candidates_for(self.spec) if self.candidates is None else list(self.candidates)
        if not candidates:
            raise AtomtuneError("--strategy auto has nothing to search: the candidate list is empty.")
        log(f"auto: {len(candidates)} candidates ({', '.join(c.name for c in candidates)}), budget {budget:.0f} s "
            f"({SEARCH_FRACTION:.0%} to choose, the rest to train the winner)")

        if len(valid) < SMALL_VALIDATION:
            message = (f"auto: the validation set has {len(valid)} structure(s); every choice of the search is made on "
                       f"them, so it follows their noise (on the GPAW set with 2 validation structures two runs of the "
                       f"same search ended 28 % better and 55 % worse than zero-shot on held-out forces). Give at least "
                       f"{SMALL_VALIDATION} validation structures, or choose a strategy yourself.")
            warnings.warn(message, stacklevel=3)
            log(message)
        self._probe(model, train, valid, device, trust, budget, state, out)
        if self.candidates is None:
            candidates = prefer_for_backbone(candidates, state.get("backbone"))
        search_seconds = budget * SEARCH_FRACTION - state["probe_seconds"]
        # A candidate costs loading, featurizing and validation in every slice (about 1.5 slices per candidate over the
        # rungs; counted twice, since the probe sees a 4-structure set) plus at least one epoch of training: keep as
        # many candidates (most promising first) as the search time holds; fewer than ETA: no search (below).
        overhead = max(state["run_seconds"] - state["step_seconds"], 1e-3)
        epoch_seconds = state["step_seconds"] * math.ceil(len(train) / self.spec.batch_size)
        per_candidate = 3.0 * overhead + epoch_seconds
        fitting = int(search_seconds / per_candidate) if search_seconds > 0 else 0
        if fitting < min(ETA, len(candidates)):
            # Successive halving needs ETA candidates to halve once; with fewer, a search would spend half the budget
            # on one-epoch trials whose ranking is noise. Train the first (most promising) candidate for all of it.
            needed = (state["probe_seconds"] + ETA * per_candidate) / SEARCH_FRACTION
            reason = (f"the budget of {budget:.0f} s holds {fitting} trial(s), fewer than the {ETA} a search needs (here "
                      f"one training step on a batch of {self.spec.batch_size} structures takes "
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
            slice_seconds = search_seconds / (rungs * len(alive))
            results = []
            for candidate in alive:
                row = self._run_slice(candidate, rung, slice_seconds, model, train, valid, out, device, trust,
                                      deadline, state)
                if row is None:
                    continue
                reference = reference or row["reference"]
                row["score"] = selection_score("balanced", math.nan, row["valid"], reference)
                results.append((row["score"], candidate))
                self._write_state(out, state)
            if not results:
                raise AtomtuneError("auto: every candidate failed in the first rung; see the search log in "
                                    f"{out / SEARCH_FILE}.")
            results.sort(key=lambda item: item[0])
            keep = max(1, len(alive) // ETA)
            for _, candidate in results[keep:]:
                state["stopped"].setdefault(candidate.name, {"rung": rung,
                                                             "seconds": time.perf_counter() - started})
            alive = [candidate for _, candidate in results[:keep]]
            log(f"auto rung {rung}: kept {', '.join(c.name for c in alive)} "
                f"(scores {', '.join(f'{s:.3f}' for s, _ in results)})")
        winner = alive[0]
        state["winner"] = winner.name
        remaining = deadline - time.perf_counter()
        log(f"auto: {winner.name} wins; training it afresh for {max(remaining, 0):.0f} s")
        result = self._train_winner(winner, model, train, valid, out, device, trust, general, progress, remaining,
                                    state, log)
        best_slice = min((row for row in state["rows"].values() if row.get("candidate") == winner.name
                          and "score" in row), key=lambda row: row["score"])
        final_score = selection_score("balanced", math.nan, result.metrics["final"]["valid"], reference)
        state["final_score"] = final_score
        if final_score > best_slice["score"] + 1e-9:
            # continuing did not help on the search's own yardstick: the best slice is the model
            log(f"auto: training {winner.name} on did not improve the validation score ({best_slice['score']:.3f} → "
                f"{final_score:.3f}); keeping its best search slice")
            result = self._adopt_slice(out / "search" / winner.name / f"rung-{best_slice['rung']}", out, device)
            state["final_score"] = best_slice["score"]
        state["total_seconds"] = time.perf_counter() - started
        self._write_state(out, state)
        plot_search(state, out / "search.png")
        result.metrics["search"] = {"winner": winner.name, "file": SEARCH_FILE, "plot": "search.png",
                                    "budget_seconds": budget, "total_seconds": state["total_seconds"]}
        atomic_write_json(out / "metrics.json", result.metrics)
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
        from atomtune.finetune.loop import METRICS_FILE

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
        # a slice runs until its time is up: constant rate, no warm-up (the epoch count is only a ceiling)
        spec = self._spec_of(candidate, backbone, epochs=10_000, scheduler="constant", warmup_fraction=0.0,
                             e0=self.spec.e0 if rung == 0 else False, budget=seconds)
        began = time.perf_counter()
        try:
            result = spec.fit(start_from, train, valid, directory, device=device, resume=has_checkpoint(directory),
                              progress=False, trust=trust, log=lambda message: None, learning_curve=False)
        except AtomtuneError as error:  # a candidate the backbone cannot do (e.g. a freeze depth it lacks)
            state["rows"][key] = {"candidate": candidate.name, "rung": rung, "error": str(error), "finished": True}
            state["stopped"][candidate.name] = {"rung": rung, "error": str(error)}
            return None
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
            "reference": previous.get("reference") or zero_shot,
            "curve": previous.get("curve", []) + [
                [h.get("seconds", 0.0), h["valid_score"]] for h in metrics["history"] if h["epoch"] > 0
            ],
        }
        state["rows"][key] = row
        return row

    def _winner_reserve(self, state: dict) -> float:
        budget = self.spec.budget_seconds or DEFAULT_BUDGET_SECONDS
        return budget * (1 - SEARCH_FRACTION)

    def _train_without_search(self, candidate, reason, model, train, valid, out, device, trust, general, progress,
                              deadline, started, state, log):
        """A budget too short to compare candidates: ``candidate`` (the first, most promising one) trains from ``model``
        with its defaults for the whole remaining budget, as a fixed strategy would; the search log says why."""
        from atomtune.finetune.checkpoint import has_checkpoint

        log(f"auto: no search: {reason}; training {candidate.name} for the whole budget")
        state.update(winner=candidate.name, search_skipped=reason)
        self._write_state(out, state)
        spec = self._spec_of(candidate, state.get("backbone"), budget=max(deadline - time.perf_counter(), 1.0))
        result = spec.fit(model, train, valid, out, device=device, resume=has_checkpoint(out), general=general,
                          progress=progress, trust=trust, log=log)
        state["total_seconds"] = time.perf_counter() - started
        self._write_state(out, state)
        result.metrics["search"] = {"winner": candidate.name, "file": SEARCH_FILE, "skipped": reason,
                                    "budget_seconds": deadline - started, "total_seconds": state["total_seconds"]}
        atomic_write_json(out / "metrics.json", result.metrics)
        return result

    def _train_winner(self, winner, model, train, valid, out, device, trust, general, progress, remaining, state,
                      log):
        """The winner trains afresh from ``model`` with its defaults (warm-up, cosine schedule, E0) for the time left,
        into ``out``. Continuing from its last slice restarted AdamW's moments at the full rate and scrambled the model
        (a continuation's validation score went 1.0 → 1.73 in its first epochs); a fresh run is the fixed strategy the
        search chose. :meth:`_fit` keeps the best slice instead when the fresh run ends worse on validation."""
        from atomtune.finetune.checkpoint import has_checkpoint

        rows = [row for key, row in state["rows"].items() if row.get("candidate") == winner.name and "valid" in row]
        last = max(rows, key=lambda row: row["rung"])
        training = remaining - state.get("overhead_seconds", state["run_seconds"])
        if training < 1.0:  # no time left to train the winner: its last slice is the result
            log("auto: no time left to train the winner afresh; its last search slice is the model")
            return self._adopt_slice(out / "search" / winner.name / f"rung-{last['rung']}", out, device)
        spec = self._spec_of(winner, state.get("backbone"), budget=training)
        return spec.fit(model, train, valid, out, device=device, resume=has_checkpoint(out), general=general,
                        progress=progress, trust=trust, log=log)

    @staticmethod
    def _adopt_slice(directory: Path, out: Path, device: str):
        """A search slice's model and metrics as the result in ``out``."""
        from atomtune.finetune import FitResult
        from atomtune.finetune.loop import METRICS_FILE
        from atomtune.models import load_potential

        potential = load_potential(str(directory), device=device)
        metrics = json.loads((directory / METRICS_FILE).read_text())
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
            current = by_candidate.get(row["candidate"])
            if current is None or len(row["curve"]) > len(current):
                by_candidate[row["candidate"]] = row["curve"]
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


__all__ = ["AutoSearch", "BudgetError", "Candidate", "candidates_for", "plot_search"]
