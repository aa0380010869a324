"""E0 re-estimation: move a foundation model onto the fine-tuning data's absolute energy scale before training.

Reference energies of another DFT code, pseudopotential set or functional (or EMT) differ from the foundation model's by up
to several eV/atom (EMT vs MPtrj-PBE: 4–6 eV/atom; zero-shot energy MAE ~5.5 eV/atom before, ~41 meV/atom after on this
project's EMT test). Per-element offsets are fitted by least squares of ``E_ref − E_model`` against composition on the
training set (:func:`atomtune.models.element_energies.fit_element_energies`) and added to the potential's fixed
``element_energy_shift`` — so the loss never spends capacity (or, in SevenNet's and MACE's native fine-tuning, fails) to
learn a constant. Runs inside :class:`atomtune.finetune.Trainer` before the first epoch; on by default.
"""

from __future__ import annotations

import numpy as np

from atomtune.finetune.featurized import FeaturizedSet
from atomtune.finetune.metrics import predict_set
from atomtune.models.base import Potential
from atomtune.models.element_energies import fit_element_energies


def reestimate_element_energies(potential: Potential, train: FeaturizedSet, batch_size: int = 8) -> dict:
    """Fit per-element offsets (eV/atom) on ``train``, add them to ``potential``'s fixed energies, return a report.

    Report keys: ``fitted_offsets`` (this fit, eV/atom), ``applied_to`` (see :func:`shift_element_energies`),
    ``element_energy_shift`` / ``native_element_shift`` (totals now applied, eV/atom) and
    ``energy_mae_mev_per_atom_before`` / ``_after`` on the training set.
    """
    predicted = predict_set(potential, train, batch_size, stress=False)["energy"]
    reference = train.energies.numpy()
    offsets = fit_element_energies(train.structures, reference, predicted)
    applied_to = shift_element_energies(potential, offsets)
    n_atoms = np.array([len(atoms) for atoms in train.structures], dtype=float)
    after = predict_set(potential, train, batch_size, stress=False)["energy"]
    report = {
        "fitted_offsets": offsets,
        "applied_to": applied_to,
        "element_energy_shift": potential.get_element_energy_shift(),
        "energy_mae_mev_per_atom_before": float(np.abs((predicted - reference) / n_atoms).mean() * 1000),
        "energy_mae_mev_per_atom_after": float(np.abs((after - reference) / n_atoms).mean() * 1000),
        "structures": len(train),
    }
    if applied_to == "native":
        report["native_element_shift"] = dict(potential.native_element_shift)
    return report


def energy_shift_state(potential: Potential) -> dict:
    """The per-element energies a potential adds on top of its backbone (atomtune's and the backbone's own), as plain
    data (for the best epoch and for checkpoints)."""
    return {"atomtune": potential.get_element_energy_shift(),
            "native": dict(getattr(potential, "native_element_shift", None) or {})}


def restore_energy_shift(potential: Potential, state: dict) -> None:
    """Put back what :func:`energy_shift_state` recorded."""
    potential.set_element_energy_shift(state["atomtune"])
    if hasattr(potential, "set_native_element_shift"):
        potential.set_native_element_shift(state["native"])


def shift_element_energies(potential: Potential, offsets: dict[str, float]) -> str:
    """Add ``offsets`` (eV/atom) to the potential's fixed per-element energies; return where they went.

    ``"native"``: into the backbone's own per-element shift when it has a setter for it (SevenNet's
    ``rescale_atomic_energy``, :meth:`SevennetPotential.set_native_element_shift`) — SevenNet's fine-tuning keeps that
    shift fixed (``train_shift_scale: False``) and cannot learn eV-sized offsets, and a shift inside the weights makes the
    saved checkpoint right in sevenn's own calculator too. ``"atomtune"``: into :attr:`Potential.element_energy_shift`
    (CHGNet and MACE fold that into their native files when saving).
    """
    if hasattr(potential, "set_native_element_shift"):
        native = dict(getattr(potential, "native_element_shift", None) or {})
        for symbol, value in offsets.items():
            native[symbol] = native.get(symbol, 0.0) + value
        potential.set_native_element_shift(native)
        return "native"
    shift = potential.get_element_energy_shift()
    for symbol, value in offsets.items():
        shift[symbol] = shift.get(symbol, 0.0) + value
    potential.set_element_energy_shift(shift)
    return "atomtune"
