"""Run inside the orb environment by tests/models/test_orb.py: the ORB adapter, loaded through atomtune's registry exactly
like a downloaded checkpoint (``orb:ARCHITECTURE@WEIGHTS``, ORB's own ``load_model``), against ORB's own ASE calculator
(``ORBCalculator`` on the model built and loaded by orb-models alone) on mixed Ni/Cu/Al cells, in float64; ASE's
finite-difference forces and stress of the adapter (the sign and units of ORB's stress checked independently of ORB);
the blocks cover every parameter; a saved model reloads with the same numbers. Prints one JSON line."""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def native_calculator(architecture_file: str, weights: str):
    """ORB's own path, no atomtune: its architecture builder, its load_model (float64), its ASE calculator."""
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig
    from orb_models.forcefield.calculator import ORBCalculator

    architecture = json.loads(Path(architecture_file).read_text())
    model = pretrained.orb_v3_conservative_architecture(
        **architecture["arguments"], device="cpu", system_config=SystemConfig(**architecture["system_config"])
    )
    model = pretrained.load_model(model, weights, device="cpu", precision="float64", compile=False)
    return ORBCalculator(model, device="cpu")


def main(architecture_file: str, weights: str) -> dict:
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
    from mace_tiny import emt_training_structures

    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=21)
    spec = f"orb:{architecture_file}@{weights}"
    potential = load_potential(spec, dtype="float64")
    predicted = potential.predict(structures, batch_size=3)
    native = native_calculator(architecture_file, weights)
    energy_error, force_error, stress_error = 0.0, 0.0, 0.0
    for atoms, record in zip(structures, predicted):
        atoms = atoms.copy()
        atoms.calc = native
        energy_error = max(energy_error, abs(atoms.get_potential_energy() - record["energy"]) / len(atoms))
        force_error = max(force_error, float(np.abs(atoms.get_forces() - record["forces"]).max()))
        stress_error = max(stress_error, float(np.abs(atoms.get_stress(voigt=False) - record["stress"]).max()))

    # ASE's own finite differences on the adapter's calculator: forces are −dE/dr, stress is (1/V) dE/dε (ASE's sign)
    probe = structures[2].copy()
    probe.calc = potential.calculator()
    numerical_force_error = float(np.abs(calculate_numerical_forces(probe, eps=1e-4) - probe.get_forces()).max())
    numerical_stress_error = float(np.abs(calculate_numerical_stress(probe, eps=1e-5) - probe.get_stress()).max())

    # The download path without network: availability is read from cached_path's cache (sha256 of the URL + etag hash)
    import cached_path
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    from atomtune.models.orb import OrbPotential

    name = "orb-v3-conservative-inf-omat"
    url = inspect.signature(ORB_PRETRAINED_MODELS[name]).parameters["weights_path"].default
    with tempfile.TemporaryDirectory() as cache:
        cached_path.set_cache_dir(cache)
        available_before = OrbPotential.checkpoint_available(name)
        (Path(cache) / cached_path.resource_to_filename(url, etag="some-etag")).write_bytes(b"")
        available_after = OrbPotential.checkpoint_available(name)

    block_parameters = sum(p.numel() for _, block in potential.blocks() for p in block.parameters())
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        reloaded = load_potential(directory, dtype="float64").predict(structures, batch_size=3)
    float32 = load_potential(spec).predict(structures, batch_size=3)  # the default dtype, as the worker runs it
    return {
        "energy_error_ev_per_atom": energy_error,
        "force_error_ev_per_a": force_error,
        "stress_error_ev_per_a3": stress_error,
        "numerical_force_error_ev_per_a": numerical_force_error,
        "numerical_stress_error_ev_per_a3": numerical_stress_error,
        "blocks": [name for name, _ in potential.blocks()],
        "all_parameters_in_blocks": block_parameters == sum(p.numel() for p in potential.parameters()),
        "cache_lookup": [available_before, available_after],
        "reload_identical": all(a["energy"] == b["energy"] for a, b in zip(predicted, reloaded)),
        "float32_energy_error_ev_per_atom": max(
            abs(a["energy"] - b["energy"]) / len(s) for a, b, s in zip(predicted, float32, structures)
        ),
        "energies": [record["energy"] for record in float32],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1], sys.argv[2])))
