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
structures = emt_structures(16, seed=3)
FinetuneSpec(strategy="auto", budget={budget!r}).fit({model!r}, structures[:12], structures[12:], {out!r},
                                                      progress=False)
"""


@pytest.fixture
def toy_model(toy_backbone, tmp_path):
    toy_backbone().save(tmp_path / "toy-model")
    return str(tmp_path / "toy-model")


def test_budget_parsing():
    assert parse_budget("90s") == 90 and parse_budget("10m") == 600 and parse_budget("1.5h") == 5400
    assert parse_budget(30) == 30
    with pytest.raises(ValueError, match="like 90s, 10m"):
        parse_budget("ten minutes")
    with pytest.raises(AtomtuneError, match="--budget"):
        from atomtune.cli.finetune import spec_from_options

        spec_from_options({"strategy": "auto", "budget": "soon"})


def test_auto_respects_the_budget_and_is_no_worse_than_what_it_tried(toy_model, emt_split, tmp_path):
    budget = 40.0
    started = time.perf_counter()
    result = FinetuneSpec(strategy="auto", budget=budget).fit(toy_model, *emt_split, tmp_path / "auto",
                                                                progress=False, log=lambda message: None)
    wall = time.perf_counter() - started
    state = json.loads((tmp_path / "auto" / "search.json").read_text())
    step = state["step_seconds"]
    assert wall <= budget * 1.1 + step + 2.0, (wall, state)
    assert (tmp_path / "auto" / "search.png").exists() and (tmp_path / "auto" / "atomtune.json").exists()
    rung0 = [row["score"] for row in state["rows"].values() if row.get("rung") == 0 and "score" in row]
    assert len(rung0) >= 2 and state["winner"]
    assert state["final_score"] <= min(rung0) + 1e-9
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


def test_nothing_to_search_and_unsupported_candidates(toy_model, emt_split, tmp_path):
    spec = FinetuneSpec(strategy="auto", budget=60)
    with pytest.raises(AtomtuneError, match="nothing to search"):
        AutoSearch(spec, candidates=[]).fit(toy_model, *emt_split, tmp_path / "empty", log=lambda message: None)
    # a freeze depth the toy backbone does not have is recorded as that candidate's error; the others go on
    candidates = [Candidate("freeze-99", {"strategy": "freeze", "freeze_depth": 99}),
                  Candidate("full", {"strategy": "full"})]
    result = AutoSearch(spec, candidates=candidates).fit(toy_model, *emt_split, tmp_path / "mixed",
                                                         log=lambda message: None)
    state = json.loads((tmp_path / "mixed" / "search.json").read_text())
    assert "error" in state["stopped"]["freeze-99"] and state["winner"] == "full"
    assert math.isfinite(selection_score("balanced", 0.0, result.metrics["final"]["valid"],
                                         result.metrics["final"]["valid"]))


def test_a_short_budget_searches_fewer_candidates_or_trains_the_first_without_search(toy_model, emt_split, tmp_path,
                                                                                     monkeypatch):
    """Bug: the step probe asked for two epochs of all six candidates (a 2-minute budget on a loaded machine was
    refused) although the search keeps only the candidates the budget holds. Below three candidates (one halving) a
    search is noise: the first candidate trains for the whole budget and the search log says why."""
    timings = {"probe_seconds": 1.0, "run_seconds": 1.5, "step_seconds": 0.5, "backbone": "toy"}

    def fake_probe(self, model, train, valid, device, trust, budget, state, out):
        state.update(timings)

    monkeypatch.setattr(AutoSearch, "_probe", fake_probe)
    train, valid = emt_split
    epoch = 0.5 * math.ceil(len(train) / 4)
    per_candidate = 3 * 1.0 + epoch  # the slices' overhead (3 x (run - step seconds)) and one epoch
    messages = []
    budget = 2 * (1.0 + 3.5 * per_candidate)  # holds three candidates, not four
    AutoSearch(FinetuneSpec(strategy="auto", budget=budget)).fit(toy_model, train, valid, tmp_path / "three",
                                                                 log=messages.append)
    assert any("fits 3 of 6 candidates" in message for message in messages), messages
    messages.clear()
    result = AutoSearch(FinetuneSpec(strategy="auto", budget=2 * (1.0 + 2.5 * per_candidate))).fit(
        toy_model, train, valid, tmp_path / "two", log=messages.append)
    assert any("no search" in message and "takes 0.50 s" in message for message in messages), messages
    state = json.loads((tmp_path / "two" / "search.json").read_text())
    assert state["winner"] == "full" and "fewer than the 3" in state["search_skipped"]
    assert result.metrics["search"]["skipped"] and result.metrics["epochs_run"] >= 1
    assert (tmp_path / "two" / "atomtune.json").exists()


def test_sevennet_tries_lora_first_and_other_backbones_keep_the_order():
    from atomtune.finetune.auto import candidates_for, prefer_for_backbone

    candidates = candidates_for(FinetuneSpec(strategy="auto"))
    assert [c.name for c in prefer_for_backbone(candidates, "sevennet")][:2] == ["lora-8", "full"]
    assert prefer_for_backbone(candidates, "chgnet") == candidates
    assert prefer_for_backbone(candidates, None) == candidates


def test_a_tiny_validation_set_gets_a_warning(toy_model, emt_split, tmp_path, monkeypatch):
    from atomtune.finetune.auto import SMALL_VALIDATION

    def fake_probe(self, model, train, valid, device, trust, budget, state, out):
        raise BudgetError("stop after the warning")

    monkeypatch.setattr(AutoSearch, "_probe", fake_probe)
    train, valid = emt_split
    with pytest.warns(UserWarning, match="validation set has 2 structure"), pytest.raises(BudgetError):
        AutoSearch(FinetuneSpec(strategy="auto", budget=60)).fit(toy_model, train, valid[:2], tmp_path / "a",
                                                                 log=lambda message: None)
    assert SMALL_VALIDATION > 2
