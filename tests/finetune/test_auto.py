"""``--strategy auto``: successive halving over strategies within a wall-time budget, resumable, never worse than the
best fixed strategy it tried."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from atomtune.exceptions import AtomtuneError
from atomtune.finetune.auto import AutoSearch, BudgetError, Candidate
from atomtune.finetune.loop import selection_score
from atomtune.finetune.spec import FinetuneSpec, parse_budget

RUN = """
import sys
sys.path.insert(0, {tests!r})
from emt_data import emt_structures
from atomtune.models import registry
registry.BACKBONES["toy"] = "toy_potential:ToyPotential"
from atomtune.finetune.spec import FinetuneSpec
from atomtune.runtime import configure_threads
configure_threads(1)
structures = emt_structures(18, seed=3)
FinetuneSpec(strategy="auto", budget={budget!r}).fit({model!r}, structures[:12], structures[12:], {out!r},
                                                      progress=False)
"""


@pytest.fixture
def toy_model(toy_backbone, tmp_path):
    toy_backbone().save(tmp_path / "toy-model")
    return str(tmp_path / "toy-model")


@pytest.fixture
def search_split():
    """12 training and 6 validation structures: enough validation structures for a search (SMALL_VALIDATION)."""
    from emt_data import emt_structures

    structures = emt_structures(18, seed=3)
    return structures[:12], structures[12:]


def test_budget_parsing():
    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1.5h") == 5400
    assert parse_budget(30) == 30
    with pytest.raises(ValueError, match="like 90s, 10m"):
        parse_budget("ten minutes")
    with pytest.raises(AtomtuneError, match="--budget"):
        from atomtune.cli.finetune import spec_from_options

        spec_from_options({"strategy": "auto", "budget": "soon"})


def test_auto_respects_the_budget_and_is_no_worse_than_what_it_tried(toy_model, search_split, tmp_path):
    from atomtune.finetune.auto import CLEARLY_BETTER

    budget = 40.0
    started = time.perf_counter()
    result = FinetuneSpec(strategy="auto", budget=budget).fit(toy_model, *search_split, tmp_path / "auto",
                                                                progress=False, log=lambda message: None)
    wall = time.perf_counter() - started
    state = json.loads((tmp_path / "auto" / "search.json").read_text())
    step = state["step_seconds"]
    assert wall <= budget * 1.1 + step + 2.0, (wall, state)
    assert (tmp_path / "auto" / "search.png").exists() and (tmp_path / "auto" / "atomtune.json").exists()
    rung0 = [row["score"] for row in state["rows"].values() if row.get("rung") == 0 and "score" in row]
    assert len(rung0) >= 2 and state["winner"]
    # no worse on validation than the best slice it tried, or within the validation noise of it (the fresh run kept)
    decision = state.get("decision", {})
    assert state["final_score"] <= min(rung0) + 1e-9 or (
        decision["kept"] == "fresh" and decision["share_slice_better"] < CLEARLY_BETTER), state
    assert result.metrics["search"]["winner"] == state["winner"]
    # every candidate not kept is recorded with the rung where it stopped
    assert set(state["stopped"]) | {state["winner"]} == {row["candidate"] for row in state["rows"].values()}


def test_auto_resumes_after_sigkill_without_rerunning_finished_candidates(toy_model, tmp_path):
    tests = str(Path(__file__).resolve().parents[1])
    out = tmp_path / "auto"
    script = RUN.format(tests=tests, budget=40.0, model=toy_model, out=str(out))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    finished: dict = {}
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            rows = json.loads((out / "search.json").read_text())["rows"]
        except (OSError, ValueError):
            rows = {}
        if len(rows) >= 2:
            finished = {key: (out / "search" / key / "metrics.json").stat().st_mtime_ns for key in rows}
            break
        time.sleep(0.2)
    assert process.poll() is None, "the search finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for key, mtime in finished.items():
        assert (out / "search" / key / "metrics.json").stat().st_mtime_ns == mtime, f"{key} was rerun"
    assert json.loads((out / "search.json").read_text())["winner"]


def test_budget_shorter_than_a_step_says_how_long_a_step_takes(toy_model, emt_split, tmp_path):
    with pytest.raises(BudgetError, match=r"one training step on a batch of 4 structures takes [0-9.]+ s"):
        FinetuneSpec(strategy="auto", budget=0.01).fit(toy_model, *emt_split, tmp_path / "auto", progress=False,
                                                       log=lambda message: None)


def test_nothing_to_search_and_unsupported_candidates(toy_model, search_split, tmp_path):
    spec = FinetuneSpec(strategy="auto", budget=60)
    with pytest.raises(AtomtuneError, match="nothing to search"):
        AutoSearch(spec, candidates=[]).fit(toy_model, *search_split, tmp_path / "empty", log=lambda message: None)
    # a freeze depth the toy backbone does not have is recorded as that candidate's error; the others go on
    candidates = [Candidate("freeze-99", {"strategy": "freeze", "freeze_depth": 99}),
                  Candidate("full", {"strategy": "full"})]
    result = AutoSearch(spec, candidates=candidates).fit(toy_model, *search_split, tmp_path / "mixed",
                                                         log=lambda message: None)
    state = json.loads((tmp_path / "mixed" / "search.json").read_text())
    assert "error" in state["stopped"]["freeze-99"] and state["winner"] == "full"
    assert math.isfinite(selection_score("balanced", 0.0, result.metrics["final"]["valid"],
                                         result.metrics["final"]["valid"]))


def _fake_probe(timings):
    def probe(self, model, train, valid, device, trust, budget, state, out):
        state.update(timings)

    return probe


def test_a_short_budget_searches_fewer_candidates_or_trains_the_first_without_search(toy_model, search_split,
                                                                                     tmp_path, monkeypatch):
    """Bug: the step probe asked for two epochs of all six candidates (a 2-minute budget on a loaded machine was
    refused) although the search keeps only the candidates the budget holds. Below three candidates (one halving) a
    search is noise: the first candidate trains for the whole budget and the search log says why."""
    monkeypatch.setattr(AutoSearch, "_probe", _fake_probe(
        {"probe_seconds": 1.0, "run_seconds": 1.5, "step_seconds": 0.5, "backbone": "toy"}))
    train, valid = search_split
    epoch = 0.5 * math.ceil(len(train) / 4)
    per_candidate = 3 * 1.0 + epoch  # the slices' overhead (3 x (run - step seconds)) and one epoch
    messages = []
    budget = 2 * (1.0 + 3.5 * per_candidate)  # holds three candidates, not four; 2 epochs fit in the other half
    AutoSearch(FinetuneSpec(strategy="auto", budget=budget, epochs=2)).fit(toy_model, train, valid,
                                                                           tmp_path / "three", log=messages.append)
    assert any("fits 3 of 6 candidates" in message for message in messages), messages
    messages.clear()
    result = AutoSearch(FinetuneSpec(strategy="auto", budget=2 * (1.0 + 2.5 * per_candidate), epochs=2)).fit(
        toy_model, train, valid, tmp_path / "two", log=messages.append)
    assert any("no search" in message and "takes 0.50 s" in message for message in messages), messages
    state = json.loads((tmp_path / "two" / "search.json").read_text())
    assert state["winner"] == "full" and "fewer than the 3" in state["search_skipped"]
    assert result.metrics["search"]["skipped"] and result.metrics["epochs_run"] >= 1
    assert (tmp_path / "two" / "atomtune.json").exists() and (tmp_path / "two" / "search.png").exists()
    # the search log has a row for the model that was returned, so `atomtune finetune` prints it
    assert state["rows"]["full/final"]["rung"] == "final" and state["rows"]["full/final"]["epochs"] >= 1


def test_the_search_leaves_the_winner_the_time_of_a_fixed_run(toy_model, search_split, tmp_path, monkeypatch):
    """Bug: the search took half of every budget, so on the GPAW set SevenNet's winner trained 3-5 epochs where a
    fixed run of the same budget trained 14. Now the search gets only what a run of the default epochs leaves: a
    budget whose half would hold three trials, but not beside a 10-epoch run, is not searched."""
    monkeypatch.setattr(AutoSearch, "_probe", _fake_probe(
        {"probe_seconds": 0.1, "run_seconds": 0.15, "step_seconds": 0.05, "backbone": "toy"}))
    train, valid = search_split
    per_candidate = 3 * 0.1 + 0.05 * math.ceil(len(train) / 4)
    budget = 2 * (0.1 + 3.5 * per_candidate)  # the old rule: three trials in the first half
    fixed = 0.15 + 10 * (math.ceil(len(train) / 4) + math.ceil(len(valid) / 4)) * 0.05
    assert fixed > budget / 2
    messages = []
    AutoSearch(FinetuneSpec(strategy="auto", budget=budget, epochs=10)).fit(toy_model, train, valid, tmp_path / "a",
                                                                            log=messages.append)
    state = json.loads((tmp_path / "a" / "search.json").read_text())
    assert "default 10 epochs" in state["search_skipped"], state
    assert state["winner_reserve_seconds"] == pytest.approx(fixed)
    assert not (tmp_path / "a" / "search").exists()


def test_a_tiny_validation_set_trains_the_first_candidate_without_search(toy_model, emt_split, tmp_path,
                                                                         monkeypatch):
    """Bug: with 2 validation structures the search only warned and then chose on their noise (SevenNet-0, N = 10:
    full at 3x the rate won, held-out energy 76 meV/atom vs 28 zero-shot). Now it trains the first candidate, full,
    for SevenNet too (the LoRA-first order of SevenNet was chosen on one cell; full is better in 4 of 5 sizes of the
    data-efficiency table)."""
    from atomtune.finetune.auto import SMALL_VALIDATION

    monkeypatch.setattr(AutoSearch, "_probe", _fake_probe(
        {"probe_seconds": 0.1, "run_seconds": 0.15, "step_seconds": 0.05, "backbone": "sevennet"}))
    train, valid = emt_split
    with pytest.warns(UserWarning, match="validation set has 2 structure"):
        result = AutoSearch(FinetuneSpec(strategy="auto", budget=600, epochs=2)).fit(
            toy_model, train, valid[:2], tmp_path / "a", log=lambda message: None)
    state = json.loads((tmp_path / "a" / "search.json").read_text())
    assert state["winner"] == "full" and "validation set has 2" in state["search_skipped"]
    assert result.metrics["epochs_run"] == 2 and not (tmp_path / "a" / "search").exists()
    assert SMALL_VALIDATION > 2


def test_structure_errors_match_the_set_errors_and_share_better(toy_backbone, emt_split):
    from atomtune.finetune.auto import StructureErrors, share_better
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.metrics import errors

    _, valid = emt_split
    potential = toy_backbone()
    per_structure = StructureErrors.of(potential, valid, 2)
    whole = errors(potential, FeaturizedSet.build("v", valid, potential), 2)
    for key, value in per_structure.metrics().items():
        assert value == pytest.approx(whole[key], rel=1e-9), key
    reference = per_structure.metrics()
    assert share_better(per_structure, per_structure, reference) == 0.0  # ties are not wins
    halved = StructureErrors(per_structure.energy_mev_per_atom / 2, per_structure.forces_squared / 4,
                             per_structure.forces_count, per_structure.stress_gpa / 2)
    assert share_better(halved, per_structure, reference) == 1.0
    # better by far on one structure, worse on the others: the resamples disagree
    mixed = StructureErrors(per_structure.energy_mev_per_atom * np.array([0.01, 1.2, 1.2, 1.2]),
                            per_structure.forces_squared * np.array([0.01, 1.2, 1.2, 1.2]), per_structure.forces_count,
                            per_structure.stress_gpa * np.array([0.01, 1.2, 1.2, 1.2]))
    assert 0.1 < share_better(mixed, per_structure, reference) < 0.9


def test_a_slice_replaces_the_fresh_run_only_beyond_the_validation_noise():
    """Bug: a search slice that scored lower on validation than the winner's fresh run always replaced it (SevenNet-0,
    N = 25: a 3-epoch LoRA slice, 185 meV/Å on the test set, over the 14-epoch fresh run, 123). Within the noise of
    the validation structures the run that trained more epochs is kept."""
    from atomtune.finetune.auto import slice_or_fresh

    assert slice_or_fresh(0.95, 3, 14)[0] == "slice"  # clearly better on validation
    assert slice_or_fresh(0.6, 3, 14)[0] == "fresh"  # within the noise: the 14-epoch fresh run
    assert slice_or_fresh(0.6, 41, 30)[0] == "slice"  # within the noise: the slice trained longer
    assert slice_or_fresh(0.05, 41, 30)[0] == "fresh"  # the fresh run is clearly better


@pytest.mark.slow
def test_a_clearly_better_slice_is_the_model(toy_model, search_split, tmp_path, monkeypatch):
    from atomtune.finetune import auto

    monkeypatch.setattr(auto, "share_better", lambda *args, **kwargs: 0.95)
    out = tmp_path / "auto"
    result = AutoSearch(FinetuneSpec(strategy="auto", budget=30.0)).fit(toy_model, *search_split, out,
                                                                         log=lambda message: None)
    decision = json.loads((out / "search.json").read_text())["decision"]
    assert decision["kept"] == "slice" and decision["share_slice_better"] == 0.95, decision
    slice_metrics = json.loads((out / "search" / decision["slice"] / "metrics.json").read_text())
    assert result.metrics["history"] == slice_metrics["history"]


def test_an_adopted_slice_is_compared_with_the_foundation_zero_shot(toy_backbone, tmp_path):
    """Bug: a later-rung slice kept as the model reported "worse than zero-shot" against its own start (the previous
    rung's model), so a slice worse than the foundation model said nothing."""
    rung0, rung1 = tmp_path / "search" / "full" / "rung-0", tmp_path / "search" / "full" / "rung-1"
    valid = {"energy_mae_mev_per_atom": 10.0, "forces_rmse": 0.10, "stress_mae_gpa": 1.0}
    for directory, start in ((rung0, valid), (rung1, {**valid, "forces_rmse": 0.2})):
        directory.mkdir(parents=True)
        (directory / "metrics.json").write_text(json.dumps({
            "zero_shot": {"valid": start, "valid_after_e0": start}, "history": [],
            "final": {"valid": {**valid, "forces_rmse": 0.15}}}))
    result = AutoSearch._adopt_slice(rung1, tmp_path / "out", toy_backbone())
    assert result.metrics["worse_than_zero_shot"]["forces_rmse"] == {"zero_shot": 0.10, "fine_tuned": 0.15}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["zero_shot"]["valid"]["forces_rmse"] == 0.10


def test_a_model_no_better_than_zero_shot_says_so(toy_backbone, tmp_path):
    from atomtune.finetune import FitResult

    messages = []
    metrics = {"saved_epoch": 0, "epochs_run": 3, "history": [], "final": {"valid": {"forces_rmse": 0.1}}}
    state = {"rows": {}, "stopped": {}}
    result = AutoSearch(FinetuneSpec(strategy="auto"))._finish(
        FitResult(toy_backbone(), [], metrics, tmp_path), "full", 60.0, time.perf_counter(), state, tmp_path,
        messages.append)
    assert result.metrics["search"]["zero_shot_kept"] is True
    assert any("beat the E0-aligned zero-shot" in message for message in messages), messages


def test_candidates_within_the_validation_noise_keep_the_search_order():
    """Bug: each rung kept the lowest validation score after one or two epochs per trial; on SevenNet-0 (N = 50) the
    fast-starting LoRA led and ended 22 % worse than zero-shot on the test set. A lead within the noise of the
    validation structures is no evidence: the earlier candidate of the search order goes on."""
    from atomtune.finetune.auto import StructureErrors, rank_within_noise

    def errors(*factors):
        factors = np.asarray(factors, dtype=float)
        return {"per_structure": StructureErrors(10.0 * factors, 0.01 * 24 * factors**2, np.full(len(factors), 24.0),
                                                 1.0 * factors).as_dict()}

    order = [Candidate(name, {}) for name in ("full", "lora-8", "freeze-2")]
    reference = {"energy_mae_mev_per_atom": 10.0, "forces_rmse": 0.1, "stress_mae_gpa": 1.0}
    results = [(0.71, order[0], errors(0.3, 1.1, 0.6, 0.7, 0.7)),  # better on some structures, worse on others
               (0.7, order[1], errors(0.7, 0.7, 0.7, 0.7, 0.7)),
               (1.2, order[2], errors(1.2, 1.2, 1.2, 1.2, 1.2))]  # worse on every structure
    assert [c.name for c in rank_within_noise(results, order, reference)] == ["full", "lora-8", "freeze-2"]
    # a lead on every structure is beyond the noise: the best score goes first
    results[0] = (0.9, order[0], errors(0.9, 0.9, 0.9, 0.9, 0.9))
    assert [c.name for c in rank_within_noise(results, order, reference)] == ["lora-8", "full", "freeze-2"]


def test_a_run_without_search_leaves_its_loading_time_inside_the_budget(toy_model, emt_split, tmp_path,
                                                                        monkeypatch):
    """Bug: without a search the first candidate got the whole remaining budget for its epochs, and loading,
    featurizing and the final validation came on top (SevenNet-0, N = 25, 2 minutes under load 10: 133 s)."""
    monkeypatch.setattr(AutoSearch, "_probe", _fake_probe(
        {"probe_seconds": 0.1, "run_seconds": 5.05, "step_seconds": 0.05, "backbone": "toy"}))
    train, valid = emt_split
    started = time.perf_counter()
    with pytest.warns(UserWarning, match="validation set has 2"):
        AutoSearch(FinetuneSpec(strategy="auto", budget=30.0, epochs=3)).fit(toy_model, train, valid[:2],
                                                                             tmp_path / "a", log=lambda message: None)
    state = json.loads((tmp_path / "a" / "search.json").read_text())
    # the epochs get what is left of the budget less the 5 s the probe says loading and validation take
    assert state["final_run_budget_seconds"] <= 30.0 - 5.0
    assert state["final_run_budget_seconds"] >= 30.0 - 5.0 - (time.perf_counter() - started)


def test_the_winner_reserve_follows_the_epochs_the_search_measured():
    """Bug: the winner's time was set from the probe's one step, which under load underestimated an epoch (SevenNet-0,
    N = 50: 12 s measured, 7 s estimated); the search ran its second rung, and the winner trained 7 of the default 15
    epochs. After a rung the reserve is set again from the measured epochs, and a rung that no longer fits is not run."""
    search = AutoSearch(FinetuneSpec(strategy="auto", budget=300, epochs=15))
    alive = [Candidate("full", {}), Candidate("freeze-2", {})]
    state = {"run_seconds": 10.0, "overhead_seconds": 10.0, "winner_reserve_seconds": 150.0, "rows": {
        "full/rung-0": {"candidate": "full", "rung": 0, "epochs": 1, "seconds": 12.0},
        "freeze-2/rung-0": {"candidate": "freeze-2", "rung": 0, "epochs": 1, "seconds": 8.0},
        "lora-8/rung-0": {"candidate": "lora-8", "rung": 0, "epochs": 1, "seconds": 30.0}}}  # stopped: not counted
    deadline = time.perf_counter() + 220.0  # 80 s of the budget spent
    assert search._search_time_left(state, alive, 40, deadline) < 0
    assert state["winner_reserve_seconds"] == pytest.approx(10.0 + 15 * 12.0)
    # measured epochs that fit the reserve leave the next rung its time
    state["winner_reserve_seconds"] = 150.0
    state["rows"]["full/rung-0"]["seconds"] = 6.0
    left = search._search_time_left(state, alive, 40, time.perf_counter() + 220.0)
    assert state["winner_reserve_seconds"] == 150.0
    assert left == pytest.approx(220.0 - 150.0 - 2 * (10.0 + 8.0), abs=1.0)  # one epoch and overhead per candidate


def test_a_continuing_slice_warms_up_over_its_first_epoch():
    """Bug: a continuation restarted AdamW (empty moments) at the full constant rate, so its first steps moved every
    weight by about the rate at once (4 of 10 rung-1 continuations gained nothing). Rung 0 keeps its constant rate."""
    import torch

    from atomtune.finetune.auto import slice_schedule
    from atomtune.finetune.loop import Trainer

    steps_per_epoch = 6
    rates = {}
    for rung in (0, 1, 2):
        spec = FinetuneSpec(**slice_schedule(rung))
        settings = spec.training_settings("chgnet", n_train=24)
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.learning_rate)
        scheduler = Trainer(settings)._scheduler(optimizer, steps_per_epoch)
        factors = []
        for _ in range(3 * steps_per_epoch):
            factors.append(optimizer.param_groups[0]["lr"] / settings.learning_rate)
            optimizer.step()
            scheduler.step()
        rates[rung] = factors
    assert rates[0] == pytest.approx([1.0] * len(rates[0]))
    for rung in (1, 2):
        warm, after = rates[rung][:steps_per_epoch], rates[rung][steps_per_epoch:]
        assert warm[0] < 0.2 and all(b > a for a, b in zip(warm, warm[1:])), warm
        assert after == pytest.approx([1.0] * len(after))


