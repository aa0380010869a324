"""The loss: per-atom energy, force and stress terms with their weights; bad weights raise before training."""

import pytest
import torch

from atomtune.exceptions import AtomtuneError
from atomtune.finetune.loss import DEFAULT_LOSS_WEIGHTS, EnergyForceStressLoss, LossWeights


def _example():
    prediction = {
        "energy": torch.tensor([1.0, 4.0]),
        "forces": torch.zeros(3, 3),
        "stress": torch.zeros(2, 3, 3),
    }
    target = {
        "energy": torch.tensor([0.0, 0.0], dtype=torch.float64),
        "forces": torch.ones(3, 3, dtype=torch.float64),
        "stress": torch.full((2, 3, 3), 0.1, dtype=torch.float64),
        "stress_mask": torch.tensor([True, False]),
    }
    return prediction, target, torch.tensor([1, 2])


def test_terms_are_per_atom_energy_and_component_means():
    prediction, target, n_atoms = _example()
    loss = EnergyForceStressLoss(LossWeights(energy=2.0, forces=3.0, stress=5.0))
    total, terms = loss(prediction, target, n_atoms)
    assert float(terms["energy"]) == pytest.approx((1.0**2 + 2.0**2) / 2)  # (ΔE/N)²: 1/1 and 4/2
    assert float(terms["forces"]) == pytest.approx(1.0)
    assert float(terms["stress"]) == pytest.approx(0.01)  # only the structure with a stress label counts
    assert float(total) == pytest.approx(2 * 2.5 + 3 * 1.0 + 5 * 0.01)


def test_zero_weight_term_not_computed_and_huber_is_smaller_than_mse_for_outliers():
    prediction, target, n_atoms = _example()
    _, terms = EnergyForceStressLoss(LossWeights(stress=0.0))(prediction, target, n_atoms)
    assert "stress" not in terms
    mse, _ = EnergyForceStressLoss(LossWeights(kind="mse"))(prediction, target, n_atoms)
    huber, _ = EnergyForceStressLoss(LossWeights(kind="huber", huber_delta=0.1))(prediction, target, n_atoms)
    assert float(huber) < float(mse)


@pytest.mark.parametrize(
    "weights, match",
    [
        (LossWeights(energy=-1.0), "energy loss weight"),
        (LossWeights(energy=0.0, forces=0.0, stress=0.0), "nothing to train"),
        (LossWeights(kind="l1"), "unknown loss"),
        (LossWeights(kind="huber", huber_delta=0.0), "huber delta"),
        (LossWeights(forces=float("nan")), "forces loss weight"),
    ],
)
def test_bad_weights_raise(weights, match):
    with pytest.raises(AtomtuneError, match=match):
        EnergyForceStressLoss(weights)


def test_backbone_defaults_document_their_source():
    for backbone in ("chgnet", "sevennet", "mace"):
        assert DEFAULT_LOSS_WEIGHTS[backbone].source
    # CHGNet weighs stress 0.1 in GPa⁻²: in (eV/Å³)⁻² that is 0.1·160.2².
    assert DEFAULT_LOSS_WEIGHTS["chgnet"].stress == pytest.approx(0.1 * 160.21766208**2)
