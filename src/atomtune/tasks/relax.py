"""Relaxation task: does a model keep the reference's relaxed structure a minimum, and how fast does it get there?

Takes reference-relaxed structures, rattles the atoms (σ configurable), relaxes them with the model — FIRE or BFGS on
positions and, through :class:`ase.filters.FrechetCellFilter`, the cell — and reports the distance to the reference
structure as Matbench Discovery does (pymatgen ``StructureMatcher.get_rms_dist``: RMS displacement normalised by
``(V/N)^(1/3)``, dimensionless), the energy change, the steps used and whether it converged within the step limit.

Given a :class:`~atomtune.models.base.Potential` (rather than an ASE calculator) with FIRE, all structures are relaxed
together through the batched forward (:mod:`atomtune.tasks.batched_relax`: same algorithm, same steps as ASE's FIRE).
:func:`relax_structures` is the shared relaxation step of the relax-based tasks (substitution, composition scan).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from atomtune.data.dataset import labels_of
from atomtune.tasks import as_calculator, error_message, json_ready, structure_label
from atomtune.tasks.batched_relax import MIN_VOLUME_PER_ATOM, Relaxation, collapsed_message, fire_relax
from atomtune.tasks.comparison import compare_properties, plot_properties

OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")

#: Properties put side by side by :func:`compare`.
PROPERTIES = (
    "energy_per_atom",
    "relaxation_energy_per_atom",
    "energy_per_atom_vs_label",
    "rmsd",
    "volume_change_fraction",
    "steps",
)


@dataclass
class Settings:
    """``rattle_stdev``: σ of the Gaussian displacement of every atom before relaxing, Å (0.05 Å: well beyond thermal
    noise at 0 K yet inside the basin of the reference minimum). ``seed``: rattle seed (structure ``i`` uses
    ``seed + i``). ``optimizer``: ``"FIRE"`` (batched with a Potential) or ``"BFGS"``/``"LBFGS"`` (ASE, one by one).
    ``fmax``: convergence on the largest force, eV/Å (0.05 eV/Å, Matbench Discovery's). ``max_steps``: step limit per
    structure (500: a converging FIRE relaxation of a small cell takes tens to a couple of hundred). ``relax_cell``:
    relax the cell too (Fréchet filter). ``batch_size``: structures per forward on the batched path (None: measured
    default). ``ltol``, ``stol``, ``angle_tol``: StructureMatcher tolerances (pymatgen's defaults)."""

    rattle_stdev: float = 0.05
    seed: int = 0
    optimizer: str = "FIRE"
    fmax: float = 0.05
    max_steps: int = 500
    relax_cell: bool = True
    batch_size: int | None = None
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


def relax_structures(
    structures: Sequence[Atoms],
    calculator,
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    optimizer: str = "FIRE",
    batch_size: int | None = None,
    progress: bool = False,
    stress: bool = False,
) -> list[Relaxation]:
    """Relax each structure (inputs untouched); one :class:`Relaxation` each, in order, never raising per structure.

    ``calculator``: a Potential (batched FIRE when ``optimizer`` is FIRE) or any ASE calculator (ASE optimiser, one
    structure after another). ``fmax`` eV/Å; ``relax_cell`` uses FrechetCellFilter on periodic structures; ``stress``:
    the final stress of periodic structures is wanted even at fixed cell (in ``relaxation.atoms.calc.results``).
    """
    from atomtune.models.base import Potential

    from atomtune.exceptions import AtomtuneError

    optimizer = optimizer.upper()
    if optimizer not in OPTIMIZERS:
        raise AtomtuneError(f"optimizer {optimizer!r} unknown; use one of {', '.join(OPTIMIZERS)}.")
    structures = list(structures)
    if isinstance(calculator, Potential) and optimizer == "FIRE":
        return fire_relax(
            calculator, structures, fmax, max_steps, relax_cell, batch_size, progress=progress, stress=stress
        )
    calculator = as_calculator(calculator)
    iterator = structures
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(structures, desc=f"relax ({optimizer})", unit="structure")
    return [_ase_relax(atoms, calculator, fmax, max_steps, relax_cell, optimizer) for atoms in iterator]


def relax_generated(
    parents: Sequence[Atoms],
    make: Callable[[Atoms, str], list[Atoms]],
    calculator,
    settings,
    relax_cell: bool = True,
    progress: bool = False,
) -> tuple[list[dict], list[Atoms], list[Relaxation]]:
    """Structures made from each parent by ``make(parent, id)``, relaxed together in one pool (one batch on a
    Potential).

    Returns (error records of the parents ``make`` refused, the made structures, their relaxations). ``settings``
    supplies ``fmax``, ``max_steps``, ``optimizer`` and ``batch_size`` (the substitution and composition-scan tasks).
    """
    refused: list[dict] = []
    made: list[Atoms] = []
    for index, parent in enumerate(parents):
        label = structure_label(parent, index)
        try:
            made.extend(make(parent, label))
        except Exception as error:  # a bad parent is reported; the other parents go on
            refused.append({"id": label, "formula": parent.get_chemical_formula(), "error": error_message(error)})
    relaxations = relax_structures(
        made,
        calculator,
        fmax=settings.fmax,
        max_steps=settings.max_steps,
        relax_cell=relax_cell,
        optimizer=settings.optimizer,
        batch_size=settings.batch_size,
        progress=progress,
    )
    return refused, made, relaxations


def _ase_relax(atoms: Atoms, calculator, fmax: float, max_steps: int, relax_cell: bool, optimizer: str) -> Relaxation:
    from ase import optimize
    from ase.filters import FrechetCellFilter

    work = atoms.copy()
    work.calc = calculator
    target = FrechetCellFilter(work) if relax_cell and work.pbc.all() else work
    opt = getattr(optimize, optimizer)(target, logfile=None)
    collapsed = None
    try:
        converged = False
        # irun rather than run: a collapsing cell is stopped before its neighbour lists grow without bound.
        for step_converged in opt.irun(fmax=fmax, steps=max_steps):
            converged = bool(step_converged)
            if work.pbc.all() and work.get_volume() / len(work) < MIN_VOLUME_PER_ATOM:
                collapsed = collapsed_message(work)
                converged = False
                break
        optimizable = target.__ase_optimizable__()
        max_force = float(optimizable.gradient_norm(optimizable.get_gradient()))
        energy = float(work.get_potential_energy())
        results = {"energy": energy, "forces": work.get_forces()}
        if work.pbc.all() and "stress" in calculator.implemented_properties:
            results["stress"] = work.get_stress()
    except Exception as error:  # the calculator failed mid-way: keep the steps it took
        final = work.copy()
        return Relaxation(final, float("nan"), opt.nsteps, False, float("nan"), error_message(error))
    final = work.copy()
    final.calc = SinglePointCalculator(final, **results)
    error = None
    if collapsed:
        error = collapsed
    elif not (np.isfinite(energy) and np.isfinite(max_force)):
        converged, error = False, "energy or forces became non-finite"
    elif not converged:
        error = f"not converged in {max_steps} steps (max force {max_force:.3g} eV/Å > fmax {fmax})"
    return Relaxation(final, energy, int(opt.nsteps), converged, max_force, error, collapsed=collapsed is not None)


def single_point_energies(structures: Sequence[Atoms], calculator) -> list[float]:
    """Energy (eV) of each structure as given, NaN where the calculator fails (batched for a Potential)."""
    from atomtune.models.base import Potential

    structures = list(structures)
    energies = [float("nan")] * len(structures)
    if isinstance(calculator, Potential):
        supported = calculator.supported_elements
        usable = [i for i, atoms in enumerate(structures) if set(atoms.get_chemical_symbols()) <= supported]
        if usable:
            predictions = calculator.predict([structures[i] for i in usable], forces=False, stress=False)
            for i, predicted in zip(usable, predictions):
                energies[i] = float(predicted["energy"])
        return energies
    for i, atoms in enumerate(structures):
        work = atoms.copy()
        work.calc = calculator
        try:
            energies[i] = float(work.get_potential_energy())
        except Exception:  # reported through the relaxation's own error
            pass
    return energies


def structure_rmsd(relaxed: Atoms, reference: Atoms, settings: Settings) -> float | None:
    """StructureMatcher RMS distance (normalised by (V/N)^(1/3)); None when the structures do not match."""
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    if not (relaxed.pbc.all() and reference.pbc.all()):
        return None
    matcher = StructureMatcher(ltol=settings.ltol, stol=settings.stol, angle_tol=settings.angle_tol)
    adaptor = AseAtomsAdaptor()
    distance = matcher.get_rms_dist(adaptor.get_structure(relaxed), adaptor.get_structure(reference))
    return None if distance is None else float(distance[0])


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """Rattle, relax and compare with the reference structure; one record per structure.

    Record (energies eV/atom): ``id``, ``formula``, ``n_atoms``, ``converged``, ``steps``, ``max_force`` (eV/Å, the
    final convergence measure), ``energy_per_atom`` (relaxed), ``energy_per_atom_at_reference`` (the input structure,
    same calculator), ``relaxation_energy_per_atom`` (their difference: ≤ 0, near 0 when the reference structure is
    also this calculator's minimum), ``energy_per_atom_vs_label`` (relaxed minus the input's attached reference label,
    when it has one: Matbench Discovery's ΔE), ``rmsd`` (dimensionless, see module docstring; None when the matcher
    finds no match), ``structure_matched``, ``volume_change_fraction`` (V_relaxed / V_reference − 1). A structure that
    does not converge keeps all of these plus ``"error"``.
    """
    settings = settings or Settings()
    structures = list(structures)
    starts = []
    for index, atoms in enumerate(structures):
        start = atoms.copy()
        start.calc = None
        if settings.rattle_stdev > 0:
            start.rattle(stdev=settings.rattle_stdev, seed=settings.seed + index)
        starts.append(start)
    relaxations = relax_structures(
        starts,
        calculator,
        fmax=settings.fmax,
        max_steps=settings.max_steps,
        relax_cell=settings.relax_cell,
        optimizer=settings.optimizer,
        batch_size=settings.batch_size,
        progress=progress,
    )
    at_reference = single_point_energies(structures, calculator)
    records = []
    for index, (reference, relaxation, reference_energy) in enumerate(zip(structures, relaxations, at_reference)):
        records.append(json_ready(_record(reference, relaxation, reference_energy, index, settings)))
    return records


def _record(reference: Atoms, relaxation: Relaxation, reference_energy: float, index: int, settings: Settings) -> dict:
    n_atoms = len(reference)
    record: dict = {
        "id": structure_label(reference, index),
        "formula": reference.get_chemical_formula(),
        "n_atoms": n_atoms,
        "optimizer": settings.optimizer.upper(),
        "converged": relaxation.converged,
        "steps": relaxation.steps,
        "max_force": relaxation.max_force,
        "energy_per_atom": relaxation.energy / n_atoms,
        "energy_per_atom_at_reference": reference_energy / n_atoms,
        "relaxation_energy_per_atom": (relaxation.energy - reference_energy) / n_atoms,
    }
    label = labels_of(reference).energy
    if label is not None:
        record["energy_per_atom_vs_label"] = (relaxation.energy - label) / n_atoms
    if relaxation.usable:
        try:
            record["rmsd"] = structure_rmsd(relaxation.atoms, reference, settings)
        except Exception as error:  # a matcher failure is reported, the energies still count
            record["rmsd"] = None
            record["rmsd_error"] = error_message(error)
        record["structure_matched"] = record["rmsd"] is not None
        if reference.pbc.all():
            record["volume_change_fraction"] = relaxation.atoms.get_volume() / reference.get_volume() - 1.0
    if relaxation.error:
        record["error"] = relaxation.error
    return record


def summary(records: Sequence[dict]) -> dict:
    """Over all structures: ``fraction_converged`` (within the step limit), ``mean_steps`` (converged ones),
    ``median_rmsd`` and ``fraction_matched`` (StructureMatcher found the reference)."""
    n = len(records)
    converged = [r for r in records if r.get("converged")]
    rmsds = [r["rmsd"] for r in records if r.get("rmsd") is not None]
    return {
        "n_structures": n,
        "fraction_converged": len(converged) / n if n else None,
        "mean_steps": float(np.mean([r["steps"] for r in converged])) if converged else None,
        "median_rmsd": float(np.median(rmsds)) if rmsds else None,
        "fraction_matched": sum(bool(r.get("structure_matched")) for r in records) / n if n else None,
    }


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Per structure and property one row, one column per model (``"<model> − <reference>"`` and MAE rows with a
    reference), then one ``"all"`` row per summary quantity (fraction converged, mean steps, median RMSD)."""
    rows = compare_properties(results, PROPERTIES, reference)
    summaries = {model: summary(records) for model, records in results.items()}
    for quantity in ("fraction_converged", "mean_steps", "median_rmsd", "fraction_matched"):
        rows.append({"id": "all", "property": quantity, **{model: s[quantity] for model, s in summaries.items()}})
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Per-property bars (or parity) across models, and a histogram of steps to converge per model."""
    out_dir = Path(out_dir)
    paths = plot_properties(results, ("energy_per_atom", "rmsd", "relaxation_energy_per_atom"), out_dir, "relax")
    return [*paths, plot_steps_histogram(results, out_dir / "relax_steps.png", "relax: steps", "structures")]


def plot_steps_histogram(results: dict[str, list[dict]], path: Path, title: str, counted: str) -> Path:
    """Histogram of the records' ``steps``, one translucent series per model, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(5, 3.6))
    steps = {model: [r["steps"] for r in records if "steps" in r] for model, records in results.items()}
    top = max((max(s) for s in steps.values() if s), default=1)
    bins = np.linspace(0, top + 1, min(30, top + 2))
    for model, values in steps.items():
        axis.hist(values, bins=bins, alpha=0.5, label=model)
    axis.set_xlabel("steps to converge")
    axis.set_ylabel(counted)
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
