"""The active-learning loop: the exploration file (file:line errors), budgets, determinism of flagging and selection,
and the whole loop on EMT (toy committee) killed with SIGKILL mid-labelling and resumed without relabelling or refitting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from emt_data import emt_structures
from toy_potential import ToyPotential

from atomtune.exceptions import AtomtuneError
from atomtune.learn import ExploreSpec, LearnSpec
from atomtune.learn.explore import explore, flag_metric
from atomtune.learn.loop import select_frames, split_new
from atomtune.learn.spec import ExploreFileError, FlagSpec, SelectionSpec
from atomtune.uncertainty import CommitteePotential

SCRIPT = Path(__file__).with_name("learn_run.py")


def _committee():
    members = []
    for seed in range(2):
        torch.manual_seed(0)
        member = ToyPotential(seed=0)
        with torch.no_grad():
            member.readout.weight.add_(0.3 * torch.randn(member.readout.weight.shape,
                                                         generator=torch.Generator().manual_seed(seed)))
        members.append(member)
    return CommitteePotential(members)


def _explore_spec(tmp_path, text):
    path = tmp_path / "explore.yaml"
    path.write_text(text)
    return ExploreSpec.read(path)


def test_exploration_file_unknown_key_names_file_and_line(tmp_path):
    text = "explorers:\n  - kind: md\n    temperatures_k: [600]\n    temprature: 3\nflag: {threshold: 0.1}\n"
    with pytest.raises(ExploreFileError, match=r"explore.yaml:4: unknown key 'temprature'"):
        _explore_spec(tmp_path, text)
    with pytest.raises(ExploreFileError, match=r"explore.yaml:2: .*selection.*methd|explore.yaml:2: unknown key 'methd'"):
        _explore_spec(tmp_path, "explorers: [{kind: rattle}]\nselection: {methd: fps}\n")
    with pytest.raises(ExploreFileError, match="explorers' is required"):
        _explore_spec(tmp_path, "flag: {threshold: 0.1}\n")


def test_budget_smaller_than_one_pick_and_small_committee_are_refused(tmp_path):
    spec = _explore_spec(tmp_path, "explorers: [{kind: rattle}]\nselection: {per_iteration: 8}\n")
    with pytest.raises(AtomtuneError, match="smaller than one iteration's pick"):
        LearnSpec.build(model="m", start="s.extxyz", explore=spec, budget_labels=5)
    with pytest.raises(AtomtuneError, match="K ≥ 2"):
        LearnSpec.build(model="m", start="s.extxyz", explore=spec, committee_size=1)


def test_flag_metrics():
    forces = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    spread = np.array([0.1, 0.05])
    assert flag_metric(forces, spread, FlagSpec(metric="absolute")) == pytest.approx(0.1)
    # relative: σ / (|F| + ε) → 0.1 / 1.2 and 0.05 / 0.2: the atom at rest is the uncertain one
    assert flag_metric(forces, spread, FlagSpec(metric="relative", epsilon=0.2)) == pytest.approx(0.25)


def test_flagging_and_selection_are_deterministic_under_a_seed(tmp_path):
    spec = _explore_spec(tmp_path, (
        "explorers:\n  - {kind: md, temperatures_k: [400, 800], steps: 10, sample_interval: 5}\n"
        "  - {kind: rattle, count: 3, stdev: 0.1, max_strain: 0.02}\nflag: {metric: absolute, threshold: 1.0e-3}\n"
    ))
    committee = _committee()
    starts = emt_structures(3, seed=2)
    first = explore(committee, starts, spec, seed=4, progress=False)
    second = explore(committee, starts, spec, seed=4, progress=False)
    other = explore(committee, starts, spec, seed=5, progress=False)
    assert len(first.candidates) == len(second.candidates) == 3 * 4 + 3 * 3
    for a, b in zip(first.candidates, second.candidates):
        np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)
        assert a.flagged == b.flagged and a.uncertainty == b.uncertainty
    assert any(not np.allclose(a.atoms.positions, b.atoms.positions)
               for a, b in zip(first.candidates, other.candidates))
    assert first.md_runs and all(run.time_ps > 0 for run in first.md_runs)
    flagged = [c.atoms for c in first.flagged]
    assert len(flagged) > 4
    for method in ("fps", "direct", "uncertainty", "random"):
        selection = SelectionSpec(method=method, per_iteration=4)
        picked = select_frames(committee, flagged, selection, 4, seed=1)
        assert picked == select_frames(committee, flagged, selection, 4, seed=1)
        assert 1 <= len(picked) <= 4 and len(set(picked)) == len(picked)
    top = select_frames(committee, flagged, SelectionSpec(method="uncertainty"), 2, seed=0)
    values = sorted((a.info["uncertainty"] for a in flagged), reverse=True)
    assert sorted(flagged[i].info["uncertainty"] for i in top) == sorted(values[:2])


def test_new_labels_split_every_nth_to_validation():
    labelled = list(range(7))
    train, valid = split_new(labelled, 0.34, labels_before=0)
    assert valid == [2, 5] and len(train) == 5
    train, valid = split_new(labelled[:2], 0.34, labels_before=1)  # counting continues across iterations
    assert valid == [1]


def _run(out: Path, log: Path, fail_n_atoms: int, sleep_s: float = 0.0):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COUNTING_EMT_SLEEP_S": str(sleep_s)}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(log), str(fail_n_atoms)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_loop_end_to_end_on_emt_resumes_after_sigkill_without_relabelling(tmp_path):
    out, log = tmp_path / "al", tmp_path / "labels.log"
    cache = out / "label-cache"
    # cells of 8 atoms fail to label: recorded, the loop goes on
    killed = _run(out, log, fail_n_atoms=8, sleep_s=1.0)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and killed.poll() is None:
        if cache.exists() and any(cache.glob("*.json")):
            break
        time.sleep(0.1)
    assert killed.poll() is None, killed.communicate()[0]
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    finished_at_kill = {path.name for path in cache.glob("*.json")}
    calls_at_kill = Counter(line.split()[0] for line in log.read_text().splitlines())
    fit_record = out / "iteration-000" / "committee" / "committee_metrics.json"
    fit_mtime = fit_record.stat().st_mtime_ns
    assert not (out / "learn_results.json").exists()

    resumed = _run(out, log, fail_n_atoms=8)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output

    # nothing finished before the kill was labelled or fitted again
    calls = Counter(line.split()[0] for line in log.read_text().splitlines())
    hashes_at_kill = {name.split("-")[0] for name in finished_at_kill}  # cache files: <structure hash>-<settings>
    assert hashes_at_kill and hashes_at_kill <= set(calls_at_kill)
    for key in hashes_at_kill:
        assert calls[key] == calls_at_kill[key], f"{key} was labelled again after the resume"
    assert len(calls) > len(hashes_at_kill)  # the resumed run did label the rest
    assert fit_record.stat().st_mtime_ns == fit_mtime

    result = json.loads((out / "learn_results.json").read_text())
    iterations = result["iterations"]
    assert result["labels_used"] <= 6 and result["stop_reason"]
    assert [r["iteration"] for r in iterations][:2] == [0, 1]
    labelled = sum(r["labels_added"] for r in iterations)
    failed = sum(r["labels_failed"] for r in iterations)
    assert labelled + failed == result["labels_used"]
    assert len(list(cache.glob("*.json"))) == labelled + failed  # failures are cached records too
    for r in iterations[1:]:
        assert all("refusing 8-atom cells" in f for f in r["label_failures"])
        assert r["candidates"] > 0 and r["test_errors"]["forces_rmse"] > 0
        assert r["train_structures"] + r["valid_structures"] == 6 + sum(
            x["labels_added"] for x in iterations[1 : r["iteration"] + 1])
    assert (out / "report.html").stat().st_size > 10_000
    assert (out / "al_progress.png").exists() and (out / "al_md_stability.png").exists()
    assert result["final_check"]["md_runs"]


def test_cli_refuses_a_bad_exploration_file_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from atomtune.cli import app

    (tmp_path / "explore.yaml").write_text("explorers:\n  - {kind: md, stepz: 3}\n")
    result = CliRunner().invoke(app, ["learn", "--model", "chgnet-0.3.0", "--start", str(tmp_path / "s.extxyz"),
                                      "--explore", str(tmp_path / "explore.yaml"), "--out", str(tmp_path / "al")])
    assert isinstance(result.exception, ExploreFileError)
    assert "explore.yaml:2: unknown key 'stepz'" in str(result.exception)
    assert not (tmp_path / "al").exists()


def test_md_stability_table_counts_failures_per_temperature_of_a_ramp():
    from atomtune.learn.report import stability_table

    runs = [
        {"temperatures_k": [600, 1500], "steps_requested": 200, "steps_completed": 200, "time_ps": 0.4,
         "exploded": False},
        {"temperatures_k": [600, 1500], "steps_requested": 200, "steps_completed": 150, "time_ps": 0.3,
         "exploded": True},
        {"temperatures_k": [600, 1500], "steps_requested": 200, "steps_completed": 50, "time_ps": 0.1, "exploded": True},
    ]
    table = stability_table({"iterations": [{"iteration": 1, "md_runs": runs}], "final_check": {"md_runs": runs[:1]}})
    assert table[600]["it 1"] == {"runs": 3, "exploded": 1, "mean_time_ps": pytest.approx((0.2 + 0.2 + 0.1) / 3)}
    assert table[1500]["it 1"] == {"runs": 2, "exploded": 1, "mean_time_ps": pytest.approx((0.2 + 0.1) / 2)}
    assert table[1500]["final"]["exploded"] == 0
