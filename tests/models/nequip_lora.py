"""Run inside the nequip environment by tests/models/test_nequip.py: atomtune's LoRA on a NequIP / Allegro package.

The adapters' second factors are set to random non-zero values (a trained update, large enough to change every
prediction), then: the energy is unchanged and forces / stress rotate with a rotated cell (float64); merging and saving
gives a plain nequip model whose reload predicts the same numbers. Prints one JSON line.

    python tests/models/nequip_lora.py PACKAGE
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def main(package: str) -> dict:
    from mace_tiny import emt_training_structures
    from torch.nn.utils import parametrize

    from atomtune.finetune.strategies.lora import LoRA
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=6, seed=33)
    potential = load_potential(f"nequip:{package}", trust=True)
    before = potential.predict(structures, batch_size=3)
    strategy = LoRA(rank=2)
    kinds = sorted({kind for _, kind, _ in strategy.adapted_layers(potential)})
    strategy.select(potential)
    trainable = sum(p.numel() for p in potential.parameters() if p.requires_grad)
    total = sum(p.numel() for p in potential.parameters())
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in potential.named_parameters():
            if parameter.requires_grad and name.endswith(".right"):
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    adapted = potential.predict(structures, batch_size=3)
    rotation = _rotation(5)
    rotated_structures = []
    for atoms in structures:
        rotated = atoms.copy()
        rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
        rotated.positions = atoms.positions @ rotation.T
        rotated_structures.append(rotated)
    rotated = potential.predict(rotated_structures, batch_size=3)
    energy_error = max(abs(a["energy"] - b["energy"]) / len(s) for a, b, s in zip(adapted, rotated, structures))
    force_error = max(float(np.abs(a["forces"] @ rotation.T - b["forces"]).max()) for a, b in zip(adapted, rotated))
    stress_error = max(
        float(np.abs(rotation @ a["stress"] @ rotation.T - b["stress"]).max()) for a, b in zip(adapted, rotated)
    )
    strategy.merge(potential)
    merged_plain = not any(parametrize.is_parametrized(module) for module in potential.modules())
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        reloaded = load_potential(directory, trust=True).predict(structures, batch_size=3)
    return {
        "kinds": kinds,
        "trainable": trainable,
        "total": total,
        "dtype": str(potential.dtype),
        "lora_changed_energy_ev": max(abs(a["energy"] - b["energy"]) for a, b in zip(before, adapted)),
        "rotation_changed_forces": max(float(np.abs(a["forces"] - b["forces"]).max()) for a, b in zip(adapted, rotated)),
        "energy_rotation_error_ev_per_atom": energy_error,
        "force_rotation_error_ev_per_a": force_error,
        "stress_rotation_error_ev_per_a3": stress_error,
        "merged_plain": merged_plain,
        "reload_energy_error_ev": max(abs(a["energy"] - b["energy"]) for a, b in zip(adapted, reloaded)),
        "reload_force_error_ev_per_a": max(
            float(np.abs(a["forces"] - b["forces"]).max()) for a, b in zip(adapted, reloaded)
        ),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
