"""Generalised stacking-fault energy of fcc metals along ⟨112⟩{111}: the γ-curve, its maximum (unstable stacking-fault
energy γ_us) and its value at one partial Burgers vector (intrinsic stacking-fault energy γ_isf).

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``). The bulk is relaxed
with the calculator; a fully periodic cell of ``layers`` {111} planes (ABC stacking, c along [111]) is built at that
lattice constant, and the crystal above the cell boundary is shifted by u·b_p, b_p = a/6⟨112⟩ (|b_p| = a/√6), by
tilting the c vector: one fault per cell, no free surfaces. Atoms and the cell height relax only perpendicular to the
fault plane (the usual GSFE protocol, e.g. Zimmerman, Gao & Abraham, Model. Simul. Mater. Sci. Eng. 8, 103 (2000)), and

    γ(u) = (E(u) − E(0)) / A

with A the fault area. At u = 1 the stacking ABC|ABC becomes ABC|BCA: the intrinsic stacking fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import spglib
from ase import Atoms
from ase.constraints import FixCartesian
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from atomtune.data.generate import fcc111_fault_cell
from atomtune.exceptions import AtomtuneError
from atomtune.tasks import as_calculator, run_each
from atomtune.tasks.bulk_reference import periodic_bulk, relaxed_bulk
from atomtune.tasks.comparison import compare_properties, plot_properties
from atomtune.tasks.surface import J_PER_M2

FCC_SPACE_GROUP = 225


@dataclass
class Settings:
    """The fault cell, the sampled shifts and the relaxation.

    ``layers``: {111} planes in the cell, a multiple of 3 (ABC); 12 puts the fault ~25 Å (Cu) from its periodic image
    (EMT: γ_us of Cu and γ_isf of Al move < 0.1 mJ/m² from 6 to 18 layers; DFT's longer range needs more than 6).
    ``in_plane_repeat``: (n1, n2) repetitions of the 1-atom-per-layer {111} cell; (1, 1) is enough for a uniform shift
    with every atom of a layer equivalent.
    ``fractions``: shifts u in units of |b_p| = a/√6; 0 to 1 in steps of 0.1 resolves γ_us, whose maximum lies near
    u = 0.5.
    ``relax_bulk``: relax the bulk first, so the fault is built at the calculator's own lattice constant.
    ``relax``: relax along the fault normal only: atoms' z and the cell height (x, y fixed so the shift stays imposed);
    False gives the rigid-shift curve.
    ``fmax``: eV/Å, tighter than elsewhere because γ_isf is a few meV per atom of the fault plane; ``max_steps``:
    optimizer steps per configuration. ``symprec``: Å, for recognising fcc.
    """

    layers: int = 12
    in_plane_repeat: tuple[int, int] = (1, 1)
    fractions: list[float] = field(default_factory=lambda: [round(0.1 * k, 10) for k in range(11)])
    relax_bulk: bool = True
    relax: bool = True
    fmax: float = 0.005
    max_steps: int = 300
    symprec: float = 0.01


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure (an elemental fcc crystal).

    Record: ``id``, ``element``, ``lattice_constant`` (Å, of the relaxed bulk), ``fault_area`` (Å²), ``layers``,
    ``partial_burgers_vector`` (Å, a/√6), ``fractions`` (u), ``gsfe_mj_per_m2`` (γ(u)),
    ``intrinsic_stacking_fault_energy`` and ``unstable_stacking_fault_energy`` each ``_mj_per_m2`` and ``_j_per_m2``
    (γ_us: the maximum of the sampled curve up to u = 1, so as fine as ``fractions``), ``relaxation_steps`` (per u),
    ``converged``. A structure that is not elemental fcc gives a record with ``"error"``.
    """
    settings = settings or Settings()
    if settings.layers % 3:
        raise AtomtuneError(
            f"layers={settings.layers}: a periodic fcc {{111}} cell needs a multiple of 3 layers (ABC stacking)"
        )
    calculator = as_calculator(calculator)
    return run_each(
        structures, lambda atoms, label: _stacking_fault(atoms, label, calculator, settings), "stacking fault", progress
    )


def _stacking_fault(bulk: Atoms, label: str, calculator, settings: Settings) -> dict:
    element = _fcc_element(bulk, label, settings.symprec)
    bulk.calc = calculator
    if settings.relax_bulk:
        bulk = relaxed_bulk(bulk, label, calculator, settings.fmax, settings.max_steps)
    lattice_constant = float((4.0 * bulk.get_volume() / len(bulk)) ** (1.0 / 3.0))
    repeat = tuple(settings.in_plane_repeat)
    perfect, area, partial_burgers = fcc111_fault_cell(element, lattice_constant, settings.layers, 0.0, repeat)

    energies, steps, converged = [], [], True
    for fraction in settings.fractions:
        faulted, _, _ = fcc111_fault_cell(element, lattice_constant, settings.layers, fraction, repeat)
        faulted.calc = calculator
        used = 0
        if settings.relax:
            faulted.set_constraint(FixCartesian(range(len(faulted)), mask=(True, True, False)))
            # the cell height relaxes too (zz strain only): a fault expands the lattice across it, and with the height
            # fixed that expansion would strain every layer and make γ depend on ``layers``
            optimizer = BFGS(FrechetCellFilter(faulted, mask=[0, 0, 1, 0, 0, 0]), logfile=None)
            converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps)) and converged
            used = optimizer.nsteps
        energies.append(faulted.get_potential_energy())
        steps.append(used)
    # γ relative to the unshifted cell, which is u = 0 when sampled and otherwise computed now
    if 0.0 in settings.fractions:
        energy_perfect = energies[list(settings.fractions).index(0.0)]
    else:
        perfect.calc = calculator
        energy_perfect = perfect.get_potential_energy()
    gsfe_j_per_m2 = (np.array(energies) - energy_perfect) / area / J_PER_M2
    fractions = np.asarray(settings.fractions, dtype=float)
    record = {
        "id": label,
        "element": element,
        "lattice_constant": lattice_constant,
        "fault_area": area,
        "layers": settings.layers,
        "partial_burgers_vector": partial_burgers,
        "fractions": fractions,
        "gsfe_mj_per_m2": gsfe_j_per_m2 * 1000.0,
        "relaxation_steps": steps,
        "converged": converged,
    }
    # None where the sampled shifts do not reach the point (no u ≤ 1, or no u = 1)
    before_fault = fractions <= 1.0 + 1e-9
    unstable = float(gsfe_j_per_m2[before_fault].max()) if before_fault.any() else None
    at_fault = np.flatnonzero(np.isclose(fractions, 1.0))
    intrinsic = float(gsfe_j_per_m2[at_fault[0]]) if at_fault.size else None
    for name, value in (("unstable", unstable), ("intrinsic", intrinsic)):
        record[f"{name}_stacking_fault_energy_j_per_m2"] = value
        record[f"{name}_stacking_fault_energy_mj_per_m2"] = None if value is None else value * 1000.0
    if not converged:
        record["error"] = (
            f"a fault relaxation did not converge to fmax {settings.fmax} eV/Å in {settings.max_steps} steps"
        )
    return record


