"""FinetuneSpec: one home for the defaults; the CLI and a campaign build the same spec and the same cache key."""

from __future__ import annotations

import inspect

import pytest

from atomtune.cli.finetune import SPEC_OPTIONS, spec_from_options
from atomtune.exceptions import AtomtuneError
from atomtune.finetune import Freeze, LoRA, TrainingSettings
from atomtune.finetune.spec import FinetuneSpec


def _campaign_run(**fields):
    from atomtune.campaign.config import Finetune

    return Finetune(name="run", **fields)


def test_defaults_come_from_the_classes_that_use_them():
    spec = FinetuneSpec()
    training = TrainingSettings()
    assert spec.batch_size == training.batch_size and spec.selection_metric == training.selection_metric
    # epochs and learning rate: resolved per data set size / backbone and strategy, in one place (spec.py)
    from atomtune.finetune.spec import DEFAULT_LEARNING_RATES, MIN_OPTIMIZER_STEPS, default_epochs

    assert spec.resolved_learning_rate("chgnet") == DEFAULT_LEARNING_RATES["chgnet"]["full"]
    assert FinetuneSpec(strategy="lora").resolved_learning_rate("chgnet") == DEFAULT_LEARNING_RATES["chgnet"]["lora"]
    assert FinetuneSpec(strategy="lora").resolved_learning_rate("new-family") == DEFAULT_LEARNING_RATES["other"]["lora"]
    assert FinetuneSpec(learning_rate=0.02, strategy="lora").resolved_learning_rate("chgnet") == 0.02
    assert default_epochs(40, 4) == MIN_OPTIMIZER_STEPS // 10  # 10 steps per epoch
    assert default_epochs(4000, 4) == 5 and default_epochs(4, 4) == 30
    assert spec.freeze_depth == inspect.signature(Freeze).parameters["depth"].default
    assert spec.lora_rank == inspect.signature(LoRA).parameters["rank"].default
    assert spec.strategy_object().__class__.__name__ == "Full"
    lora = FinetuneSpec(strategy="lora", lora_rank=4).strategy_object()
    assert lora.alpha == 8.0  # α = 2r when not given, in the class and so in the spec


@pytest.mark.parametrize("fields", [
    {},
    {"strategy": "lora", "lora_rank": 4, "epochs": 3, "learning_rate": 0.002},
    {"strategy": "freeze", "freeze_depth": "all", "batch_size": 2, "stress_weight": 0.0},
    {"strategy": "freeze", "freeze_depth": 3, "e0": False, "patience": 0, "ema_decay": 0.0},
])
def test_cli_and_campaign_give_identical_specs_and_cache_keys(fields):
    options = {name: None for name in SPEC_OPTIONS}
    options.update({k: (str(v) if k == "freeze_depth" else v) for k, v in fields.items()})  # the CLI gets text
    from_cli = spec_from_options(options)
    from_campaign = _campaign_run(**fields).spec()
    assert from_cli == from_campaign
    assert from_cli.fingerprint() == from_campaign.fingerprint()


def test_fingerprint_changes_with_any_setting():
    assert FinetuneSpec().fingerprint() != FinetuneSpec(seed=1).fingerprint()
    assert FinetuneSpec().fingerprint() == FinetuneSpec(epochs=FinetuneSpec().epochs).fingerprint()


def test_settings_reach_the_trainer():
    spec = FinetuneSpec(strategy="lora", epochs=3, gradient_clip=0, ema_decay=0, patience=0, stress_weight=0.5)
    settings = spec.training_settings("chgnet", has_stress=False)
    assert settings.epochs == 3 and settings.gradient_clip is None and settings.ema_decay is None
    assert settings.early_stopping_patience is None and settings.loss.stress == 0.5
    assert settings.drop_missing_stress  # no stress labels in the training set: trained on E and F
    assert "overridden: stress" in settings.loss.source


@pytest.mark.parametrize("options, match", [
    ({"lora_targets": "linear,conv"}, "--lora-targets: unknown LoRA target"),
    ({"freeze_depth": "deep"}, "--freeze-depth"),
    ({"strategy": "replay"}, "needs replay_data"),
    ({"epochs": -1}, "--epochs: Input should be greater than 0"),
])
def test_bad_options_name_the_option(options, match):
    with pytest.raises(AtomtuneError, match=match):
        spec_from_options(options)
