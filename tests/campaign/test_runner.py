"""A whole campaign on the toy potential with an EMT reference, in-process: plan, cache reuse, failure isolation."""

import json

import pytest
from ase.build import bulk

from atomtune.campaign.config import load_campaign
from atomtune.campaign.runner import describe, plan, run_campaign
from atomtune.data.dataset import Dataset

CAMPAIGN = """\
name: toy
workers: 0
data:
  sources: [{path: data.extxyz}]
split: {fractions: {train: 0.6, valid: 0.2, test: 0.2}, by: random}
models: [toy-1]
finetune:
  - {name: full, strategy: full, epochs: 2, learning_rate: 0.002}
  - {name: lora, strategy: lora, lora_rank: 2, epochs: 2, learning_rate: 0.01}
  - {name: deep, strategy: freeze, freeze_depth: 99, epochs: 1}
tasks:
  - {task: eos, structures: bulk.extxyz}
reference: {calculator: emt, label: EMT}
"""


@pytest.fixture
def toy_registry(monkeypatch):
    from atomtune.models import registry

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    monkeypatch.setattr(
        registry, "CHECKPOINTS", registry.CHECKPOINTS + [registry.CheckpointInfo("toy-1", "toy", "toy", True, "toy")]
    )


@pytest.fixture
def campaign_file(tmp_path, toy_registry):
    from emt_data import emt_structures

    Dataset(emt_structures(30, seed=1)).write(tmp_path / "data.extxyz")
    Dataset([bulk("Cu", "fcc", a=3.6), bulk("Ni", "fcc", a=3.5)]).write(tmp_path / "bulk.extxyz")
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return path


def test_campaign_runs_caches_and_isolates_failures(campaign_file, tmp_path, monkeypatch):
    campaign = load_campaign(campaign_file)
    workdir = tmp_path / "work"
    report = run_campaign(campaign, workdir, progress=False)
    results = json.loads((workdir / "results.json").read_text())

    assert report.exists() and "id='summary'" in report.read_text()
    assert set(results["errors"]) == {"toy-1", "toy-1+full", "toy-1+lora"}
    tuned = results["errors"]["toy-1+full"]["energy_mae_mev_per_atom"]
    assert tuned < results["errors"]["toy-1"]["energy_mae_mev_per_atom"]  # E0 refit alone beats zero-shot here
    eos = results["tasks"]["eos"]
    assert eos["reference"] == "EMT" and any("EMT" in row for row in eos["rows"])
    failed = {f["step"] for f in results["failures"]}
    assert "finetune toy-1+deep" in failed
    assert {"errors toy-1+deep", "task eos toy-1+deep"} <= failed  # dependants skipped, the rest finished
    assert results["finetune"]["toy-1+lora"]["trainable_parameters"] < results["finetune"]["toy-1+full"]["trainable_parameters"]

    # second run: every finished step comes from the cache, nothing is recomputed
    steps, _ = plan(campaign, workdir)
    states = {row["step"]: row["state"] for row in describe(steps)}
    assert states["finetune toy-1+lora"] == "cached" and states["finetune toy-1+deep"] == "will run"
    assert states["compare eos"] == "will run"  # it ran without toy-1+deep: not cached
    from atomtune.campaign import steps as step_functions

    for name in ("prepare_data", "split_data", "finetune_model", "evaluate_errors", "run_task"):
        if name == "finetune_model":
            continue  # the failed fine-tune is retried (and fails again)
        monkeypatch.setattr(step_functions, name, _must_not_run)
    run_campaign(load_campaign(campaign_file), workdir, progress=False)


def _must_not_run(*args, **kwargs):
    raise AssertionError("a cached step was recomputed")


def test_sigkill_then_rerun_loses_nothing_and_recomputes_nothing_finished(campaign_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = Path(__file__).with_name("run_toy_campaign.py")
    workdir = tmp_path / "killed"
    campaign_file.write_text(campaign_file.read_text().replace("epochs: 2, learning_rate: 0.01", "epochs: 30, learning_rate: 0.01"))
    process = subprocess.Popen([sys.executable, str(script), str(campaign_file), str(workdir)],
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    finished_before = {}
    while time.time() < deadline and process.poll() is None:
        done = list(workdir.glob("steps/finetune_toy-1+full-*/result.json"))
        if done:
            finished_before = {p: p.stat().st_mtime_ns for p in workdir.glob("steps/*/result.json")}
            break
        time.sleep(0.2)
    assert process.poll() is None, "the campaign finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert any("finetune_toy-1+full" in str(p) for p in finished_before)

    subprocess.run([sys.executable, str(script), str(campaign_file), str(workdir)], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path.parent.name} was recomputed"
    results = json.loads((workdir / "results.json").read_text())
    assert {"toy-1", "toy-1+full", "toy-1+lora"} <= set(results["errors"])


AL_CAMPAIGN = """\
name: toy-al
workers: 0
data:
  sources: [{path: data.extxyz}]
split: {fractions: {train: 0.5, valid: 0.2, test: 0.3}, by: random}
models: [toy-1]
active_learning:
  - name: loop
    calculator: emt
    budget_labels: 3
    max_iterations: 1
    committee_size: 2
    final_check: false
    finetune: {epochs: 1, learning_rate: 0.02, batch_size: 4}
    explore:
      explorers: [{kind: rattle, count: 3, stdev: 0.08}]
      flag: {metric: absolute, threshold: 1.0e-6}
      selection: {method: fps, per_iteration: 3}
"""


@pytest.mark.slow
def test_active_learning_step_is_a_model_of_the_campaign(tmp_path, toy_registry):
    """Issue 12: an `active_learning` step in campaigns, with its report section; its committee is scored like a model."""
    from emt_data import emt_structures

    Dataset(emt_structures(14, seed=2)).write(tmp_path / "data.extxyz")
    (tmp_path / "campaign.yaml").write_text(AL_CAMPAIGN)
    campaign = load_campaign(tmp_path / "campaign.yaml")
    report = run_campaign(campaign, tmp_path / "work", progress=False)
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert not results["failures"], results["failures"]
    assert set(results["errors"]) == {"toy-1", "toy-1+al:loop"}
    loop = results["active_learning"]["toy-1+al:loop"]["result"]
    assert loop["labels_used"] == 3 and [it["labels_added"] for it in loop["iterations"]] == [0, 3]
    assert "id='active-learning'" in report.read_text()


def test_active_learning_entry_with_a_bad_setting_names_the_line(tmp_path, toy_registry):
    from atomtune.campaign.config import CampaignError

    from emt_data import emt_structures

    Dataset(emt_structures(4, seed=2)).write(tmp_path / "data.extxyz")
    (tmp_path / "campaign.yaml").write_text(AL_CAMPAIGN.replace("budget_labels: 3", "budget_labels: -3"))
    with pytest.raises(CampaignError, match=r"campaign.yaml:8: active_learning 'loop': .*budget_labels"):
        load_campaign(tmp_path / "campaign.yaml")