def _fcc_element(atoms: Atoms, label: str, symprec: float) -> str:
    """The element of an elemental fcc crystal, or an AtomtuneError saying what the structure is instead."""
    periodic_bulk(atoms, label, "the stacking-fault task")
    elements = sorted(set(atoms.get_chemical_symbols()))
    dataset = spglib.get_symmetry_dataset(
        (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
    )
    number = None if dataset is None else int(dataset.number)
    # four atoms in the conventional standard cell: the fcc lattice itself, not another one-element 225 structure
    if len(elements) != 1 or number != FCC_SPACE_GROUP or len(dataset.std_types) != 4:
        raise AtomtuneError(
            f"structure {label} ({atoms.get_chemical_formula()}, space group {number}) is not an elemental fcc "
            "crystal; the ⟨112⟩{111} stacking-fault task needs one element on an fcc lattice (space group 225)"
        )
    return elements[0]


#: Scalar properties of a record that ``compare`` and ``plot`` show (mJ/m², the unit SFEs are quoted in).
PROPERTIES = ("intrinsic_stacking_fault_energy_mj_per_m2", "unstable_stacking_fault_energy_mj_per_m2")


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per structure for γ_isf and γ_us (mJ/m²), a column per model, differences and MAE vs ``reference``."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bar charts of γ_isf and γ_us per structure, and one GSFE-curve PNG per structure with every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atomtune.tasks.comparison import safe_filename

    paths = plot_properties(results, PROPERTIES, out_dir, "stacking_fault")
    curves: dict[str, dict[str, dict]] = {}
    for model, records in results.items():
        for record in records:
            if record.get("gsfe_mj_per_m2") is not None:
                curves.setdefault(str(record["id"]), {})[model] = record
    for structure, models in curves.items():
        figure, axis = plt.subplots(figsize=(5.0, 3.8))
        for model, record in models.items():
            axis.plot(record["fractions"], record["gsfe_mj_per_m2"], "o-", ms=3, label=model)
        axis.axhline(0.0, color="0.6", lw=0.6)
        axis.set_xlabel("shift along ⟨112⟩ (units of a/√6)")
        axis.set_ylabel("γ (mJ/m²)")
        axis.set_title(f"generalised stacking fault: {structure}")
        axis.legend(fontsize="small")
        figure.tight_layout()
        path = Path(out_dir) / f"stacking_fault_gsfe_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
