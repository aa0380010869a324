"""Run inside the mattersim environment by tests/models/test_mattersim.py: the MatterSim adapter, loaded through atomtune's
registry exactly like a downloaded checkpoint, against mattersim's own ASE calculator (``MatterSimCalculator``) on mixed
Ni/Cu/Al cells; the stress against mattersim's own ``Potential.forward``, which reports GPa; the blocks cover every
parameter; a saved model reloads with the same numbers; bad files are refused with their own errors; a public checkpoint
name resolves to mattersim's own cache file (the tiny model copied there under a scratch HOME: the cache layout, not
MatterSim-v1). Prints one JSON line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mixed_cells():
    """Eight strained, rattled, substituted Ni/Cu/Al cells (4-8 atoms) and one 32-atom Ni-Cu-Al supercell."""
    from ase.build import bulk
    from mace_tiny import emt_training_structures

    structures = emt_training_structures(count=8, seed=21)
    large = bulk("Ni", "fcc", a=3.55, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(4)
    large.set_chemical_symbols(rng.choice(["Ni", "Cu", "Al"], size=len(large)))
    large.rattle(0.05, seed=5)
    return structures + [large]


def refusals(checkpoint: str) -> dict:
    """How the adapter answers bad files (the worker carries these errors to the main process unchanged; the test there
    checks that for two of them): ``{case: [error class, message]}``, or ``["loaded", energy]`` when it loads."""
    import argparse

    import torch
    from ase.build import bulk

    from atomtune.models.registry import load_potential

    answers = {}
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        content = torch.load(checkpoint, weights_only=True)
        content["args"] = argparse.Namespace(lr=1e-3)  # a pickled Python object, as training scripts often keep
        torch.save(content, directory / "with-namespace.pth")
        # tensors only, but no M3Gnet inside: another backbone's checkpoint
        torch.save({"model_state_dict": {"w": torch.zeros(2)}, "config": {"cutoff": 5.0}}, directory / "other.pth")
        (directory / "garbage.pth").write_bytes(b"not a torch file at all")
        cases = {
            "untrusted_pickle": ("with-namespace.pth", False),
            "trusted_pickle": ("with-namespace.pth", True),
            "other_family": ("other.pth", False),
            "garbage": ("garbage.pth", False),
            "missing": ("missing.pth", False),
        }
        for case, (name, trust) in cases.items():
            try:
                potential = load_potential(f"mattersim:{directory / name}", trust=trust)
                answers[case] = ["loaded", potential.predict([bulk("Ni", "fcc", a=3.52, cubic=True)])[0]["energy"]]
            except Exception as error:  # noqa: BLE001 — the answer is the error
                answers[case] = [type(error).__name__, str(error)]
    return answers


def main(checkpoint: str) -> dict:
    import torch
    from ase.units import GPa
    from mattersim.datasets.utils.build import build_dataloader
    from mattersim.forcefield import MatterSimCalculator
    from mattersim.forcefield.potential import Potential, batch_to_dict

    from atomtune.models.mattersim import MattersimPotential, public_checkpoint_file
    from atomtune.models.registry import load_potential

    structures = mixed_cells()
    potential = load_potential(f"mattersim:{checkpoint}")  # no trust: a mattersim checkpoint is tensors and plain data
    predicted = potential.predict(structures, batch_size=3)
    native = MatterSimCalculator.from_checkpoint(checkpoint, device="cpu")
    energy_error, force_error, stress_error = 0.0, 0.0, 0.0
    for atoms, record in zip(structures, predicted):
        atoms = atoms.copy()
        atoms.calc = native
        energy_error = max(energy_error, abs(atoms.get_potential_energy() - record["energy"]) / len(atoms))
        force_error = max(force_error, float(np.abs(atoms.get_forces() - record["forces"]).max()))
        stress_error = max(stress_error, float(np.abs(atoms.get_stress(voigt=False) - record["stress"]).max()))

    # mattersim's Potential.forward reports stress in GPa: the adapter's eV/Å³ are those times ase.units.GPa.
    mattersim_potential = Potential.from_checkpoint(checkpoint, device="cpu", load_training_state=False)
    loader = build_dataloader(structures, only_inference=True, batch_size=len(structures), cutoff=potential.cutoff,
                              threebody_cutoff=potential.model.get_model_args()["threebody_cutoff"])
    (graph_batch,) = list(loader)
    stresses_gpa = mattersim_potential.forward(batch_to_dict(graph_batch, device="cpu"))["stresses"].detach().numpy()
    ours = np.stack([record["stress"] for record in predicted])
    stress_gpa_error = float(np.abs(stresses_gpa * GPa - ours).max())
    stress_gpa_scale = float(np.abs(stresses_gpa).max())

    block_parameters = sum(p.numel() for _, block in potential.blocks() for p in block.parameters())
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        saved_metadata = json.loads((Path(directory) / "atomtune.json").read_text())
        reloaded = load_potential(directory).predict(structures, batch_size=3)

    with tempfile.TemporaryDirectory() as home:  # mattersim's cache layout, offline: the file it would download
        previous = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            cached = public_checkpoint_file("mattersim-v1.0.0-1m")
            available_before = MattersimPotential.checkpoint_available("mattersim-v1.0.0-1m")
            cached.parent.mkdir(parents=True)
            shutil.copyfile(checkpoint, cached)
            shutil.copyfile(checkpoint, public_checkpoint_file("mattersim-v1.0.0-5m"))
            by_name = load_potential("mattersim:mattersim-v1.0.0-1m").predict(structures[:2])
            by_bare_name = load_potential("mattersim-v1.0.0-5m").predict(structures[:2])  # routed by the family's spec
            cache = {
                "path_relative_to_home": str(cached.relative_to(home)),
                "available_before": available_before,
                "available_after": MattersimPotential.checkpoint_available("mattersim-v1.0.0-1m"),
                "same_numbers": all(a["energy"] == b["energy"] == c["energy"]
                                    for a, b, c in zip(by_name, by_bare_name, predicted[:2])),
            }
        finally:
            if previous is not None:
                os.environ["HOME"] = previous
    return {
        "refusals": refusals(checkpoint),
        "energy_error_ev_per_atom": energy_error,
        "force_error_ev_per_a": force_error,
        "stress_error_ev_per_a3": stress_error,
        "stress_gpa_error_ev_per_a3": stress_gpa_error,
        "stress_gpa_scale": stress_gpa_scale,
        "max_stress_ev_per_a3": float(np.abs(ours).max()),
        "blocks": [name for name, _ in potential.blocks()],
        "all_parameters_in_blocks": block_parameters == sum(p.numel() for p in potential.parameters()),
        "supported_elements": sorted(potential.supported_elements),
        "weights_metadata": saved_metadata["weights"],
        "reload_identical": all(a["energy"] == b["energy"] for a, b in zip(predicted, reloaded)),
        "energies": [record["energy"] for record in predicted],
        "n_atoms": [len(atoms) for atoms in structures],
        "cache": cache,
        "dtype": str(next(potential.parameters()).dtype),
        "torch_default_dtype": str(torch.get_default_dtype()),
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
