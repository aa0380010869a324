"""Run inside the nequip environment by tests/models/test_nequip.py: the NequIP adapter, loaded through atomtune's
registry exactly like a downloaded package, against nequip's own ASE calculator on mixed Ni/Cu/Al cells; the blocks
cover every parameter; a saved model reloads with the same numbers. Prints one JSON line."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(package: str) -> dict:
    from mace_tiny import emt_training_structures
    from nequip.integrations.ase import NequIPCalculator

    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=21)
    potential = load_potential(f"nequip:{package}", trust=True)
    predicted = potential.predict(structures, batch_size=3)
    native = NequIPCalculator._from_saved_model(package)
    energy_error, force_error, stress_error = 0.0, 0.0, 0.0
    for atoms, record in zip(structures, predicted):
        atoms = atoms.copy()
        atoms.calc = native
        energy_error = max(energy_error, abs(atoms.get_potential_energy() - record["energy"]) / len(atoms))
        force_error = max(force_error, float(np.abs(atoms.get_forces() - record["forces"]).max()))
        stress_error = max(stress_error, float(np.abs(atoms.get_stress(voigt=False) - record["stress"]).max()))
    block_parameters = sum(p.numel() for _, block in potential.blocks() for p in block.parameters())
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        reloaded = load_potential(directory, trust=True).predict(structures, batch_size=3)
    return {
        "energy_error_ev_per_atom": energy_error,
        "force_error_ev_per_a": force_error,
        "stress_error_ev_per_a3": stress_error,
        "blocks": [name for name, _ in potential.blocks()],
        "all_parameters_in_blocks": block_parameters == sum(p.numel() for p in potential.parameters()),
        "reload_identical": all(a["energy"] == b["energy"] for a, b in zip(predicted, reloaded)),
        "energies": [record["energy"] for record in predicted],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
