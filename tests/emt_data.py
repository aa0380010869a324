"""EMT-labelled test structures (importable from any test folder: `from emt_data import emt_structures`)."""

from __future__ import annotations

import numpy as np


def emt_structures(count: int = 12, seed: int = 0, elements=("Cu", "Ni", "Al")):
    """Small fcc cells (4–8 atoms) of EMT elements, strained and rattled, with EMT energy/forces/stress attached."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from atomtune.data.dataset import attach_labels

    rng = np.random.default_rng(seed)
    lattice = {"Cu": 3.61, "Ni": 3.52, "Al": 4.05, "Pd": 3.89, "Ag": 4.09, "Pt": 3.92, "Au": 4.08}
    structures = []
    for k in range(count):
        host = elements[k % len(elements)]
        atoms = bulk(host, "fcc", a=lattice[host], cubic=True)
        if k % 3 == 2:
            atoms = atoms.repeat((2, 1, 1))
        symbols = atoms.get_chemical_symbols()
        for i in range(len(atoms)):
            if rng.random() < 0.3:
                symbols[i] = elements[rng.integers(len(elements))]
        atoms.set_chemical_symbols(symbols)
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        attach_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        atoms.info["id"] = f"emt-{k}"
        atoms.info["source"] = "emt"
        structures.append(atoms)
    return structures


def substituted_cu_cells(count: int, seed: int = 0):
    """The first-try fine-tuning cells: 8-atom fcc Cu with three sites replaced by Ni or Al, ±1 % strain, rattled
    0.08 Å, EMT labels (the case of the first-try issue; also used by benchmarks/bench_finetune_first_try.py)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    cells = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        for index in rng.choice(len(atoms), size=3, replace=False):
            atoms[index].symbol = str(rng.choice(["Ni", "Al"]))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.diag(rng.uniform(-0.01, 0.01, 3))), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        atoms.info["id"] = f"emt-{k}"
        cells.append(atoms)
    return cells


def alloy_cell(repeat: int = 3):
    """A rattled, strained fcc Cu/Ni/Al supercell of 4·repeat³ atoms (unlabelled; a non-cubic cell, so chunks and
    slices run along skewed vectors): the large mixed cell of the chunking and recomputed-activation tests."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat, repeat, repeat))
    rng = np.random.default_rng(3)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[rng.random(len(atoms)) < 0.2] = "Ni"
    symbols[rng.random(len(atoms)) < 0.1] = "Al"
    atoms.set_chemical_symbols(symbols.tolist())
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + [[0.02, 0.03, 0.0], [0.0, -0.01, 0.02], [0.01, 0.0, 0.015]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms
