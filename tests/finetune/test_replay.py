"""Replay: generated structures pseudo-labelled by the frozen model, user replay data aligned to the model's energy
scale, replay batches mixed into every epoch, and the forgetting report on a general set."""

import numpy as np
import pytest

from atomtune.exceptions import AtomtuneError
from atomtune.finetune import Full, LoRA, Replay, Trainer, TrainingSettings
from atomtune.finetune.strategies.replay import generate_around, pseudo_label

QUICK = dict(learning_rate=2e-2, progress=False, ema_decay=None, restore_best=False, warmup_fraction=0.0)


def test_generated_structures_are_near_their_parents_and_pseudo_labelled(toy_backbone, emt_split):
    train, _ = emt_split
    generated = generate_around(train, 5, seed=2)
    assert [atoms.info["id"] for atoms in generated] == [f"replay-{k}" for k in range(5)]
    parents = {atoms.info["id"]: atoms for atoms in train}
    for atoms in generated:
        parent = parents[atoms.info["parent"]]
        assert len(atoms) == len(parent) and abs(atoms.get_volume() / parent.get_volume() - 1) < 0.07
    potential = toy_backbone()
    labelled = pseudo_label(potential, generated)
    predicted = potential.predict(generated)
    for atoms, record in zip(labelled, predicted):
        assert atoms.get_potential_energy() == pytest.approx(record["energy"])
        np.testing.assert_allclose(atoms.get_forces(), record["forces"])
        assert atoms.info["source"] == "pseudo-label:toy:toy"


def test_replay_data_from_another_energy_scale_is_aligned_to_the_model(toy_backbone, make_emt):
    from finetune_helpers import shifted_toy_labels

    potential = toy_backbone(seed=1)
    general = shifted_toy_labels(make_emt(6, seed=9), potential, {"Cu": 3.0, "Ni": 1.5, "Al": -2.0})
    (replay_set,) = Replay(general).replay_sets(potential, [])
    predicted = potential.predict(general)
    np.testing.assert_allclose(replay_set.energies.numpy(), [r["energy"] for r in predicted], atol=1e-4)
    (raw,) = Replay(general, align_e0=False).replay_sets(potential, [])
    assert np.abs(raw.energies.numpy() - [r["energy"] for r in predicted]).max() > 1.0


def test_replay_mixes_batches_into_every_epoch_with_base_strategy(toy_backbone, emt_split):
    strategy = Replay(generate=6, weight=0.3, per_epoch=4, base=LoRA(rank=2))
    result = Trainer(TrainingSettings(epochs=2, batch_size=2, **QUICK)).fit(toy_backbone(), *emt_split, strategy)
    assert all("replay_loss" in record for record in result.history[1:])
    assert result.metrics["parameters"]["trainable"] == 59  # LoRA decides what trains
    assert result.record["strategy"]["replay_base"]["strategy"] == "lora"


def test_replay_without_structures_raises(toy_backbone, emt_split):
    with pytest.raises(AtomtuneError, match="replay needs structures"):
        Trainer(TrainingSettings(epochs=1, **QUICK)).fit(toy_backbone(), *emt_split, Replay())


def test_forgetting_report_and_replay_reduces_it(toy_backbone, make_emt):
    # Target system: Cu-rich cells; "general": Ni/Al cells labelled by the foundation (toy) model itself.
    target = make_emt(12, seed=4, elements=("Cu",))
    general = pseudo_label(toy_backbone(), make_emt(6, seed=5, elements=("Ni", "Al")))
    settings = TrainingSettings(epochs=6, **QUICK)
    plain = Trainer(settings).fit(toy_backbone(), target[:9], target[9:], Full(), general=general)
    replayed = Trainer(settings).fit(
        toy_backbone(), target[:9], target[9:], Replay(general, weight=1.0), general=general
    )
    forgetting = plain.metrics["forgetting"]
    assert forgetting["before"]["forces_mae"] == pytest.approx(0, abs=1e-6)  # the general set is the model's own
    assert forgetting["change"]["forces_mae"] > 0
    assert replayed.metrics["forgetting"]["after"]["forces_mae"] < forgetting["after"]["forces_mae"]
