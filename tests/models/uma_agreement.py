"""Run inside the uma environment by tests/models/test_uma.py: the UMA adapter, loaded through atomtune's registry exactly
like a downloaded checkpoint, against fairchem's own ASE calculator (FAIRChemCalculator on fairchem's predict unit) on
mixed Ni/Cu/Al cells and a non-periodic cluster, for the omat and omol tasks; the blocks cover every parameter; a saved
model reloads with the same numbers; LoRA keeps the model rotation-equivariant; bad inputs get their own errors. Prints
one JSON line."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mixed_structures():
    from ase.build import bulk
    from mace_tiny import emt_training_structures

    structures = emt_training_structures(count=8, seed=21)
    cluster = bulk("Cu", "fcc", a=3.61, cubic=True)
    cluster.numbers[[1, 3]] = [28, 13]
    cluster.pbc = False
    cluster.cell[:] = 0.0
    cluster.rattle(0.05, seed=2)
    return structures, cluster


def compare(potential, calculator, structures, cluster) -> dict:
    predicted = potential.predict(structures, batch_size=3)
    energy_error, force_error, stress_error = 0.0, 0.0, 0.0
    for atoms, record in zip(structures, predicted):
        atoms = atoms.copy()
        atoms.calc = calculator
        energy_error = max(energy_error, abs(atoms.get_potential_energy() - record["energy"]) / len(atoms))
        force_error = max(force_error, float(np.abs(atoms.get_forces() - record["forces"]).max()))
        stress_error = max(stress_error, float(np.abs(atoms.get_stress(voigt=False) - record["stress"]).max()))
    (record,) = potential.predict([cluster], stress=False)
    atoms = cluster.copy()
    atoms.calc = calculator
    energy_error = max(energy_error, abs(atoms.get_potential_energy() - record["energy"]) / len(atoms))
    force_error = max(force_error, float(np.abs(atoms.get_forces() - record["forces"]).max()))
    return {"energy_error_ev_per_atom": energy_error, "force_error_ev_per_a": force_error,
            "stress_error_ev_per_a3": stress_error, "energies": [r["energy"] for r in predicted]}


def rotation_error(potential, atoms) -> tuple[float, float]:
    """Max |ΔE| per atom and |ΔF| (eV/Å) between a structure and its rigid rotation, forces rotated back."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 0.7]).as_matrix()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.cell[:] = np.asarray(atoms.cell) @ rotation.T
    first, second = potential.predict([atoms, rotated], batch_size=1, stress=False)
    energy = abs(first["energy"] - second["energy"]) / len(atoms)
    forces = float(np.abs(first["forces"] @ rotation.T - second["forces"]).max())
    return energy, forces


def main(checkpoint: str) -> dict:
    import torch
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    from atomtune.finetune.strategies.lora import LoRA
    from atomtune.models.registry import load_potential

    structures, cluster = mixed_structures()
    result = {}
    for task in ("omat", "omol"):
        potential = load_potential(f"uma:{checkpoint}:{task}", trust=True)
        # fairchem's own path: its predict unit ("batch": experts not merged, as for mixed compositions) and calculator
        calculator = FAIRChemCalculator(
            load_predict_unit(checkpoint, inference_settings="batch", device="cpu"), task_name=task
        )
        result[task] = compare(potential, calculator, structures, cluster)
    potential = load_potential(f"uma:{checkpoint}", trust=True)
    block_parameters = sum(p.numel() for _, block in potential.blocks() for p in block.parameters())
    result["blocks"] = [name for name, _ in potential.blocks()]
    result["all_parameters_in_blocks"] = block_parameters == sum(p.numel() for p in potential.parameters())
    predicted = potential.predict(structures, batch_size=3)
    with tempfile.TemporaryDirectory() as directory:
        potential.save(directory)
        reloaded = load_potential(directory).predict(structures, batch_size=3)  # JSON + tensors: no trust needed
    result["reload_identical"] = all(a["energy"] == b["energy"] for a, b in zip(predicted, reloaded))
    result["reload_max_force_difference"] = max(
        float(np.abs(a["forces"] - b["forces"]).max()) for a, b in zip(predicted, reloaded)
    )

    lora = LoRA(rank=2, seed=1)
    lora.select(potential)
    result["lora_layers"] = len(lora.adapted_layers(potential))
    with torch.no_grad():  # a non-zero update, so that the check sees LoRA's weights
        for name, parameter in potential.named_parameters():
            if parameter.requires_grad and name.endswith("right"):
                parameter.normal_(0.0, 0.1)
    result["lora_changes_energy"] = potential.predict([structures[3]])[0]["energy"] != predicted[3]["energy"]
    base = load_potential(f"uma:{checkpoint}", trust=True)
    result["rotation_error_base"] = rotation_error(base, structures[3])
    result["rotation_error_lora"] = rotation_error(potential, structures[3])
    result["errors"] = refused_inputs(checkpoint)
    return result


def refused_inputs(checkpoint: str) -> dict:
    """The message each bad input gets (its class and text), in this process: Hugging Face's own errors for a gated
    repository (raised by huggingface_hub's download function, which is replaced here: there is no network), an
    untrusted pickle, a file of another kind, a misspelled name, a saved architecture naming a non-fairchem class, an
    isolated atom."""
    import httpx
    import torch
    from ase import Atoms
    from fairchem.core.calculate import pretrained_mlip
    from huggingface_hub import errors

    from atomtune.models.registry import load_potential

    def outcome(function) -> str:
        try:
            function()
        except Exception as error:  # noqa: BLE001 — the class and message are what is checked
            return f"{type(error).__name__}: {error}"
        return "no error"

    messages = {}
    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/facebook/UMA"))
    original = pretrained_mlip.hf_hub_download
    for name, error in {
        "gated": errors.GatedRepoError("Cannot access gated repo", response=response),
        "no_credentials": errors.RepositoryNotFoundError("401 Client Error", response=response),
        "no_network": errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache"),
    }.items():
        def refuse(*args, error=error, **kwargs):
            raise error

        pretrained_mlip.hf_hub_download = refuse
        try:
            messages[name] = outcome(lambda: load_potential("uma-s-1p1"))
        finally:
            pretrained_mlip.hf_hub_download = original
    messages["untrusted"] = outcome(lambda: load_potential(f"uma:{checkpoint}"))
    potential = load_potential(f"uma:{checkpoint}", trust=True)
    messages["isolated_atom"] = outcome(lambda: potential.predict([Atoms("Cu")]))
    with tempfile.TemporaryDirectory() as directory:
        tensors = Path(directory) / "tensors.pt"
        torch.save({"weight": torch.zeros(2, 2)}, tensors)
        messages["tensors_only"] = outcome(lambda: load_potential(f"uma:{tensors}", trust=True))
        text = Path(directory) / "notes.pt"
        text.write_text("not a checkpoint")
        messages["not_torch"] = outcome(lambda: load_potential(f"uma:{text}", trust=True))
        messages["misspelled"] = outcome(lambda: load_potential("uma:uma-s-1p11"))
        saved = Path(directory) / "saved"
        load_potential(f"uma:{checkpoint}", trust=True).save(saved)
        architecture = json.loads((saved / "architecture.json").read_text())
        architecture["model_config"]["backbone"]["model"] = "os.system"
        (saved / "architecture.json").write_text(json.dumps(architecture))
        messages["altered_architecture"] = outcome(lambda: load_potential(str(saved)))
    return messages


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1])))
