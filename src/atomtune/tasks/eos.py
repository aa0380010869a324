"""Equation of state: E–V curve and Birch–Murnaghan fit → equilibrium volume, lattice constant, B₀ (GPa) and B′.

Each structure is first relaxed (cell and ions) with the calculator, so the curve is centred on that calculator's own
minimum (a model whose lattice constant is off by a few % would otherwise have its minimum outside the sampled range);
then the cell is scaled isotropically over ±``max_volume_strain`` in volume, ions relaxed at each fixed cell, and
``ase.eos.EquationOfState`` (Birch–Murnaghan, PRB 70, 224107) fitted. Units: Å³, eV; B₀ in GPa via ``ase.units.GPa``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import GPa

from atomtune.tasks import run_each
from atomtune.tasks.bulk_reference import periodic_bulk, relaxed_bulk
from atomtune.tasks.comparison import compare_properties, plot_properties, records_by_id, safe_filename
from atomtune.tasks.relax import relax_structures

PROPERTIES = (
    "lattice_constant",
    "volume_per_atom",
    "bulk_modulus_gpa",
    "bulk_modulus_derivative",
    "energy_per_atom",
)


@dataclass
class Settings:
    """``n_points``: volumes on the curve (11: enough to fix B′ with a residual to judge the fit).
    ``max_volume_strain``: volumes from (1 − s)·V to (1 + s)·V (0.1: ±3 % in length, near-harmonic yet curved enough for
    B′). ``relax_first``: relax cell and ions before scanning (see module docstring). ``relax_ions``: relax ions at each
    volume (no effect on one-atom or symmetric cells, needed for anything with internal degrees of freedom). ``fmax``:
    eV/Å for both relaxations (0.01: the E–V curve needs meV accuracy). ``max_steps``: per relaxation. ``eos``: any
    ``ase.eos.EquationOfState`` form (``"birchmurnaghan"``, ``"vinet"``, ``"murnaghan"`` …)."""

    n_points: int = 11
    max_volume_strain: float = 0.1
    relax_first: bool = True
    relax_ions: bool = True
    fmax: float = 0.01
    max_steps: int = 300
    eos: str = "birchmurnaghan"


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure: ``volume_per_atom`` (V₀/N, Å³), ``energy_per_atom`` (E₀/N, eV), ``bulk_modulus_gpa``,
    ``bulk_modulus_derivative`` (B′, only for forms that have one), ``lattice_constant`` (a of the conventional standard
    cell at V₀, Å), ``cell_lengths`` (the given cell's a, b, c at V₀, Å), ``fit_rmse_mev_per_atom``, and the curve
    (``volumes_per_atom``, ``energies_per_atom``) for plots. A fit whose minimum lies outside the sampled volumes keeps
    its numbers and gets ``"error"``."""
    settings = settings or Settings()

    def compute(atoms: Atoms, label: str) -> dict:
        return _equation_of_state(atoms, label, calculator, settings)

    return run_each(structures, compute, "eos", progress)


