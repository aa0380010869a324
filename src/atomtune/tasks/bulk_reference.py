"""The relaxed bulk that the defect, surface, stacking-fault and phonon tasks start from, and supercell sizes for it.

Each of those tasks first relaxes the input crystal with the calculator it is given, so a model is judged at its own
equilibrium lattice (as a DFT code would be), then builds supercells or slabs from that bulk.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from atomtune.exceptions import AtomtuneError
from atomtune.tasks.relax import relax_structures


def periodic_bulk(atoms: Atoms, label: str, task: str) -> None:
    """Raise :class:`AtomtuneError` unless ``atoms`` is periodic along all three cell vectors."""
    if not atoms.pbc.all():
        raise AtomtuneError(
            f"structure {label} is not periodic in all three directions (pbc={atoms.pbc.tolist()}); {task} starts "
            "from a 3D-periodic bulk crystal: give the bulk, not a slab or molecule"
        )


def relaxed_bulk(atoms: Atoms, label: str, calculator, fmax: float, max_steps: int) -> Atoms:
    """``atoms`` with cell and positions relaxed by ``calculator`` (BFGS + FrechetCellFilter), calculator attached.

    Raises :class:`AtomtuneError` naming the structure when the relaxation fails or does not reach ``fmax`` (eV/Å) in
    ``max_steps``: a defect or surface energy on an unrelaxed bulk would be off by the bulk's own strain energy.
    """
    (relaxation,) = relax_structures([atoms], calculator, fmax, max_steps, relax_cell=True, optimizer="BFGS")
    if not relaxation.converged:
        raise AtomtuneError(f"structure {label}: bulk relaxation failed: {relaxation.error}")
    relaxed = relaxation.atoms
    relaxed.calc = calculator
    return relaxed


def starting_bulk(atoms: Atoms, label: str, calculator, task: str, relax: bool, fmax: float, max_steps: int) -> Atoms:
    """The bulk a task starts from: ``atoms`` checked to be 3D-periodic (:func:`periodic_bulk`), relaxed by
    ``calculator`` when ``relax`` (:func:`relaxed_bulk`, ``fmax`` eV/Å, ``max_steps``), with ``calculator`` attached."""
    periodic_bulk(atoms, label, task)
    atoms.calc = calculator
    if relax:
        atoms = relaxed_bulk(atoms, label, calculator, fmax, max_steps)
    return atoms


def supercell_repeats(atoms: Atoms, min_width: float) -> tuple[int, int, int]:
    """Smallest (n1, n2, n3) with every perpendicular width of ``atoms.repeat((n1, n2, n3))`` ≥ ``min_width`` (Å).

    The perpendicular width along cell vector i is 1/|b_i| (b the reciprocal vectors without 2π): the distance between
    the two faces of the cell it crosses, which bounds how close a defect or displaced atom comes to its own image.
    """
    widths = 1.0 / np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    return tuple(max(1, math.ceil(min_width / width - 1e-9)) for width in widths)
