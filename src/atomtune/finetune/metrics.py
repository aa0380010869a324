"""Validation errors computed on cached graphs during fine-tuning (energy per atom, forces, stress: MAE and RMSE).

The full error benchmark with parity plots is :mod:`atomtune.tasks.errors`; this is the fast per-epoch version the training
loop, the learning curve, the scan table and the forgetting report use.
"""

from __future__ import annotations

import numpy as np

from atomtune.finetune.featurized import FeaturizedSet
from atomtune.finetune.loss import GPA_PER_EV_PER_A3
from atomtune.models.base import Potential
from atomtune.models.element_energies import apply_element_energies, fit_element_energies


def predict_set(potential: Potential, data: FeaturizedSet, batch_size: int, stress: bool) -> dict[str, np.ndarray]:
    """Predicted energies (B,) eV, forces (N, 3) eV/Å and stresses (B, 3, 3) eV/Å³ of a set, in eval mode."""
    was_training = potential.training
    potential.eval()
    energies, forces, stresses = [], [], []
    try:
        for labelled in data.batches(batch_size, potential):
            output = potential(labelled.batch, forces=True, stress=stress)
            energies.append(output["energy"].detach().double().cpu().numpy())
            forces.append(output["forces"].detach().double().cpu().numpy())
            if stress:
                stresses.append(output["stress"].detach().double().cpu().numpy())
    finally:
        potential.train(was_training)
    return {
        "energy": np.concatenate(energies),
        "forces": np.concatenate(forces),
        "stress": np.concatenate(stresses) if stress else None,
    }


def errors(
    potential: Potential, data: FeaturizedSet, batch_size: int = 8, align_e0: bool = False
) -> dict[str, float]:
    """MAE / RMSE of energy (meV/atom), forces (eV/Å, per component) and stress (GPa, per Voigt component) on ``data``.

    ``align_e0``: first fit per-element offsets of the reference against the model on this set and remove them, so only
    energy *differences* count (used on a "general" set whose DFT setup differs from the fine-tuning data).
    """
    predicted = predict_set(potential, data, batch_size, stress=bool(data.has_stress.any()))
    return errors_from_predictions(data, predicted, align_e0)


def errors_from_predictions(data: FeaturizedSet, predicted: dict, align_e0: bool = False) -> dict[str, float]:
    """The errors of :func:`errors` from predictions already made by :func:`predict_set`."""
    reference_energy = data.energies.numpy()
    predicted_energy = predicted["energy"]
    if align_e0:
        offsets = fit_element_energies(data.structures, reference_energy, predicted_energy)
        predicted_energy = apply_element_energies(data.structures, predicted_energy, offsets)
    n_atoms = np.array([len(atoms) for atoms in data.structures], dtype=float)
    energy_error = (predicted_energy - reference_energy) / n_atoms * 1000.0
    force_error = predicted["forces"] - np.concatenate([f.numpy() for f in data.forces])
    result = {
        "energy_mae_mev_per_atom": float(np.abs(energy_error).mean()),
        "energy_rmse_mev_per_atom": float(np.sqrt((energy_error**2).mean())),
        "forces_mae": float(np.abs(force_error).mean()),
        "forces_rmse": float(np.sqrt((force_error**2).mean())),
    }
    mask = data.has_stress.numpy()
    if predicted.get("stress") is not None and mask.any():
        reference_stress = np.stack([s.numpy() for s in data.stress])[mask]
        # Over the 6 Voigt components, as atomtune.tasks.errors reports them (a 3×3 mean counts shears twice).
        rows, columns = (0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)
        stress_error = (predicted["stress"][mask] - reference_stress)[:, rows, columns] * GPA_PER_EV_PER_A3
        result["stress_mae_gpa"] = float(np.abs(stress_error).mean())
        result["stress_rmse_gpa"] = float(np.sqrt((stress_error**2).mean()))
    return result
