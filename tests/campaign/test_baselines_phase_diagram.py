"""Issue 13 in campaigns: ``baselines:`` entries are models like any other in every later step, and cluster expansion +
Monte Carlo results make the report's phase-diagram section (toy potential, from-scratch MACE, EMT reference)."""

from __future__ import annotations

import json
import re

import pytest
from ase.build import bulk

from atomtune.campaign.config import CampaignError, load_campaign
from atomtune.campaign.runner import plan, run_campaign
from atomtune.data.dataset import Dataset

CAMPAIGN = """\
name: phase
workers: 0
data:
  sources: [{path: data.extxyz}]
  show: false
split: {fractions: {train: 0.6, valid: 0.2, test: 0.2}, by: random}
models: [toy-1]
baselines:
  - name: scratch
    kind: mace-scratch
    settings: {num_channels: 8, max_L: 0, r_max: 4.0, correlation: 2, max_num_epochs: 1, batch_size: 6, seed: 3}
  - {name: ridge, kind: regression, settings: {features: composition, estimator: ridge, cv_folds: 3}}
tasks:
  - task: cluster_expansion
    structures: fcc.extxyz
    limit: 1
    settings: {species: [Cu, Ni], max_cell_size: 3, relax: false, cv_splits: 3, cutoff_candidates: [[5.0], [6.0]]}
  - task: monte_carlo
    settings: {temperatures: [1500, 900, 300], concentration: 0.5, supercell: 2, equilibration_sweeps: 2,
               sampling_sweeps: 6}
reference: {calculator: emt, label: EMT}
"""
SCRATCH_ENTRY = """\
  - name: scratch
    kind: mace-scratch
    settings: {num_channels: 8, max_L: 0, r_max: 4.0, correlation: 2, max_num_epochs: 1, batch_size: 6, seed: 3}
"""
#: The same campaign with the regression baseline only: the fast test (no mace_run_train start-up, ~70 s loaded).
WITHOUT_SCRATCH = CAMPAIGN.replace(SCRATCH_ENTRY, "")


@pytest.fixture
def toy_registry(monkeypatch):
    from atomtune.models import registry

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    monkeypatch.setattr(
        registry, "CHECKPOINTS", registry.CHECKPOINTS + [registry.CheckpointInfo("toy-1", "toy", "toy", True, "toy")]
    )


@pytest.fixture
def campaign_dir(tmp_path, toy_registry):
    from emt_data import emt_structures

    Dataset(emt_structures(30, seed=1)).write(tmp_path / "data.extxyz")
    primitive = bulk("Cu", "fcc", a=3.6)
    primitive.info["id"] = "fcc"
    Dataset([primitive]).write(tmp_path / "fcc.extxyz")
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)
    return tmp_path


def test_plan_wires_baselines_and_monte_carlo_on_each_models_expansion(campaign_dir):
    campaign = load_campaign(campaign_dir / "campaign.yaml")
    steps, models = plan(campaign, campaign_dir / "work")
    by_name = {step.name: step for step in steps}
    assert models["scratch"]["kind"] == "from scratch" and models["ridge"]["kind"] == "regression"
    assert by_name["errors scratch"].depends == ["split", "baseline scratch"]
    assert by_name["errors ridge"].settings["energy_only"] is True
    assert "task cluster_expansion ridge" not in by_name  # energy only: no relaxations, no tasks
    for label in ("EMT", "toy-1", "scratch"):
        mc = by_name[f"task monte_carlo {label}"]
        assert f"task cluster_expansion {label}" in mc.depends
        assert mc.settings["expansion_from"] == f"task cluster_expansion {label}"
        assert mc.settings["structures"].endswith("fcc.extxyz")  # the expansion's structures
        assert mc.settings["run"]["limit"] == 1  # and its limit


def test_a_nequip_scratch_package_is_trusted_by_its_own_campaign_only(campaign_dir):
    path = campaign_dir / "campaign.yaml"
    path.write_text(CAMPAIGN.replace("kind: regression, settings: {features: composition, estimator: ridge, cv_folds: 3}",
                                     "kind: nequip-scratch, settings: {max_epochs: 1}"))
    steps, models = plan(load_campaign(path), campaign_dir / "work")
    by_name = {step.name: step for step in steps}
    assert models["ridge"]["baseline"] == "nequip-scratch"
    assert by_name["errors ridge"].settings["trust"] is True  # written by nequip-package in the step's own folder
    assert by_name["task cluster_expansion ridge"].settings["trust"] is True
    assert by_name["errors scratch"].settings["trust"] is False and by_name["errors toy-1"].settings["trust"] is False


