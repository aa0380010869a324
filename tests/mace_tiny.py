"""A tiny MACE model trained on EMT data, so MACE's ``.model`` path is tested end to end offline.

The real foundation models cannot be downloaded on the test machines, so the suite builds its own: a ScaleShiftMACE of the
MACE-MP-0 family (residual interactions, non-linear last readout, E0s, scale/shift) shrunk to 16x0e+16x1o, 2 layers,
r_max 4.5 Å, max_ell 2, correlation 2, for Ni/Cu/Al, trained for a few dozen full-batch Adam steps on EMT-labelled cells with
mace's own modules (no atomtune code), and pickled with ``torch.save(model)`` exactly as ``mace_run_train`` writes
``*.model`` files. Test-only: never behind a user-facing command.

Use :func:`tiny_mace_model_path` from a session fixture (it caches the file under pytest's cache, keyed by this file's
source and the installed versions), or :func:`make_tiny_mace_model` to write one anywhere.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

ELEMENTS = ("Ni", "Cu", "Al")
LATTICE_CONSTANT = {"Ni": 3.52, "Cu": 3.61, "Al": 4.05}
R_MAX = 4.5


def emt_training_structures(count: int = 30, seed: int = 7):
    """Strained, rattled, randomly substituted Ni/Cu/Al cells (1–8 atoms, cubic and non-cubic) with EMT labels.

    Labels sit on the atoms' SinglePointCalculator (energy eV, forces eV/Å, stress eV/Å³ Voigt, ASE sign).
    """
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        host = ELEMENTS[k % len(ELEMENTS)]
        shape = k % 4
        if shape == 0:
            atoms = bulk(host, "fcc", a=LATTICE_CONSTANT[host], cubic=True)  # 4 atoms, cubic
        elif shape == 1:
            atoms = bulk(host, "fcc", a=LATTICE_CONSTANT[host]).repeat((2, 2, 1))  # 4 atoms, primitive (non-cubic)
        elif shape == 2:
            atoms = bulk(host, "fcc", a=LATTICE_CONSTANT[host], cubic=True).repeat((2, 1, 1))  # 8 atoms
        else:
            atoms = bulk(host, "fcc", a=LATTICE_CONSTANT[host], orthorhombic=True).repeat((1, 1, 2))  # 4 atoms
        symbols = atoms.get_chemical_symbols()
        for i in range(len(atoms)):
            if rng.random() < 0.35:
                symbols[i] = ELEMENTS[rng.integers(len(ELEMENTS))]
        atoms.set_chemical_symbols(symbols)
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, size=(3, 3))
        atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        atoms.info["id"] = f"emt-mace-{k}"
        structures.append(atoms)
    return structures


def make_tiny_mace_model(path: str | Path, steps: int = 40, seed: int = 0) -> Path:
    """Build and train a tiny ScaleShiftMACE (float64) on EMT cells, pickle it to ``path`` (a ``.model`` file)."""
    from e3nn import o3
    from mace import data as mace_data
    from mace import modules
    from mace.tools import torch_geometric
    from mace.tools.torch_tools import default_dtype
    from mace.tools.utils import AtomicNumberTable

    path = Path(path)
    structures = emt_training_structures()
    z_table = AtomicNumberTable(sorted(int(z) for z in {28, 29, 13}))
    torch.manual_seed(seed)
    with default_dtype(torch.float64):
        graphs = [
            mace_data.AtomicData.from_config(mace_data.config_from_atoms(atoms), z_table=z_table, cutoff=R_MAX)
            for atoms in structures
        ]
        batch = torch_geometric.Batch.from_data_list(graphs)
        energies = torch.tensor([atoms.get_potential_energy() for atoms in structures])
        forces = torch.tensor(np.concatenate([atoms.get_forces() for atoms in structures]))
        counts = torch.stack([graph.node_attrs.sum(0) for graph in graphs])  # (structures, elements)
        # E0 per element by least squares on composition, as mace's `--E0s average`.
        atomic_energies = torch.linalg.lstsq(counts, energies[:, None]).solution[:, 0]
        n_atoms = counts.sum(1)
        per_atom_interaction = (energies - counts @ atomic_energies) / n_atoms
        _, receivers = batch.edge_index
        avg_num_neighbors = float(torch.unique(receivers, return_counts=True)[1].double().mean())
        model = modules.ScaleShiftMACE(
            r_max=R_MAX,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=2,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            num_interactions=2,
            num_elements=len(z_table),
            hidden_irreps=o3.Irreps("16x0e+16x1o"),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=atomic_energies.numpy(),
            avg_num_neighbors=avg_num_neighbors,
            atomic_numbers=z_table.zs,
            correlation=2,
            gate=torch.nn.functional.silu,
            radial_MLP=[32, 32],
            atomic_inter_scale=float(forces.pow(2).mean().sqrt()),
            atomic_inter_shift=float(per_atom_interaction.mean()),
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(steps):
            optimizer.zero_grad()
            output = model(batch.to_dict(), training=True, compute_force=True)
            energy_loss = (((output["energy"] - energies) / n_atoms) ** 2).mean()
            force_loss = ((output["forces"] - forces) ** 2).mean()
            (energy_loss + 10.0 * force_loss).backward()
            optimizer.step()
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    torch.save(model, tmp)
    os.replace(tmp, path)
    return path


def tiny_mace_model_path(cache_dir: str | Path) -> Path:
    """The tiny model's ``.model`` file in ``cache_dir``, built on first use (keyed by this source and versions)."""
    import e3nn
    import mace

    key = hashlib.sha256(
        (Path(__file__).read_text() + torch.__version__ + e3nn.__version__ + mace.__version__).encode()
    ).hexdigest()[:12]
    path = Path(cache_dir) / f"tiny-mace-{key}.model"
    if not path.exists():
        make_tiny_mace_model(path)
    return path


if __name__ == "__main__":
    import sys

    start = time.perf_counter()
    target = make_tiny_mace_model(sys.argv[1] if len(sys.argv) > 1 else "tiny.model")
    print(f"wrote {target} in {time.perf_counter() - start:.1f} s")
