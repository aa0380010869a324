"""A tiny UMA-architecture test model, built from fairchem's own config classes and saved as fairchem's own inference
checkpoint, so the UMA path is tested end to end offline (Hugging Face is not reachable from the test machines).
Test-only: run with the uma environment's interpreter.

    python tests/uma_tiny.py OUT_DIR     # writes OUT_DIR/tiny-uma.pt

The architecture is UMA's (fairchem's ``HydraModel``: an ``eSCNMDMoeBackbone`` with a mixture of linear experts, charge /
spin / task embeddings and a composition embedding, and a ``DatasetSpecificSingleHeadWrapper`` around an
``MLP_EFS_Head`` with autograd forces and stress), at toy size: 16 sphere channels, l_max 2, 2 layers, 4 experts, cutoff
6 Å, two tasks (``omat``, ``omol``) with their own element references and normalisers. Its weights are fairchem's random
initialisation followed by 30 full-batch Adam steps on 20 EMT-labelled Ni/Cu/Al cells: a test model, nothing like the
foundation model. The file is ``torch.save(MLIPInferenceCheckpoint(...))``, the object a fairchem training run writes as
``inference_ckpt.pt`` and the one Hugging Face serves as ``uma-s-1p1.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATASETS = ["oc20", "omat", "omol"]  # the backbone's task embeddings (UMA has five); the checkpoint's tasks: omat, omol
MAX_ELEMENTS = 100
#: UMA-S-1.1's layout at toy size (fairchem's own test suite builds its conserving MoLE test models the same way)
MODEL_CONFIG = {
    "_target_": "fairchem.core.models.base.HydraModel",
    "backbone": {
        "model": "fairchem.core.models.uma.escn_moe.eSCNMDMoeBackbone",
        "max_num_elements": MAX_ELEMENTS,
        "sphere_channels": 16,
        "lmax": 2,
        "mmax": 2,
        "otf_graph": True,
        "max_neighbors": 300,
        "cutoff": 6.0,
        "edge_channels": 16,
        "distance_function": "gaussian",
        "num_distance_basis": 16,
        "direct_forces": False,
        "regress_forces": True,
        "regress_stress": True,
        "num_layers": 2,
        "hidden_channels": 16,
        "norm_type": "rms_norm_sh",
        "act_type": "gate",
        "ff_type": "spectral",
        "chg_spin_emb_type": "rand_emb",
        "cs_emb_grad": True,
        "dataset_emb_grad": True,
        "dataset_mapping": {name: name for name in DATASETS},
        "use_dataset_embedding": True,
        "num_experts": 4,
        "use_composition_embedding": True,
        "moe_layer_type": "pytorch",
        "model_version": 1.1,
    },
    "heads": {
        "efs": {
            "module": "fairchem.core.models.uma.escn_moe.DatasetSpecificSingleHeadWrapper",
            "head_cls": "fairchem.core.models.uma.escn_md.MLP_EFS_Head",
            "dataset_names": DATASETS,
            "head_kwargs": {"wrap_property": False},  # the wrapper names the outputs per task
        }
    },
    "pass_through_head_outputs": True,
    "otf_graph": True,
}


def _task(name: str, dataset: str, level: str, quantity: str, dim: list, rmsd: float, references=None) -> dict:
    task = {
        "_target_": "fairchem.core.units.mlip_unit.mlip_unit.Task",
        "name": name,
        "level": level,
        "property": quantity,
        "out_spec": {"dim": dim, "dtype": "float32"},
        "normalizer": {
            "_target_": "fairchem.core.modules.normalization.normalizer.Normalizer",
            "mean": 0.0,
            "rmsd": rmsd,
        },
        "datasets": [dataset],
    }
    if references is not None:
        task["element_references"] = {
            "_target_": "fairchem.core.modules.normalization.element_references.ElementReferences",
            "element_references": {"_target_": "torch.DoubleTensor", "_args_": [list(references)]},
        }
    return task


def tasks_config(references: np.ndarray, rmsd: float) -> list[dict]:
    """omat: energy, forces, stress; omol: energy and forces (fairchem adds its stress task at inference), with element
    references shifted by 0.25 eV per atom so the two tasks give visibly different energies."""
    return [
        _task("omat_energy", "omat", "system", "energy", [1], rmsd, references),
        _task("omat_forces", "omat", "atom", "forces", [3], rmsd),
        _task("omat_stress", "omat", "system", "stress", [1, 9], rmsd),
        _task("omol_energy", "omol", "system", "energy", [1], rmsd, references + 0.25),
        _task("omol_forces", "omol", "atom", "forces", [3], rmsd),
    ]


def fitted_references(structures) -> np.ndarray:
    """Per-element energies (eV) fitted by least squares on the training energies, zero for absent elements."""
    present = sorted({int(z) for atoms in structures for z in atoms.numbers})
    counts = np.array([[np.sum(atoms.numbers == z) for z in present] for atoms in structures], dtype=float)
    energies = np.array([atoms.get_potential_energy() for atoms in structures])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    references = np.zeros(MAX_ELEMENTS)
    references[present] = solution
    return references


def main(out: Path, steps: int = 30, seed: int = 0) -> Path:
    sys.path.insert(0, str(HERE))
    import hydra
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
    from mace_tiny import emt_training_structures

    torch.manual_seed(seed)
    structures = emt_training_structures(count=20, seed=3)
    references = fitted_references(structures)
    forces_rms = float(np.sqrt(np.mean(np.concatenate([atoms.get_forces().ravel() for atoms in structures]) ** 2)))
    tasks = tasks_config(references, rmsd=round(max(forces_rms, 0.1), 4))

    model = hydra.utils.instantiate(MODEL_CONFIG)
    model.setup_tasks(tasks)
    energy_task, forces_task = model.tasks["omat_energy"], model.tasks["omat_forces"]

    graphs = []
    for atoms in structures:
        clean = atoms.copy()  # no calculator: fairchem would read the labels into the batch
        clean.info.update(charge=0, spin=0)
        graphs.append(AtomicData.from_ase(clean, task_name="omat", r_data_keys=["spin", "charge"]))
    target_energy = torch.tensor([atoms.get_potential_energy() for atoms in structures], dtype=torch.float64)
    target_forces = torch.tensor(np.concatenate([atoms.get_forces() for atoms in structures]), dtype=torch.float32)
    n_atoms = torch.tensor([len(atoms) for atoms in structures], dtype=torch.float64)

    # fairchem's inference checkpoints hold EMA weights; made before the first forward, which leaves graph tensors in
    # the experts' shared state that deepcopy refuses. Its first update copies the trained weights.
    averaged = torch.optim.swa_utils.AveragedModel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = atomicdata_list_to_batch(graphs)
        output = model(batch)
        energy = energy_task.element_references.undo_refs(
            batch, energy_task.normalizer.denorm(output["omat_energy"]["energy"])
        )
        forces = forces_task.normalizer.denorm(output["omat_forces"]["forces"])
        loss = (((energy - target_energy) / n_atoms) ** 2).mean() + ((forces - target_forces) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.5f}", flush=True)
    model.eval()

    averaged.update_parameters(model)
    out.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(model, averaged, MODEL_CONFIG, tasks, out / "tiny-uma.pt")


def write_checkpoint(model, averaged, model_config: dict, tasks: list[dict], path: Path) -> Path:
    """``torch.save(MLIPInferenceCheckpoint(...))``: fairchem's inference checkpoint (``averaged``: the EMA copy)."""
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    checkpoint = MLIPInferenceCheckpoint(
        model_config=model_config,
        model_state_dict=model.state_dict(),
        ema_state_dict=averaged.state_dict(),
        tasks_config=tasks,
    )
    torch.save(checkpoint, path)
    return path


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