def test_bad_baseline_entries_stop_before_any_work(campaign_dir):
    path = campaign_dir / "campaign.yaml"
    path.write_text(CAMPAIGN.replace("num_channels: 8", "num_chanels: 8"))
    with pytest.raises(CampaignError, match=r"campaign.yaml:\d+: .*unknown field\(s\) num_chanels"):
        load_campaign(path)
    path.write_text(CAMPAIGN.replace("name: ridge", "name: scratch"))
    with pytest.raises(CampaignError, match="used twice"):
        load_campaign(path)
    path.write_text(CAMPAIGN.replace("kind: regression", "kind: lasso-scratch"))
    with pytest.raises(CampaignError, match="baselines.1.kind"):
        load_campaign(path)
    path.write_text(CAMPAIGN.replace("features: composition", "features: fingerprints"))
    with pytest.raises(CampaignError, match="features 'fingerprints' unknown"):
        load_campaign(path)


def test_campaign_with_a_baseline_and_ce_mc_makes_the_phase_diagram_section(campaign_dir):
    (campaign_dir / "campaign.yaml").write_text(WITHOUT_SCRATCH)
    _check_phase_diagram_campaign(campaign_dir, ["EMT", "toy-1"])


@pytest.mark.slow  # mace_run_train's start-up and one epoch: ~70 s on the loaded 2-core machine
def test_mace_scratch_baseline_goes_through_errors_cluster_expansion_and_monte_carlo(campaign_dir):
    results = _check_phase_diagram_campaign(campaign_dir, ["EMT", "toy-1", "scratch"])
    scratch = results["baselines"]["scratch"]
    assert scratch["epochs_run"] == 1 and scratch["train_seconds"] > 0 and scratch["n_train"] == 18
    assert results["errors"]["scratch"]["force_mae_mev_per_a"] > 0


