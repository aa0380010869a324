"""Run inside the pet environment by tests/models/test_pet.py: the PET adapter, loaded through atomtune's registry
exactly like a downloaded checkpoint (the metatrain ``.ckpt``) and like an exported model (``.pt``), against metatomic's
own ASE calculator on mixed Ni/Cu/Al cells; the blocks cover every parameter; a saved model reloads with the same
numbers; PET's own level of rotational invariance (it is not equivariant by construction). Prints one JSON line."""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rotated(atoms, seed: int):
    """``atoms`` rotated rigidly (positions and cell) by a random rotation."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=seed).as_matrix()
    turned = atoms.copy()
    turned.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=False)
    turned.positions = atoms.positions @ rotation.T
    return turned


def main(checkpoint: str) -> dict:
    from mace_tiny import emt_training_structures
    from metatomic_ase import MetatomicCalculator

    from atomtune.models.registry import load_potential

    warnings.filterwarnings("ignore")
    exported = str(Path(checkpoint).with_suffix(".pt"))
    structures = emt_training_structures(count=8, seed=21)
    potential = load_potential(f"pet:{checkpoint}", trust=True)
    predicted = potential.predict(structures, batch_size=3)
    from_exported = load_potential(f"pet:{exported}", trust=True).predict(structures, batch_size=3)
    native = MetatomicCalculator(exported)
    errors = {"energy": 0.0, "forces": 0.0, "stress": 0.0, "exported_energy": 0.0, "exported_forces": 0.0}
    for atoms, record, record_exported in zip(structures, predicted, from_exported):
        atoms = atoms.copy()
        atoms.calc = native
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        errors["energy"] = max(errors["energy"], abs(energy - record["energy"]) / len(atoms))
        errors["forces"] = max(errors["forces"], float(np.abs(forces - record["forces"]).max()))
        errors["stress"] = max(errors["stress"], float(np.abs(stress - record["stress"]).max()))
        errors["exported_energy"] = max(errors["exported_energy"], abs(energy - record_exported["energy"]) / len(atoms))
        errors["exported_forces"] = max(errors["exported_forces"], float(np.abs(forces - record_exported["forces"]).max()))
    turned = [rotated(atoms, seed=k) for k, atoms in enumerate(structures)]
    rotation_error = max(
        abs(a["energy"] - b["energy"]) / len(atoms)
        for atoms, a, b in zip(structures, predicted, potential.predict(turned, batch_size=3))
    )
    native_rotation_error = 0.0
    for atoms, turned_atoms in zip(structures, turned):
        atoms, turned_atoms = atoms.copy(), turned_atoms.copy()
        atoms.calc, turned_atoms.calc = native, MetatomicCalculator(exported)
        native_rotation_error = max(
            native_rotation_error,
            abs(atoms.get_potential_energy() - turned_atoms.get_potential_energy()) / len(atoms),
        )
    block_parameters = sum(p.numel() for _, block in potential.blocks() for p in block.parameters())
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        reloaded = load_potential(directory, trust=True).predict(structures, batch_size=3)
    return {
        "energy_error_ev_per_atom": errors["energy"],
        "force_error_ev_per_a": errors["forces"],
        "stress_error_ev_per_a3": errors["stress"],
        "exported_energy_error_ev_per_atom": errors["exported_energy"],
        "exported_force_error_ev_per_a": errors["exported_forces"],
        "rotation_energy_change_ev_per_atom": rotation_error,
        "native_rotation_energy_change_ev_per_atom": native_rotation_error,
        "blocks": [name for name, _ in potential.blocks()],
        "all_parameters_in_blocks": block_parameters == sum(p.numel() for p in potential.parameters()),
        "reload_identical": all(a["energy"] == b["energy"] for a, b in zip(predicted, reloaded)),
        "energies": [record["energy"] for record in predicted],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
