"""Surface energies of slabs cut by Miller index from a relaxed bulk.

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``): for each structure
the bulk is relaxed with the calculator, slabs are cut from it with pymatgen's ``SlabGenerator`` (one per termination),
relaxed at fixed cell, and

    γ = (E_slab − N · ε_bulk) / (2 A)

with ε_bulk the energy per atom of the relaxed bulk from the same calculator and A the area of one face, in J/m².
Miller indices refer to the conventional standard cell of the bulk (pymatgen's convention), so (1, 1, 1) of fcc Cu is
the close-packed surface whatever cell the input comes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.constraints import FixAtoms
from ase.geometry import get_layers

from atomtune.data.generate import slab_terminations
from atomtune.tasks import as_calculator, error_message, run_each
from atomtune.tasks.bulk_reference import starting_bulk
from atomtune.tasks.comparison import compare_properties, plot_properties
from atomtune.tasks.relax import relax_structures

#: eV/Å² → J/m².
J_PER_M2 = units.J / units.m**2

#: Å: atoms whose heights differ by less than this are one atomic layer (for fixing the bottom layers); relaxed
#: layers ripple by ~0.01 Å, while the closest distinct layers of low-index surfaces are ≥ 0.5 Å apart.
LAYER_TOLERANCE = 0.3


@dataclass
class Settings:
    """Which slabs and how they are relaxed.

    ``miller_indices``: surfaces to cut, (h, k, l) of the conventional standard cell; the default is fcc's three
    low-index surfaces.
    ``min_slab_thickness``: Å, pymatgen's ``min_slab_size``: 10 Å gives 5 layers of Cu(111), 6 of Cu(100) (EMT Cu(111):
    γ = 1.0438 J/m² with 5, 7 and 9 layers; DFT slabs of metals converge more slowly, to ~2% at this thickness).
    ``min_vacuum``: Å between periodic slab images; at 15 Å no graph edge crosses the vacuum for any cutoff below it
    (the backbones use 5–6 Å).
    ``fixed_bottom_layers``: atomic layers at the bottom held at their bulk positions. 0 (default) relaxes both faces,
    as the formula's 2A assumes; with fixed layers γ is the mean of one relaxed and one bulk-terminated face.
    ``relax_bulk``: relax cell and positions of the input first (ε_bulk and the slab's lattice are then the
    calculator's own).
    ``relax``: relax slab positions (fixed cell); False gives the unrelaxed γ only.
    ``fmax``: eV/Å, force convergence of every relaxation. ``max_steps``: optimizer steps per relaxation.
    ``symprec``: Å, tolerance for finding the conventional standard cell of the bulk.
    """

    miller_indices: list[tuple[int, int, int]] = field(default_factory=lambda: [(1, 1, 1), (1, 0, 0), (1, 1, 0)])
    min_slab_thickness: float = 10.0
    min_vacuum: float = 15.0
    fixed_bottom_layers: int = 0
    relax_bulk: bool = True
    relax: bool = True
    fmax: float = 0.01
    max_steps: int = 500
    symprec: float = 0.01


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure, Miller index and termination.

    Record: ``id`` (``"<structure id>:(h,k,l)"``, ``"/t<k>"`` appended for terminations after the first), ``structure``,
    ``miller_index``, ``termination``, ``symmetric`` (both faces equivalent), ``n_atoms``, ``n_layers``,
    ``surface_area`` (Å², one face), ``slab_thickness`` (Å), ``energy_per_atom_bulk`` (eV/atom), ``energy_slab`` (eV),
    ``surface_energy_j_per_m2`` (relaxed), ``surface_energy_unrelaxed_j_per_m2``, ``relaxation_steps``,
    ``converged``. A structure that cannot be cut (not 3D-periodic, bulk relaxation fails) gives one record with
    ``"error"``; a Miller index that yields no slab, that index's record with it.
    """
    settings = settings or Settings()
    calculator = as_calculator(calculator)
    return run_each(
        structures, lambda atoms, label: _surfaces(atoms, label, calculator, settings), "surface", progress
    )


def _surfaces(bulk: Atoms, label: str, calculator, settings: Settings) -> list[dict]:
    bulk = starting_bulk(
        bulk, label, calculator, "the surface task", settings.relax_bulk, settings.fmax, settings.max_steps
    )
    energy_per_atom_bulk = bulk.get_potential_energy() / len(bulk)
    records = []
    for miller in settings.miller_indices:
        miller = tuple(int(index) for index in miller)
        miller_id = f"{label}:({','.join(map(str, miller))})"
        try:
            slabs = slab_terminations(bulk, miller, settings.min_slab_thickness, settings.min_vacuum,
                                      symprec=settings.symprec)
        except Exception as error:  # a bad index fails alone; the other surfaces still run
            record = {"id": miller_id, "structure": label, "miller_index": list(miller), "error": error_message(error)}
            records.append(record)
            continue
        for termination, (slab, symmetric) in enumerate(slabs):
            record = {
                "id": miller_id if termination == 0 else f"{miller_id}/t{termination}",
                "structure": label,
                "miller_index": list(miller),
                "termination": termination,
                "symmetric": symmetric,
                "energy_per_atom_bulk": energy_per_atom_bulk,
            }
            try:
                record.update(_surface_energy(slab, calculator, energy_per_atom_bulk, settings))
            except Exception as error:  # one slab failing keeps the other slabs' records
                record["error"] = error_message(error)
            records.append(record)
    return records


def _surface_energy(slab: Atoms, calculator, energy_per_atom_bulk: float, settings: Settings) -> dict:
    """Relax one slab and return its surface energy fields (J/m²)."""
    normal = np.cross(slab.cell[0], slab.cell[1])
    area = float(np.linalg.norm(normal))
    heights = slab.positions @ (normal / area)
    layer_of_atom, layer_heights = get_layers(slab, (0, 0, 1), tolerance=LAYER_TOLERANCE)
    if settings.fixed_bottom_layers:
        slab.set_constraint(FixAtoms(indices=np.flatnonzero(layer_of_atom < settings.fixed_bottom_layers)))
    slab.calc = calculator
    n_atoms = len(slab)
    energy_unrelaxed = energy = slab.get_potential_energy()
    steps, converged, error = 0, True, None
    if settings.relax:
        (relaxation,) = relax_structures(
            [slab], calculator, settings.fmax, settings.max_steps, relax_cell=False, optimizer="BFGS"
        )
        energy, steps, converged, error = relaxation.energy, relaxation.steps, relaxation.converged, relaxation.error
    fields = {
        "n_atoms": n_atoms,
        "n_layers": len(layer_heights),
        "surface_area": area,
        "slab_thickness": float(heights.max() - heights.min()),
        "energy_slab": energy,
        "surface_energy_j_per_m2": surface_energy_j_per_m2(energy, n_atoms, energy_per_atom_bulk, area),
        "surface_energy_unrelaxed_j_per_m2": surface_energy_j_per_m2(
            energy_unrelaxed, n_atoms, energy_per_atom_bulk, area
        ),
        "relaxation_steps": steps,
        "converged": converged,
    }
    if error:
        fields["error"] = f"slab relaxation: {error}"
    return fields


def surface_energy_j_per_m2(energy_slab: float, n_atoms: int, energy_per_atom_bulk: float, area: float) -> float:
    """γ = (E_slab − N·ε_bulk) / (2A) in J/m², from eV, eV/atom and the area of one face in Å²."""
    return (energy_slab - n_atoms * energy_per_atom_bulk) / (2.0 * area) / J_PER_M2


#: Scalar properties of a record that ``compare`` and ``plot`` show.
PROPERTIES = ("surface_energy_j_per_m2", "surface_energy_unrelaxed_j_per_m2")


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per surface (``id`` = structure:(h,k,l)) and property (J/m²), a column per model, differences and MAE vs
    ``reference``."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bar charts of relaxed and unrelaxed γ (J/m²) per surface, bars grouped by model."""
    return plot_properties(results, PROPERTIES, out_dir, "surface")