def test_the_search_ranks_by_the_runs_selection_metric(toy_model, search_split, tmp_path):
    """Bug: the search ranked candidates by the balanced score whatever --selection-metric said, so a user who asked
    for the best forces got the best balance of energy, forces and stress (SevenNet-0, N = 25: full beat LoRA by the
    balanced score while LoRA had 31 % lower held-out force RMSE). ``loss`` cannot be resampled per structure."""
    from atomtune.finetune.auto import StructureErrors, rank_within_noise

    count = np.full(8, 12.0)
    # forces 20 % better on every structure, energy twice as bad: worse balanced, better forces
    forces_first = StructureErrors(np.full(8, 20.0), np.full(8, 0.64 * 0.12), count, np.full(8, 1.0))
    balanced_first = StructureErrors(np.full(8, 10.0), np.full(8, 0.12), count, np.full(8, 1.0))
    reference = balanced_first.metrics()
    results = []
    for name, errors in (("a", forces_first), ("b", balanced_first)):
        row = {"per_structure": errors.as_dict()}
        results.append((0.0, Candidate(name, {}), row))
    order = [candidate for _, candidate, _ in results]
    from atomtune.finetune.loop import selection_score

    for metric, first in (("balanced", "b"), ("forces_rmse", "a"), ("energy_mae", "b")):
        scored = [(selection_score(metric, math.nan, StructureErrors.from_dict(row["per_structure"]).metrics(),
                                   reference), candidate, row) for _, candidate, row in results]
        assert rank_within_noise(scored, order, reference, metric)[0].name == first, metric
    with pytest.raises(AtomtuneError, match="selection-metric loss"):
        AutoSearch(FinetuneSpec(strategy="auto", budget=30.0, selection_metric="loss")).fit(
            toy_model, *search_split, tmp_path / "auto", progress=False, log=lambda message: None)