def _equation_of_state(atoms: Atoms, label: str, calculator, settings: Settings) -> dict:
    from ase.eos import EquationOfState

    n_atoms = len(atoms)
    record: dict = {"id": label, "formula": atoms.get_chemical_formula(), "n_atoms": n_atoms}
    periodic_bulk(atoms, label, "the equation of state")
    atoms.calc = None
    if settings.relax_first:
        atoms = relaxed_bulk(atoms, label, calculator, settings.fmax, settings.max_steps)
        atoms.calc = None
    scales = np.linspace(1 - settings.max_volume_strain, 1 + settings.max_volume_strain, settings.n_points)
    strained = []
    for scale in scales:
        copy = atoms.copy()
        copy.set_cell(atoms.cell[:] * scale ** (1 / 3), scale_atoms=True)
        strained.append(copy)
    relax_steps = settings.max_steps if settings.relax_ions and n_atoms > 1 else 0
    relaxations = relax_structures(strained, calculator, settings.fmax, relax_steps, relax_cell=False)
    volumes = np.array([r.atoms.get_volume() for r in relaxations])
    energies = np.array([r.energy for r in relaxations])
    record["volumes_per_atom"] = volumes / n_atoms
    record["energies_per_atom"] = energies / n_atoms
    if not np.isfinite(energies).all():
        failed = next(r.error for r in relaxations if not np.isfinite(r.energy))
        record["error"] = f"energy not computed at every volume: {failed}"
        return record
    eos = EquationOfState(volumes, energies, eos=settings.eos)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the out-of-range case is checked below and reported on the record
            v0, e0, bulk_modulus = eos.fit(warn=False)
    except (RuntimeError, ValueError) as error:  # scipy's curve_fit gives up, typically with no minimum in range
        record["error"] = f"{settings.eos} fit failed ({error}); is the minimum inside the sampled volumes?"
        return record
    record["volume_per_atom"] = v0 / n_atoms
    record["energy_per_atom"] = e0 / n_atoms
    record["bulk_modulus_gpa"] = bulk_modulus / GPa
    if settings.eos in ("birchmurnaghan", "murnaghan", "vinet", "pouriertarantola", "birch", "antonschmidt"):
        record["bulk_modulus_derivative"] = float(eos.eos_parameters[2])
    fitted = eos.func(volumes, *eos.eos_parameters)
    record["fit_rmse_mev_per_atom"] = float(np.sqrt(np.mean((fitted - energies) ** 2))) / n_atoms * 1000
    at_minimum = atoms.copy()
    at_minimum.set_cell(atoms.cell[:] * (v0 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    record["cell_lengths"] = at_minimum.cell.lengths()
    record["lattice_constant"] = conventional_lattice_constant(at_minimum)
    if not volumes.min() < v0 < volumes.max():
        record["error"] = (
            f"fitted minimum V0 = {v0 / n_atoms:.3f} Å³/atom lies outside the sampled volumes "
            f"{volumes.min() / n_atoms:.3f}–{volumes.max() / n_atoms:.3f} Å³/atom: raise max_volume_strain or relax "
            f"first."
        )
    not_converged = [r for r in relaxations if not r.converged]
    if relax_steps and not_converged:
        record["unconverged_volumes"] = len(not_converged)
    return record


def conventional_lattice_constant(atoms: Atoms) -> float:
    """a (Å) of the conventional standard cell (spglib via pymatgen): 3.61 Å for fcc Cu whether given primitive or
    cubic; the cell's own a for a structure without symmetry."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = AseAtomsAdaptor().get_structure(atoms)
    try:
        return float(SpacegroupAnalyzer(structure, symprec=1e-3).get_conventional_standard_structure().lattice.a)
    except Exception:  # spglib finds no cell for some distorted inputs: the given cell's a is the honest answer
        return float(atoms.cell.lengths()[0])


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per structure and property (lattice constant, V₀, B₀, B′, E₀), one column per model; differences and MAE
    against ``reference`` when given."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """One E–V plot per structure (points and fitted curve of every model, energies relative to each model's E₀), plus
    bars of lattice constant and bulk modulus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.eos import EquationOfState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    indexed = {model: records_by_id(records) for model, records in results.items()}
    ids = list(dict.fromkeys(i for records in indexed.values() for i in records))
    for structure in ids:
        figure, axis = plt.subplots(figsize=(4.8, 3.8))
        drawn = False
        for model, records in indexed.items():
            record = records.get(structure, {})
            volumes, energies = record.get("volumes_per_atom"), record.get("energies_per_atom")
            if not volumes or not energies or None in energies:
                continue
            volumes, energies = np.array(volumes), np.array(energies)
            reference_energy = record.get("energy_per_atom") or energies.min()
            (points,) = axis.plot(volumes, (energies - reference_energy) * 1000, "o", ms=4, label=model)
            try:
                eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    eos.fit(warn=False)
                grid = np.linspace(volumes.min(), volumes.max(), 100)
                curve = eos.func(grid, *eos.eos_parameters)
                axis.plot(grid, (curve - reference_energy) * 1000, "-", color=points.get_color(), lw=1)
            except Exception:  # a curve that cannot be fitted is still shown as points
                pass
            drawn = True
        if not drawn:
            plt.close(figure)
            continue
        axis.set_xlabel("volume (Å³/atom)")
        axis.set_ylabel("E − E₀ (meV/atom)")
        axis.set_title(f"eos: {structure}")
        axis.legend(fontsize="small")
        figure.tight_layout()
        path = out_dir / f"eos_curve_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    paths += plot_properties(results, ("lattice_constant", "bulk_modulus_gpa"), out_dir, "eos")
    return paths
