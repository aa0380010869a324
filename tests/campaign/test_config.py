"""Campaign files: invalid input is one error with file:line and the fix, before any work starts."""

import pytest

from atomtune.campaign.config import CampaignError, load_campaign

GOOD = """\
name: t
data:
  sources:
    - path: data.extxyz
models: [chgnet-0.3.0]
finetune:
  - {name: lora, strategy: lora, lora_rank: 4}
tasks:
  - {task: eos}
"""


@pytest.fixture
def folder(tmp_path, emt_dataset):
    emt_dataset.write(tmp_path / "data.extxyz")
    return tmp_path


def _write(folder, text):
    path = folder / "campaign.yaml"
    path.write_text(text)
    return path


def test_valid_file_loads_and_resolves_paths(folder):
    campaign = load_campaign(_write(folder, GOOD))
    assert campaign.resolve("data.extxyz") == folder / "data.extxyz"
    assert campaign.finetune[0].lora_rank == 4


def test_unknown_key_names_line_and_nearest_key(folder):
    text = GOOD.replace("  - {name: lora, strategy: lora, lora_rank: 4}", "  - {name: lora, strategy: lora, lora_rnak: 4}")
    with pytest.raises(CampaignError, match=r"campaign.yaml:7: unknown key 'lora_rnak'.*Did you mean 'lora_rank'"):
        load_campaign(_write(folder, text))


def test_top_level_typo(folder):
    with pytest.raises(CampaignError, match=r"campaign.yaml:8: unknown key 'taks' at the top level.*Did you mean 'tasks'"):
        load_campaign(_write(folder, GOOD.replace("tasks:", "taks:")))


def test_wrong_type_names_line(folder):
    text = GOOD.replace("lora_rank: 4", "lora_rank: four")
    with pytest.raises(CampaignError, match=r"campaign.yaml:7: finetune.0.lora_rank: .*integer"):
        load_campaign(_write(folder, text))


def test_missing_file_unknown_model_and_task(folder):
    text = GOOD.replace("data.extxyz", "nope.extxyz").replace("chgnet-0.3.0", "chgnet-0.3").replace("task: eos", "task: eso")
    with pytest.raises(CampaignError) as error:
        load_campaign(_write(folder, text))
    message = str(error.value)
    assert "campaign.yaml:4: data file 'nope.extxyz' not found" in message
    assert "campaign.yaml:5: unknown model 'chgnet-0.3'. Did you mean chgnet-0.3.0" in message
    assert "campaign.yaml:9: unknown task 'eso'. Did you mean 'eos'" in message


def test_missing_required_key(folder):
    with pytest.raises(CampaignError, match=r"'models' is required"):
        load_campaign(_write(folder, GOOD.replace("models: [chgnet-0.3.0]\n", "")))


def test_shipped_demo_campaign_is_valid():
    from importlib.resources import files

    from atomtune.cli.run import DEMO_CAMPAIGN

    path = files("atomtune") / "resources" / DEMO_CAMPAIGN
    campaign = load_campaign(str(path), check_files=False)
    assert campaign.models == ["chgnet-0.3.0", "sevennet-0"]
    assert {run.strategy for run in campaign.finetune} == {"full", "freeze", "lora"}


def test_unknown_task_setting_is_caught_before_work(folder):
    text = GOOD.replace("  - {task: eos}", "  - {task: eos, settings: {n_pionts: 5}}")
    with pytest.raises(CampaignError, match=r"campaign.yaml:9: unknown eos setting 'n_pionts'. Did you mean 'n_points'"):
        load_campaign(_write(folder, text))


@pytest.mark.parametrize("name", ["ni_alloy.yaml", "heo_lematerial.yaml", "oc22_surfaces.yaml"])
def test_example_campaigns_are_valid(name):
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / name
    campaign = load_campaign(path, check_files=False)
    assert campaign.models


def test_task_settings_of_the_wrong_type_name_the_line(folder):
    text = GOOD.replace("  - {task: eos}", "  - {task: eos, settings: {fmax: '0.01', n_points: seven}}")
    with pytest.raises(CampaignError, match=r"campaign.yaml:9: .*'fmax' must be a number"):
        load_campaign(_write(folder, text))


def test_finetune_entry_is_a_finetune_spec(folder):
    from atomtune.finetune.spec import FinetuneSpec

    campaign = load_campaign(_write(folder, GOOD))
    spec = campaign.finetune[0].spec()
    assert isinstance(spec, FinetuneSpec) and spec == FinetuneSpec(strategy="lora", lora_rank=4)


def test_replay_without_data_is_refused_with_the_line(folder):
    text = GOOD.replace("{name: lora, strategy: lora, lora_rank: 4}", "{name: r, strategy: replay}")
    with pytest.raises(CampaignError, match=r"campaign.yaml:7: .*strategy 'replay' needs replay_data"):
        load_campaign(_write(folder, text))


def test_family_model_paths_resolve_against_the_campaign_folder(folder, tmp_path_factory, monkeypatch):
    """A relative file inside a family spec (nequip:./m.nequip.zip, orb:ARCH@./w.ckpt) is found next to the campaign
    file, like every other path in it, not in the folder the user happens to run from."""
    (folder / "models").mkdir()
    (folder / "models" / "m.nequip.zip").write_bytes(b"zip")
    (folder / "w.ckpt").write_bytes(b"ckpt")
    text = GOOD.replace("models: [chgnet-0.3.0]",
                        "models: [chgnet-0.3.0, 'nequip:./models/m.nequip.zip', 'orb:orb-v3-direct-20-omat@w.ckpt']")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    campaign = load_campaign(_write(folder, text))
    assert campaign.resolve_model("nequip:./models/m.nequip.zip") == f"nequip:{folder / 'models' / 'm.nequip.zip'}"
    assert campaign.resolve_model("orb:orb-v3-direct-20-omat@w.ckpt") == f"orb:orb-v3-direct-20-omat@{folder / 'w.ckpt'}"
    assert campaign.resolve_model("chgnet-0.3.0") == "chgnet-0.3.0"
    assert campaign.resolve_model("uma:uma-s-1p1") == "uma:uma-s-1p1"

    from atomtune.campaign.runner import plan

    steps, _ = plan(campaign, tmp_path_factory.mktemp("work"))
    specs = {step.settings.get("model") for step in steps if step.kind == "finetune"}
    assert f"nequip:{folder / 'models' / 'm.nequip.zip'}" in specs


def test_missing_family_model_file_names_line_and_folder(folder):
    text = GOOD.replace("models: [chgnet-0.3.0]", "models: [chgnet-0.3.0, 'nequip:./models/missing.nequip.zip']")
    with pytest.raises(CampaignError, match=r"campaign.yaml:5: model file './models/missing.nequip.zip' of "
                                            r"'nequip:./models/missing.nequip.zip' not found \(looked in "):
        load_campaign(_write(folder, text))
