"""Vacancy formation energy, per symmetry-distinct site, in a periodic supercell with relaxed positions.

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``):

    E_f = E(N−1) − (N−1)/N · E(N)

with E(N) the perfect supercell and E(N−1) the same supercell with one atom removed, both at the bulk lattice the
calculator itself relaxes to (so each model is judged at its own equilibrium, as DFT would be). For an elemental solid
this is the usual formation energy with the bulk as the atom reservoir; for a compound it refers the removed atom to the
average energy per atom of the bulk (no chemical potentials), which ranks sites but is not a formation energy in a
grand-canonical sense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import spglib
from ase import Atoms

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import as_calculator, error_message, run_each
from atomtune.tasks.bulk_reference import starting_bulk, supercell_repeats
from atomtune.tasks.comparison import compare_properties, plot_properties
from atomtune.tasks.relax import relax_structures


@dataclass
class Settings:
    """How vacancies are made and relaxed.

    ``supercell``: repetitions of the input cell (n1, n2, n3); None picks the smallest that makes every perpendicular
    width of the supercell ≥ ``min_supercell_width``.
    ``min_supercell_width``: Å. 10 Å keeps a vacancy ≥ 10 Å from its periodic images: 108 atoms for fcc Cu from the
    conventional cell, 125 from the primitive (EMT Cu: E_f 1.228 eV with 32 atoms, 1.224 with 108 and with 256).
    ``relax_bulk``: relax cell and positions of the input first, so E_f is at the calculator's own lattice constant.
    ``relax``: relax the positions of the vacancy supercell (fixed cell: the dilute limit); False gives the unrelaxed
    E_f only.
    ``fmax``: eV/Å, force convergence of every relaxation; 0.01 resolves E_f to ~1 meV (EMT Cu: 0.4 meV from 0.001).
    ``max_steps``: optimizer steps per relaxation before the record is marked not converged.
    ``symprec``: Å, spglib tolerance for deciding which sites are equivalent; 0.01 tolerates relaxation noise.
    """

    supercell: tuple[int, int, int] | None = None
    min_supercell_width: float = 10.0
    relax_bulk: bool = True
    relax: bool = True
    fmax: float = 0.01
    max_steps: int = 500
    symprec: float = 0.01


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per symmetry-distinct site of each structure.

    Record: ``id`` (``"<structure id>:<element><site_index>"``), ``structure``, ``site_index`` (index in the input cell
    of the representative atom), ``element``, ``multiplicity`` (equivalent atoms in the input cell), ``supercell``,
    ``n_atoms_supercell``, ``volume_per_atom`` (Å³, of the bulk used), ``energy_perfect_supercell`` and
    ``energy_vacancy_supercell`` (eV), ``vacancy_formation_energy`` (eV, relaxed),
    ``vacancy_formation_energy_unrelaxed`` (eV), ``relaxation_energy`` (eV, unrelaxed − relaxed), ``relaxation_steps``,
    ``converged``. A failed structure gives one record with ``"error"``; a failed site, that site's record with it.
    """
    settings = settings or Settings()
    calculator = as_calculator(calculator)
    return run_each(
        structures, lambda atoms, label: _vacancies(atoms, label, calculator, settings), "vacancy", progress
    )


def _vacancies(unit: Atoms, label: str, calculator, settings: Settings) -> list[dict]:
    unit = starting_bulk(
        unit, label, calculator, "the vacancy task", settings.relax_bulk, settings.fmax, settings.max_steps
    )
    repeats = tuple(settings.supercell or supercell_repeats(unit, settings.min_supercell_width))
    perfect = unit.repeat(repeats)
    perfect.calc = calculator
    if settings.relax:
        # the perfect supercell of a relaxed bulk has no forces; one made from an unrelaxed input (relax_bulk=False) may
        (relaxation,) = relax_structures(
            [perfect], calculator, settings.fmax, settings.max_steps, relax_cell=False, optimizer="BFGS"
        )
        if not relaxation.converged:
            raise AtomtuneError(f"structure {label}: perfect-supercell relaxation failed: {relaxation.error}")
        perfect = relaxation.atoms
    energy_perfect = perfect.get_potential_energy()
    n_atoms = len(perfect)
    reference = (n_atoms - 1) / n_atoms * energy_perfect

    records = []
    for site_index, multiplicity in distinct_sites(unit, settings.symprec):
        element = unit[site_index].symbol
        record = {
            "id": f"{label}:{element}{site_index}",
            "structure": label,
            "site_index": site_index,
            "element": element,
            "multiplicity": multiplicity,
            "supercell": list(repeats),
            "n_atoms_supercell": n_atoms,
            "volume_per_atom": unit.get_volume() / len(unit),
            "energy_perfect_supercell": energy_perfect,
        }
        try:
            # atoms.repeat puts the input cell's atoms first, so site_index is also the representative's supercell index
            defect = perfect.copy()
            del defect[site_index]
            defect.calc = calculator
            energy_unrelaxed = defect.get_potential_energy()
            energy_defect, steps, converged = energy_unrelaxed, 0, True
            if settings.relax:
                (relaxation,) = relax_structures(
                    [defect], calculator, settings.fmax, settings.max_steps, relax_cell=False, optimizer="BFGS"
                )
                energy_defect, steps, converged = relaxation.energy, relaxation.steps, relaxation.converged
                if relaxation.error:
                    record["error"] = f"vacancy relaxation: {relaxation.error}"
            record.update(
                energy_vacancy_supercell=energy_defect,
                vacancy_formation_energy=energy_defect - reference,
                vacancy_formation_energy_unrelaxed=energy_unrelaxed - reference,
                relaxation_energy=energy_unrelaxed - energy_defect,
                relaxation_steps=steps,
                converged=converged,
            )
        except Exception as error:  # one site failing keeps the other sites' records
            record["error"] = error_message(error)
        records.append(record)
    return records


def distinct_sites(atoms: Atoms, symprec: float) -> list[tuple[int, int]]:
    """(representative atom index, multiplicity) of each set of symmetry-equivalent atoms (spglib), in index order."""
    dataset = spglib.get_symmetry_dataset(
        (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
    )
    equivalent = np.arange(len(atoms)) if dataset is None else np.asarray(dataset.equivalent_atoms)
    representatives, counts = np.unique(equivalent, return_counts=True)
    return [(int(index), int(count)) for index, count in zip(representatives, counts)]


#: Scalar properties of a record that ``compare`` and ``plot`` show (eV).
PROPERTIES = ("vacancy_formation_energy", "vacancy_formation_energy_unrelaxed")


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per site (``id`` = structure:element+index) and property (eV), a column per model, differences and MAE vs
    ``reference``."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bar charts of relaxed and unrelaxed E_f (eV) per site, bars grouped by model."""
    return plot_properties(results, PROPERTIES, out_dir, "vacancy")
