"""Training committees through the fine-tuning loop: one shared E0 fit, distinct members, shallow members differing only
in the readout, member-level resume, continuation, bad K, and ``atomtune errors``-style records with calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from emt_data import emt_structures
from toy_potential import ToyPotential

from atomtune.finetune import Trainer, TrainingSettings
from atomtune.models import registry
from atomtune.uncertainty import (
    CommitteeError,
    CommitteePotential,
    CommitteeSpec,
    train_committee,
)
from atomtune.uncertainty.committee import readout_block

SETTINGS = TrainingSettings(epochs=2, learning_rate=2e-2, batch_size=4, progress=False, restore_best=False)


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")


@pytest.fixture(scope="module")
def split():
    structures = emt_structures(14, seed=7)
    return structures[:10], structures[10:]


def _base():
    torch.manual_seed(0)
    return ToyPotential(seed=0)


def test_full_committee_shares_e0_and_has_spread(split, tmp_path):
    train, valid = split
    result = train_committee(_base(), train, valid, CommitteeSpec(size=3), SETTINGS, out=tmp_path / "c")
    committee = result.potential
    shifts = [m.get_element_energy_shift() for m in committee.members]
    assert shifts[0] and all(s == shifts[0] for s in shifts)  # one E0 fit, shared
    assert result.metrics["e0"]["structures"] == len(train)
    record = committee.predict(valid[:1])[0]
    assert record["energy_std"] > 0 and record["forces_std"].max() > 0
    assert set(result.metrics["calibration"]) >= {"energy", "forces"}
    assert committee.calibration["forces"] == pytest.approx(result.metrics["calibration"]["forces"]["alpha"])
    assert (tmp_path / "c" / "calibration.png").exists()
    loaded = registry.load_potential(str(tmp_path / "c"))
    assert loaded.calibration == pytest.approx(committee.calibration)
    # different bootstrap resamples per member
    assert len({m["unique_structures"] for m in result.metrics["members"]}) > 1


def test_shallow_committee_differs_only_in_the_readout(split, tmp_path):
    train, valid = split
    result = train_committee(_base(), train, valid, CommitteeSpec(size=3, kind="shallow"), SETTINGS, out=tmp_path / "s")
    members = result.potential.members
    readout = {id(p) for p in readout_block(members[0]).parameters()}
    for name, parameter in members[0].named_parameters():
        others = [dict(m.named_parameters())[name] for m in members[1:]]
        same = all(torch.equal(parameter, other) for other in others)
        assert same == (id(parameter) not in readout), name
    assert (tmp_path / "s" / "heads" / "head-2.pt").exists() and (tmp_path / "s" / "trunk").is_dir()
    # trained heads leave the trunk bit-identical (buffers too), so a backbone with the split runs it once
    assert result.potential._members_share_trunk()
    assert result.potential.predict(valid[:1])[0]["energy_std"] > 0


def test_resume_reuses_finished_members(split, tmp_path, monkeypatch):
    train, valid = split
    spec = CommitteeSpec(size=2)
    first = train_committee(_base(), train, valid, spec, SETTINGS, out=tmp_path / "c")
    (tmp_path / "c" / "committee_metrics.json").unlink()  # as if killed after the members, before the committee
    fits = []
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: fits.append(1) or real_fit(self, *a, **k))
    again = train_committee(_base(), train, valid, spec, SETTINGS, out=tmp_path / "c", resume=True)
    assert fits == []
    np.testing.assert_allclose(again.potential.predict(valid[:1])[0]["forces"],
                               first.potential.predict(valid[:1])[0]["forces"], atol=1e-6)
    with pytest.raises(Exception, match="already holds a finished committee"):
        train_committee(_base(), train, valid, spec, SETTINGS, out=tmp_path / "c")


def test_continue_from_keeps_the_shared_e0(split):
    train, valid = split
    first = train_committee(_base(), train, valid, CommitteeSpec(size=2), SETTINGS).potential
    more = emt_structures(4, seed=11)
    second = train_committee(first.members[0], train + more, valid, CommitteeSpec(size=2, seed=1000), SETTINGS,
                             continue_from=first).potential
    for old, new in zip(first.members, second.members):
        assert old.get_element_energy_shift() == new.get_element_energy_shift()


def test_bad_committee_size_is_refused(split):
    train, valid = split
    with pytest.raises(CommitteeError, match="K ≥ 2"):
        train_committee(_base(), train, valid, CommitteeSpec(size=1), SETTINGS)


def test_errors_task_reports_calibration_for_a_committee(split):
    from atomtune.tasks import errors

    train, valid = split
    committee = train_committee(_base(), train, valid, CommitteeSpec(size=2), SETTINGS).potential
    records = errors.run(valid, committee, progress=False)
    assert "forces_std" in records[0] and len(records[0]["forces_std"]) == len(valid[0])
    metrics = errors.metrics(records)
    assert "uncertainty_forces_miscalibration_area" in metrics and "uncertainty_forces_alpha_refit" in metrics
    single = errors.metrics(errors.run(valid, committee.members[0], progress=False))
    assert not any(key.startswith("uncertainty_") for key in single)
    assert isinstance(committee, CommitteePotential)


def test_finetune_committee_hook_takes_the_finetune_spec(split, tmp_path):
    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.uncertainty import finetune_committee

    train, valid = split
    _base().save(tmp_path / "toy-model")
    spec = FinetuneSpec(strategy="freeze", freeze_depth=1, epochs=1, learning_rate=2e-2, seed=3)
    result = finetune_committee(spec, str(tmp_path / "toy-model"), train, valid, tmp_path / "c", size=2,
                                kind="full", progress=False, log=lambda *_: None)
    assert result.metrics["committee"] == {"size": 2, "kind": "full", "bootstrap": True, "seed": 3}
    assert {"zero_shot", "final", "epochs_run", "best_epoch"} <= set(result.metrics)
    assert isinstance(registry.load_potential(str(tmp_path / "c")), CommitteePotential)
    with pytest.raises(CommitteeError, match="K ≥ 2"):
        finetune_committee(spec, str(tmp_path / "toy-model"), train, valid, None, size=1)
