"""The fine-tuning loss: a weighted sum of energy-per-atom, force and stress errors, the same for every backbone.

``λ_E·mean((ΔE/N)²) + λ_F·mean(ΔF²) + λ_S·mean(Δσ²)`` with energies per atom (as in the MACE and CHGNet papers: a 100-atom
cell should not weigh 100× a 1-atom cell), force and stress errors averaged over Cartesian components (as MACE's
``weighted`` loss and CHGNet's ``CombinedLoss`` do), everything in ASE units (eV/atom, eV/Å, eV/Å³). ``huber`` replaces each
square by a Huber function of width ``huber_delta`` in the same units. It sits inside :class:`atomtune.finetune.Trainer`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from atomtune.exceptions import AtomtuneError

#: eV/Å³ → GPa and → kbar: backbones weigh stress errors in their own units; converting their weights into eV/Å³.
GPA_PER_EV_PER_A3 = 160.21766208
KBAR_PER_EV_PER_A3 = 1602.1766208


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (energy in (eV/atom)⁻², forces in (eV/Å)⁻², stress in (eV/Å³)⁻²) and the error kind."""

    energy: float = 1.0
    forces: float = 10.0
    stress: float = 0.0
    kind: str = "mse"  # "mse" or "huber"
    huber_delta: float = 0.01
    source: str = "atomtune default"

    def as_dict(self) -> dict:
        return asdict(self)


#: Per-backbone defaults, converted from each backbone's own fine-tuning recipe into the units above.
DEFAULT_LOSS_WEIGHTS: dict[str, LossWeights] = {
    # chgnet.trainer.Trainer defaults: energy_loss_ratio=1, force_loss_ratio=1, stress_loss_ratio=0.1, criterion "MSE";
    # CHGNet weighs stress in GPa, so 0.1 GPa⁻² = 0.1 · 160.2² (eV/Å³)⁻².
    "chgnet": LossWeights(1.0, 1.0, 0.1 * GPA_PER_EV_PER_A3**2, "mse", 0.01, "chgnet.trainer.Trainer defaults (0.4.2)"),
    # sevenn/presets/fine_tune.yaml: force_loss_weight 1.0, stress_loss_weight 0.01 with stress in kbar
    # (0.01 kbar⁻² = 0.01 · 1602² (eV/Å³)⁻²); the preset's Huber(δ=0.01) is `kind="huber"`, left off by default because
    # its δ is in mixed units there.
    "sevennet": LossWeights(
        1.0, 1.0, 0.01 * KBAR_PER_EV_PER_A3**2, "mse", 0.01, "sevenn presets/fine_tune.yaml (0.13.0), MSE"
    ),
    # mace_run_train defaults for loss "weighted"/"stress": energy_weight 1, forces_weight 100, stress_weight 1 (eV/Å³).
    "mace": LossWeights(1.0, 100.0, 1.0, "mse", 0.01, "mace_run_train defaults (mace-torch 0.3.16)"),
}


def default_loss_weights(backbone: str) -> LossWeights:
    """The documented default weights of a backbone family (atomtune's own for an unknown one)."""
    return DEFAULT_LOSS_WEIGHTS.get(backbone, LossWeights())


class EnergyForceStressLoss:
    """Callable ``(prediction, target, n_atoms) → (total, {"energy": …, "forces": …, "stress": …})``.

    ``target``: ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å, ``stress`` (B, 3, 3) eV/Å³ and ``stress_mask`` (B,) bool for the
    structures that carry a stress label. A term whose weight is 0 is not computed (no stress autograd needed).
    """

    def __init__(self, weights: LossWeights):
        if weights.kind not in ("mse", "huber"):
            raise AtomtuneError(f"unknown loss {weights.kind!r}: use 'mse' or 'huber'.")
        for name in ("energy", "forces", "stress"):
            value = getattr(weights, name)
            if not value >= 0:  # also catches NaN
                raise AtomtuneError(f"{name} loss weight must be ≥ 0, got {value}.")
        if weights.energy == 0 and weights.forces == 0 and weights.stress == 0:
            raise AtomtuneError("all loss weights are 0: nothing to train on. Set --energy-weight or --forces-weight.")
        if weights.kind == "huber" and not weights.huber_delta > 0:
            raise AtomtuneError(f"huber delta must be > 0, got {weights.huber_delta}.")
        self.weights = weights

    @property
    def needs_stress(self) -> bool:
        return self.weights.stress > 0

    def _error(self, predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if self.weights.kind == "huber":
            return torch.nn.functional.huber_loss(predicted, reference, delta=self.weights.huber_delta)
        return torch.nn.functional.mse_loss(predicted, reference)

    def __call__(
        self, prediction: dict[str, torch.Tensor], target: dict[str, torch.Tensor], n_atoms: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms: dict[str, torch.Tensor] = {}
        dtype = prediction["energy"].dtype
        if self.weights.energy > 0:
            terms["energy"] = self._error(prediction["energy"] / n_atoms, target["energy"].to(dtype) / n_atoms)
        if self.weights.forces > 0:
            terms["forces"] = self._error(prediction["forces"], target["forces"].to(dtype))
        if self.weights.stress > 0:
            mask = target["stress_mask"]
            if bool(mask.any()):
                terms["stress"] = self._error(prediction["stress"][mask], target["stress"][mask].to(dtype))
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        return total, terms