def _check_phase_diagram_campaign(campaign_dir, labels: list[str]) -> dict:
    campaign = load_campaign(campaign_dir / "campaign.yaml")
    workdir = campaign_dir / "work"
    report = run_campaign(campaign, workdir, progress=False)
    results = json.loads((workdir / "results.json").read_text())
    assert results["failures"] == []

    # the regression baseline: fitted on the train split, a column of the errors table with energy rows only
    ridge = results["baselines"]["ridge"]
    assert ridge["kind"] == "regression" and ridge["test_errors"]["energy_mae_mev_per_atom"] > 0
    assert ridge["n_train"] == 18 and ridge["train_seconds"] > 0
    assert {"toy-1", "ridge"} <= set(results["errors"])
    assert results["errors"]["ridge"]["energy_mae_mev_per_atom"] == pytest.approx(
        ridge["test_errors"]["energy_mae_mev_per_atom"])
    assert results["errors"]["ridge"].get("force_mae_mev_per_a") is None  # energy only: no force error made up

    # cluster expansion and Monte Carlo: in the phase-diagram section, not among the property tasks
    assert set(results["phase_diagram"]) == {"cluster_expansion", "monte_carlo"} and not results["tasks"]
    ce = results["phase_diagram"]["cluster_expansion"]["summaries"]
    mc = results["phase_diagram"]["monte_carlo"]["summaries"]
    assert set(ce) == set(mc) == set(labels)  # every model but the energy-only regression, and the reference
    for label in ce:
        (expansion,) = ce[label]
        assert expansion["cv_rmse_mev_per_atom"] > 0 and expansion["ground_states"] and expansion["ecis"]
        assert "expansion" not in expansion  # the plain-data expansion stays in the step's records
        (transition,) = mc[label]
        assert transition["transition_temperature_k"] in (1500.0, 900.0, 300.0)
        assert transition["expansion_source"].endswith("expansion_records.json")  # this model's own expansion
        assert transition["concentration"] == pytest.approx(0.5)
    # each Monte Carlo run sampled the expansion its own model's cluster-expansion step fitted
    for label in labels:
        fitted = next(r for r in json.loads(next(workdir.glob(f"steps/task_cluster_expansion_{label}-*/records.json"))
                                           .read_text()) if r.get("kind") == "expansion")
        sampled = json.loads(next(workdir.glob(f"steps/task_monte_carlo_{label}-*/expansion_records.json")).read_text())
        assert next(r for r in sampled if r.get("kind") == "expansion")["expansion"] == fitted["expansion"]
        assert fitted["calculator"] != "" and ce[label][0]["calculator"] == fitted["calculator"]

    page = report.read_text()
    section = page[page.index("id='phase-diagram'"):page.index("id='failures'")]
    for text in ("Cluster expansion (cluster_expansion)", "Monte Carlo (monte_carlo)", "CV RMSE", "ECIs",
                 "heat-capacity peak", *labels):
        assert text in section, text
    assert len(re.findall(r"<img ", section)) >= 2  # the hull + ECI plot and the E / C / SRO vs T plot
    assert "id='baselines'" in page and "ordered ground states" in page and "transition temperature" in page
    from atomtune.report.summary import verdict

    energy_line = next(line for line in verdict(results) if line.startswith("energy MAE (meV/atom)"))
    assert "baseline ridge" not in energy_line  # no fine-tuned model here: nothing to set the baseline against
    results_with_tuned = {**results, "models": results["models"] + [{"label": "toy-1+ft", "kind": "fine-tuned",
                                                                     "base": "toy-1"}],
                          "errors": {**results["errors"], "toy-1+ft": {"energy_mae_mev_per_atom": 1.0}}}
    energy_line = next(line for line in verdict(results_with_tuned) if line.startswith("energy MAE (meV/atom)"))
    assert "baseline ridge" in energy_line and "vs fine-tuned toy-1+ft 1" in energy_line

    from atomtune.report import read_results, render_report  # results.json reads back and re-renders the same section

    again = render_report(read_results(workdir / "results.json"), campaign_dir / "again.html").read_text()
    assert again[again.index("id='phase-diagram'"):again.index("id='failures'")] == section
    return results


@pytest.mark.slow
def test_nequip_scratch_baseline_is_a_model_of_the_campaign(campaign_dir):
    """A from-scratch NequIP (nequip-train in the nequip environment) in a campaign: scored on the test split and run
    through the cluster expansion and Monte Carlo like any other model (its package is trusted: the step wrote it)."""
    from atomtune.envs import build

    if not build.is_ready("nequip"):
        pytest.skip("the nequip environment is not built: `atomtune env build nequip`")
    text = CAMPAIGN.replace(SCRATCH_ENTRY, "  - name: nq\n    kind: nequip-scratch\n    settings: {num_features: 8, "
                                           "radial_mlp_width: 8, max_epochs: 1, batch_size: 6, seed: 3}\n")
    assert "nequip-scratch" in text
    (campaign_dir / "campaign.yaml").write_text(text)
    campaign = load_campaign(campaign_dir / "campaign.yaml")
    assert not campaign.trust_models
    workdir = campaign_dir / "work"
    run_campaign(campaign, workdir, progress=False)
    results = json.loads((workdir / "results.json").read_text())
    failed = {failure["step"] for failure in results["failures"]}
    assert not {step for step in failed if step.endswith(" nq") or step == "baseline nq"}, results["failures"]
    baseline = results["baselines"]["nq"]
    assert baseline["kind"] == "nequip-scratch" and baseline["epochs_run"] == 1 and baseline["train_seconds"] > 0
    assert results["errors"]["nq"]["force_mae_mev_per_a"] > 0
    assert results["errors"]["nq"]["energy_mae_mev_per_atom"] == pytest.approx(
        baseline["test_errors"]["energy_mae_mev_per_atom"])
    (expansion,) = results["phase_diagram"]["cluster_expansion"]["summaries"]["nq"]
    assert expansion["cv_rmse_mev_per_atom"] > 0
    (transition,) = results["phase_diagram"]["monte_carlo"]["summaries"]["nq"]
    assert transition["expansion_source"].endswith("expansion_records.json")
