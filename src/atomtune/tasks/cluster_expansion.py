"""Cluster expansion: enumerate an alloy's derivative structures, relax them with the calculator, fit ECIs, find the
predicted convex hull and ground states.

Built on icet (Ångqvist et al., Adv. Theory Simul. 2, 1900015 (2019)) because it works on ASE structures directly, has
the structure enumeration, the cluster-space / structure-container machinery, cross-validated fitting (trainstation) and
the Monte Carlo package (mchammer, :mod:`atomtune.tasks.monte_carlo`) in one well-kept library; CLEASE and smol would
also do, but add a database layer (CLEASE) or pymatgen-only structures (smol) between atomtune's ASE objects and the fit.

For each input structure (a primitive cell, e.g. fcc Ni) and the species allowed on its sites (``Settings.species``,
default Ni–Al on every site):

1. **enumerate** every symmetry-distinct decoration of every supercell of 1 … ``max_cell_size`` primitive cells
   (``icet.tools.enumerate_structures``), counted and refused *before* anything runs when there are more than
   ``max_structures``;
2. **relax** them with the calculator (cell and ions; batched FIRE when it is a Potential), each started at the volume
   per atom that Vegard's law gives between the relaxed end members; a structure whose relaxation fails is recorded
   with its error, left out of the fit and counted;
3. **mixing energy** per atom, E/N − [(1 − x) E_A + x E_B] with x the fraction of the second species on the mixing
   sites and E_A, E_B the relaxed end members' energies per atom;
4. **fit** one cluster expansion per candidate cutoff set on the ideal (unrelaxed) decorations and the relaxed mixing
   energies, k-fold cross-validated (trainstation); the cutoffs with the lowest CV RMSE win;
5. **hull**: the convex hull of the calculator's own mixing energies and of the expansion's predictions (on the same
   structures, and with ``predict_max_cell_size`` on a larger enumeration the expansion alone evaluates), and the
   structures on each: the ground states.

Records: one per enumerated structure (``mixing_energy_per_atom`` eV/atom, ``predicted_mixing_energy_per_atom``,
distances to both hulls in meV/atom, ``space_group`` of the ideal decoration, so L1₂ Ni₃Al is ``Ni3Al`` ``Pm-3m``) and one
``expansion`` record per input structure with the ECIs, the CV error, the ground states, the cost of each step and the
expansion itself as plain data (:func:`expansion_from_dict` rebuilds it; icet's own files are pickles, so they are
not used).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import json_ready, structure_label
from atomtune.tasks.comparison import compare_properties, records_by_id, safe_filename

PROPERTIES = ("mixing_energy_per_atom", "predicted_mixing_energy_per_atom", "distance_to_hull_mev_per_atom")
EXPANSION_KIND = "expansion"
FIT_METHODS = ("ardr", "lasso", "least-squares", "bayesian-ridge", "ridge", "rfe", "omp", "split-bregman")


@dataclass
class Settings:
    """``species``: the species that mix, on every site (``["Ni", "Al"]``), or one list per site of the primitive cell
    (a one-species list is an inert sublattice); exactly two species may mix. ``max_cell_size``: largest supercell
    enumerated, in primitive cells (6: 137 fcc binary structures up to 6 atoms). ``max_structures``: refuse an
    enumeration larger than this before relaxing anything. ``cutoff_candidates``: cutoff sets (Å, pairs, triplets, …)
    compared by cross-validation (fcc Ni: the 1st–4th neighbour shells lie at 2.5, 3.5, 4.3, 5.0 Å).
    ``fit_method``: trainstation's (``ardr``: sparse Bayesian, icet's usual choice for small training sets).
    ``cv_splits``: k of the k-fold CV. ``relax``: relax each structure (False: single points at the Vegard volume —
    the cheap setting for a DFT reference); ``relax_cell``; ``fmax`` eV/Å, ``max_steps``, ``optimizer``,
    ``batch_size``: as in the relax task. ``max_shape_strain``: a relaxed cell whose shape (volume change removed) is
    strained by more than this has left the parent lattice (fcc → bcc along the Bain path is 0.19): recorded with its
    energy, left out of the fit and counted — a lattice cluster expansion cannot describe it. ``predict_max_cell_size``: also evaluate the fitted expansion on all structures up to this size (None: off).
    ``max_predicted_structures``: limit of that enumeration. ``seed``: CV folds."""

    species: list = field(default_factory=lambda: ["Ni", "Al"])
    max_cell_size: int = 6
    max_structures: int = 200
    cutoff_candidates: list = field(default_factory=lambda: [[5.0], [6.0], [6.0, 4.5], [7.0, 5.0], [8.0, 5.0, 4.0]])
    fit_method: str = "ardr"
    cv_splits: int = 5
    relax: bool = True
    relax_cell: bool = True
    fmax: float = 0.05
    max_steps: int = 300
    optimizer: str = "FIRE"
    batch_size: int | None = None
    max_shape_strain: float = 0.1
    predict_max_cell_size: int | None = None
    max_predicted_structures: int = 5000
    seed: int = 42

    def check(self) -> None:
        if self.max_cell_size < 1:
            raise AtomtuneError(f"max_cell_size {self.max_cell_size}: enumerate at least 1-cell structures.")
        if not self.cutoff_candidates or any(not c or min(c) <= 0 for c in self.cutoff_candidates):
            raise AtomtuneError("cutoff_candidates: give at least one non-empty list of positive cutoffs (Å).")
        if self.fit_method not in FIT_METHODS:
            raise AtomtuneError(f"fit_method {self.fit_method!r}: use one of {', '.join(FIT_METHODS)}.")
        if self.cv_splits < 2:
            raise AtomtuneError("cv_splits must be at least 2.")
        if self.predict_max_cell_size is not None and self.predict_max_cell_size < self.max_cell_size:
            raise AtomtuneError("predict_max_cell_size must be at least max_cell_size (or None).")


@dataclass
class ExpansionRecord:
    """The fitted expansion of one input structure, with everything needed to judge and rebuild it.

    Energies in eV/atom, errors in meV/atom, times in seconds. ``expansion``: plain data for
    :func:`expansion_from_dict` (primitive cell, species per site, cutoffs Å, icet's parameters in eV/atom per orbit).
    ``ecis``: per orbit its order, radius (Å), multiplicity, parameter and ECI (parameter / multiplicity), eV/atom. ``candidates``: CV RMSE of every cutoff set tried. ``ground_states`` / ``reference_ground_states``:
    the vertices of the expansion's / the calculator's hull (id, formula, space group, x, mixing energy);
    ``hull_matches_reference``: both hulls have their vertices at the same concentrations;
    ``hull_energy_rmse_mev_per_atom``: RMS difference of the two hulls over the enumerated concentrations."""

    id: str
    kind: str
    calculator: str
    species: list
    mixing_species: list
    cutoffs: list
    fit_method: str
    cv_rmse_mev_per_atom: float
    train_rmse_mev_per_atom: float
    n_parameters: int
    n_nonzero_parameters: int
    candidates: list
    n_enumerated: int
    n_fitted: int
    n_failed: int
    ground_states: list
    reference_ground_states: list
    hull_matches_reference: bool
    hull_energy_rmse_mev_per_atom: float
    predicted_ground_states_larger_cells: list | None
    enumerate_seconds: float
    relax_seconds: float
    fit_seconds: float
    ecis: list
    expansion: dict


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """Records for each input primitive cell: one per enumerated structure and one ``expansion`` record (see the module
    docstring). ``calculator``: a Potential (batched relaxation) or any ASE calculator."""
    from atomtune.tasks import error_message

    settings = settings or Settings()
    settings.check()
    # Bad input (species, an enumeration over the limit) is refused for every input before anything is relaxed; a
    # failure while computing one input (an end member that does not converge) becomes its error record.
    prepared = [_prepare(primitive, structure_label(primitive, index), calculator, settings)
                for index, primitive in enumerate(structures)]
    records: list[dict] = []
    for preparation in prepared:
        try:
            records.extend(_expand(preparation, calculator, settings, progress))
        except Exception as error:  # one input's failure is recorded; the others go on
            records.append({"id": f"{preparation.label}/{EXPANSION_KIND}", "kind": EXPANSION_KIND,
                            "formula": preparation.primitive.get_chemical_formula(), "error": error_message(error)})
    return records


@dataclass
class _Preparation:
    """One input primitive cell, checked and enumerated (cheap), before any energy is computed."""

    label: str
    primitive: Atoms
    per_site: list
    mixing: list
    decorations: list
    enumerate_seconds: float


def _prepare(primitive: Atoms, label: str, calculator, settings: Settings) -> _Preparation:
    from ase.data import chemical_symbols as known_symbols

    per_site = site_species(primitive, settings.species)
    unknown = sorted({s for site in per_site for s in site} - set(known_symbols[1:]))
    if unknown:
        raise AtomtuneError(f"species {', '.join(unknown)} are not chemical symbols.")
    mixing = _mixing_species(per_site)
    _check_species_supported(calculator, [s for site in per_site for s in site], label)
    primitive = primitive.copy()
    primitive.calc = None
    started = time.perf_counter()
    decorations = enumerate_decorations(primitive, per_site, settings.max_cell_size, settings.max_structures)
    for k, atoms in enumerate(decorations):
        atoms.info["id"] = f"{label}/{atoms.get_chemical_formula()}-{k}"
    return _Preparation(label, primitive, per_site, mixing, decorations, time.perf_counter() - started)


def site_species(primitive: Atoms, species: list) -> list[list[str]]:
    """Species allowed on each site of ``primitive``: one list for all sites, or one per site."""
    if species and all(isinstance(s, str) for s in species):
        return [sorted(species)] * len(primitive)
    if len(species) != len(primitive) or not all(isinstance(s, (list, tuple)) and s for s in species):
        raise AtomtuneError(
            f"species {species!r}: give one list for every site (['Ni', 'Al']) or one non-empty list per site of the "
            f"{len(primitive)}-site primitive cell."
        )
    return [sorted(s) for s in species]


def _mixing_species(per_site: list[list[str]]) -> list[str]:
    active = {tuple(s) for s in per_site if len(s) > 1}
    if len(active) != 1 or len(next(iter(active))) != 2:
        raise AtomtuneError(
            f"species per site {per_site}: exactly two species must mix, on one kind of site (binary expansions only)."
        )
    return list(next(iter(active)))


def calculator_name(calculator) -> str:
    """How a record names the calculator that made it (a Potential's name, else the calculator's class)."""
    from atomtune.models.base import Potential

    if isinstance(calculator, Potential):
        return calculator.name
    return type(calculator).__name__


def _check_species_supported(calculator, species: Sequence[str], label: str) -> None:
    from atomtune.models.base import Potential

    if isinstance(calculator, Potential):
        missing = sorted(set(species) - set(calculator.supported_elements))
        if missing:
            raise AtomtuneError(
                f"{label}: the cluster space has {', '.join(missing)}, which {calculator.name} does not support; "
                f"choose species the model knows or another model (`atomtune models`)."
            )


def enumerate_decorations(primitive: Atoms, per_site: list[list[str]], max_cell_size: int, limit: int) -> list[Atoms]:
    """Every symmetry-distinct decoration up to ``max_cell_size`` primitive cells; raise before returning more than
    ``limit`` (the enumeration itself is cheap, the relaxations are not)."""
    from icet.tools import enumerate_structures

    found = []
    for atoms in enumerate_structures(primitive, range(1, max_cell_size + 1), per_site):
        found.append(atoms)
        if len(found) > limit:
            raise AtomtuneError(
                f"enumerating up to {max_cell_size} primitive cells gives more than {limit} structures (the limit "
                f"max_structures); nothing was relaxed. Lower max_cell_size or raise max_structures."
            )
    return found


def _expand(preparation: _Preparation, calculator, settings: Settings, progress: bool) -> list[dict]:
    label, primitive, per_site, mixing = preparation.label, preparation.primitive, preparation.per_site, preparation.mixing
    decorations, enumerate_seconds = preparation.decorations, preparation.enumerate_seconds
    concentrations = np.array([_concentration(atoms, mixing, per_site) for atoms in decorations])

    started = time.perf_counter()
    energies, errors, steps = _energies(decorations, concentrations, calculator, settings, progress)
    relax_seconds = time.perf_counter() - started
    ends = [int(np.flatnonzero(concentrations == x)[0]) for x in (0.0, 1.0)]
    if any(not np.isfinite(energies[i]) for i in ends):
        failed = "; ".join(errors[i] or "no energy" for i in ends if not np.isfinite(energies[i]))
        raise AtomtuneError(f"{label}: an end member ({' / '.join(mixing)}) could not be computed ({failed}); "
                            f"no mixing energies without both.")
    end_energies = energies[ends[0]], energies[ends[1]]
    mixing_energies = energies - ((1 - concentrations) * end_energies[0] + concentrations * end_energies[1])
    fitted = np.isfinite(mixing_energies) & np.array([error is None for error in errors])

    started = time.perf_counter()
    fit = _fit(primitive, per_site, [d for d, ok in zip(decorations, fitted) if ok], mixing_energies[fitted], settings)
    fit_seconds = time.perf_counter() - started
    expansion = fit["expansion"]
    predicted = np.array([expansion.predict(atoms) for atoms in decorations])

    reference_hull = _hull(concentrations[fitted], mixing_energies[fitted])
    predicted_hull = _hull(concentrations, predicted)
    reference_distance = np.full(len(decorations), np.nan)
    reference_distance[fitted] = mixing_energies[fitted] - reference_hull.get_energy_at_convex_hull(concentrations[fitted])
    predicted_distance = predicted - predicted_hull.get_energy_at_convex_hull(concentrations)
    reference_vertices = set(np.flatnonzero(fitted)[reference_hull.structures].tolist())
    predicted_vertices = set(predicted_hull.structures)
    grid = np.unique(concentrations[fitted])
    hull_difference = predicted_hull.get_energy_at_convex_hull(grid) - reference_hull.get_energy_at_convex_hull(grid)
    name = calculator_name(calculator)
    records = []
    for k, atoms in enumerate(decorations):
        record = {
            "id": atoms.info["id"],
            "kind": "structure",
            "parent": label,
            "formula": atoms.get_chemical_formula(),
            "n_atoms": len(atoms),
            "concentration": float(concentrations[k]),
            "space_group": _space_group(atoms),
            "energy_per_atom": float(energies[k]) if np.isfinite(energies[k]) else None,
            "mixing_energy_per_atom": float(mixing_energies[k]) if np.isfinite(mixing_energies[k]) else None,
            "shape_strain": atoms.info.get("shape_strain"),
            "predicted_mixing_energy_per_atom": float(predicted[k]),
            "distance_to_hull_mev_per_atom": float(reference_distance[k] * 1000) if fitted[k] else None,
            "predicted_distance_to_hull_mev_per_atom": float(predicted_distance[k] * 1000),
            "on_hull": k in reference_vertices,
            "on_predicted_hull": k in predicted_vertices,
            "relaxation_steps": steps[k],
            "in_fit": bool(fitted[k]),
        }
        if errors[k]:
            record["error"] = errors[k]
        records.append(json_ready(record))

    def ground(rows: list[dict], key: str, flag: str) -> list[dict]:
        return [{"id": r["id"], "formula": r["formula"], "space_group": r["space_group"],
                 "concentration": r["concentration"], "mixing_energy_per_atom": r[key]} for r in rows if r[flag]]

    ground_states = ground(records, "predicted_mixing_energy_per_atom", "on_predicted_hull")
    reference_ground_states = ground(records, "mixing_energy_per_atom", "on_hull")
    larger = None
    if settings.predict_max_cell_size:
        larger = _larger_cell_ground_states(primitive, per_site, mixing, expansion, settings, label)
    summary = ExpansionRecord(
        id=f"{label}/{EXPANSION_KIND}",
        kind=EXPANSION_KIND,
        calculator=name,
        species=per_site,
        mixing_species=mixing,
        cutoffs=fit["cutoffs"],
        fit_method=settings.fit_method,
        cv_rmse_mev_per_atom=fit["cv_rmse"] * 1000,
        train_rmse_mev_per_atom=fit["train_rmse"] * 1000,
        n_parameters=len(fit["parameters"]),
        n_nonzero_parameters=int(np.count_nonzero(np.abs(fit["parameters"]) > 1e-12)),
        candidates=fit["candidates"],
        n_enumerated=len(decorations),
        n_fitted=int(fitted.sum()),
        n_failed=int((~fitted).sum()),
        ground_states=ground_states,
        reference_ground_states=reference_ground_states,
        hull_matches_reference=(
            {round(g["concentration"], 9) for g in ground_states}
            == {round(g["concentration"], 9) for g in reference_ground_states}
        ),
        hull_energy_rmse_mev_per_atom=float(np.sqrt(np.mean(hull_difference**2))) * 1000,
        predicted_ground_states_larger_cells=larger,
        enumerate_seconds=enumerate_seconds,
        relax_seconds=relax_seconds,
        fit_seconds=fit_seconds,
        ecis=fit["ecis"],
        expansion=expansion_to_dict(expansion, primitive, per_site, name),
    )
    return records + [json_ready(asdict(summary))]


def _concentration(atoms: Atoms, mixing: list[str], per_site: list[list[str]]) -> float:
    """Fraction of the second mixing species on the mixing sites."""
    symbols = atoms.get_chemical_symbols()
    n_mixing = sum(symbols.count(s) for s in mixing)
    return symbols.count(mixing[1]) / n_mixing


def _space_group(atoms: Atoms) -> str:
    import spglib

    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=1e-3)
    return dataset.international if dataset is not None else "P1"


def _energies(decorations, concentrations, calculator, settings: Settings, progress: bool):
    """Energy per atom (eV) of every decoration (relaxed or single point at the Vegard volume), errors, steps."""
    from atomtune.tasks import as_calculator, error_message
    from atomtune.tasks.relax import relax_structures

    n = len(decorations)
    energies = np.full(n, np.nan)
    errors: list[str | None] = [None] * n
    steps: list[int | None] = [None] * n
    ends = [i for i, x in enumerate(concentrations) if x in (0.0, 1.0)]

    def compute(indices: list[int], volumes: dict[float, float] | None) -> None:
        batch = []
        for i in indices:
            atoms = decorations[i].copy()
            if volumes is not None:
                x = concentrations[i]
                target = (1 - x) * volumes[0.0] + x * volumes[1.0]
                atoms.set_cell(atoms.cell[:] * (target * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
            batch.append(atoms)
        if settings.relax:
            relaxations = relax_structures(
                batch, calculator, fmax=settings.fmax, max_steps=settings.max_steps, relax_cell=settings.relax_cell,
                optimizer=settings.optimizer, batch_size=settings.batch_size, progress=progress,
            )
            for i, atoms, relaxation in zip(indices, batch, relaxations):
                steps[i] = relaxation.steps
                if relaxation.usable and relaxation.error is None:
                    energies[i] = relaxation.energy / len(atoms)
                    decorations[i].info["volume_per_atom"] = relaxation.atoms.get_volume() / len(atoms)
                    strain = shape_strain(atoms.cell[:], relaxation.atoms.cell[:])
                    decorations[i].info["shape_strain"] = strain
                    if strain > settings.max_shape_strain:
                        errors[i] = (
                            f"relaxed away from the parent lattice (cell shape strain {strain:.3f} > max_shape_strain "
                            f"{settings.max_shape_strain}); energy kept, left out of the fit"
                        )
                else:
                    errors[i] = relaxation.error or "relaxation gave no usable structure"
            return
        ase_calculator = as_calculator(calculator)
        for i, atoms in zip(indices, batch):
            try:
                atoms.calc = ase_calculator
                energies[i] = atoms.get_potential_energy() / len(atoms)
                decorations[i].info["volume_per_atom"] = atoms.get_volume() / len(atoms)
            except Exception as error:  # one failed single point is recorded, the others go on
                errors[i] = error_message(error)

    compute(ends, None)
    volumes = {}
    for i in ends:
        volume = decorations[i].info.get("volume_per_atom")
        volumes[concentrations[i]] = volume if volume is not None else decorations[i].get_volume() / len(decorations[i])
    compute([i for i in range(n) if i not in ends], volumes)
    return energies, errors, steps


def shape_strain(initial_cell, final_cell) -> float:
    """Largest principal Green–Lagrange strain of the cell change with the volume change divided out (dimensionless)."""
    deformation = np.linalg.solve(np.asarray(initial_cell, dtype=float), np.asarray(final_cell, dtype=float))
    deformation /= np.cbrt(np.linalg.det(deformation))
    strain = 0.5 * (deformation @ deformation.T - np.eye(3))
    return float(np.abs(np.linalg.eigvalsh(strain)).max())


def _fit(primitive: Atoms, per_site, decorations, mixing_energies, settings: Settings) -> dict:
    """Cross-validate every cutoff candidate; train the best on all fitted structures."""
    from icet import ClusterExpansion, ClusterSpace
    from trainstation import CrossValidationEstimator

    if len(decorations) < settings.cv_splits:
        raise AtomtuneError(
            f"only {len(decorations)} structures have energies; {settings.cv_splits}-fold cross-validation needs at "
            f"least as many (raise max_cell_size or lower cv_splits)."
        )
    candidates, best = [], None
    for cutoffs in settings.cutoff_candidates:
        cutoffs = [float(c) for c in cutoffs]
        space = ClusterSpace(primitive, cutoffs, per_site)
        matrix = np.array([space.get_cluster_vector(atoms) for atoms in decorations])
        try:
            estimator = CrossValidationEstimator(
                (matrix, mixing_energies), fit_method=settings.fit_method, n_splits=settings.cv_splits,
                seed=settings.seed, check_condition=False,
            )
            estimator.validate()
        except Exception as error:  # a fit that cannot be done (too few structures for many parameters) is recorded
            candidates.append({"cutoffs": cutoffs, "n_parameters": len(space), "error": f"{type(error).__name__}: {error}"})
            continue
        cv_rmse = float(estimator.rmse_validation)
        candidates.append({"cutoffs": cutoffs, "n_parameters": len(space), "cv_rmse_mev_per_atom": cv_rmse * 1000})
        if best is None or cv_rmse < best[0]:
            best = (cv_rmse, cutoffs, space, matrix, estimator)
    if best is None:
        raise AtomtuneError(f"no cutoff candidate could be fitted: {candidates}")
    cv_rmse, cutoffs, space, matrix, estimator = best
    estimator.train()
    parameters = np.asarray(estimator.parameters, dtype=float)
    expansion = ClusterExpansion(space, parameters)
    train_rmse = float(np.sqrt(np.mean((matrix @ parameters - mixing_energies) ** 2)))
    orbits = space.as_list
    # icet's parameters multiply the orbit-averaged cluster functions, so they include the orbit's multiplicity; the
    # ECI in the textbook sense is the parameter divided by it.
    ecis = [
        {"index": k, "order": int(orbit["order"]), "radius": float(orbit["radius"]),
         "multiplicity": int(orbit["multiplicity"]), "parameter": float(value),
         "eci": float(value) / max(1, int(orbit["multiplicity"]))}
        for k, (orbit, value) in enumerate(zip(orbits, parameters))
    ]
    return {"expansion": expansion, "cutoffs": cutoffs, "cv_rmse": cv_rmse, "train_rmse": train_rmse,
            "parameters": parameters, "candidates": candidates, "ecis": ecis}


def _hull(concentrations: np.ndarray, energies: np.ndarray):
    from icet.tools import ConvexHull

    return ConvexHull(np.asarray(concentrations, dtype=float), np.asarray(energies, dtype=float))


def _larger_cell_ground_states(primitive, per_site, mixing, expansion, settings: Settings, label: str) -> list[dict]:
    """Ground states of the expansion alone on every structure up to ``predict_max_cell_size`` primitive cells."""
    decorations = enumerate_decorations(
        primitive, per_site, settings.predict_max_cell_size, settings.max_predicted_structures
    )
    concentrations = np.array([_concentration(atoms, mixing, per_site) for atoms in decorations])
    predicted = np.array([expansion.predict(atoms) for atoms in decorations])
    hull = _hull(concentrations, predicted)
    return [
        {"formula": decorations[k].get_chemical_formula(), "n_atoms": len(decorations[k]),
         "space_group": _space_group(decorations[k]), "concentration": float(concentrations[k]),
         "mixing_energy_per_atom": float(predicted[k])}
        for k in hull.structures
    ]


# -- the expansion as plain data ------------------------------------------------------------------------------------
def expansion_to_dict(expansion, primitive: Atoms, per_site: list[list[str]], calculator: str) -> dict:
    """An icet ClusterExpansion as JSON-ready data (no pickle): the primitive cell and species per site it was built
    from, its cutoffs and ECIs, and the calculator whose energies it was fitted to."""
    space = expansion.get_cluster_space_copy()
    return {
        "calculator": calculator,
        "cell": np.asarray(primitive.cell[:]).tolist(),
        "positions": np.asarray(primitive.positions).tolist(),
        "numbers": [int(z) for z in primitive.numbers],
        "pbc": [bool(p) for p in primitive.pbc],
        "chemical_symbols": [list(s) for s in per_site],
        "cutoffs": [float(c) for c in space.cutoffs],
        "parameters": [float(p) for p in expansion.parameters],
        "units": "parameters in eV/atom (mixing energy per atom)",
    }


def expansion_from_dict(data: dict):
    """Rebuild the icet ClusterExpansion written by :func:`expansion_to_dict`."""
    from icet import ClusterExpansion, ClusterSpace

    primitive = Atoms(numbers=data["numbers"], positions=data["positions"], cell=data["cell"], pbc=data["pbc"])
    space = ClusterSpace(primitive, data["cutoffs"], data["chemical_symbols"])
    if len(space) != len(data["parameters"]):
        raise AtomtuneError(
            f"the stored expansion has {len(data['parameters'])} parameters but its cluster space has {len(space)} "
            f"(another icet version?); fit it again."
        )
    return ClusterExpansion(space, np.asarray(data["parameters"], dtype=float))


def expansion_records(records: Sequence[dict]) -> list[dict]:
    """The ``expansion`` records among a task's records (an input that failed has one with ``error`` and no
    ``expansion``)."""
    return [record for record in records if record.get("kind") == EXPANSION_KIND]


# -- comparison and plots ---------------------------------------------------------------------------------------------
def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Per structure: mixing energy, the expansion's prediction and the distance to the hull, one column per model
    (differences and MAE against ``reference``); then per expansion: CV error, ground-state count, hull agreement."""
    structure_results = {m: [r for r in rs if r.get("kind") != EXPANSION_KIND] for m, rs in results.items()}
    rows = compare_properties(structure_results, PROPERTIES, reference)
    for parent in dict.fromkeys(r["id"] for rs in results.values() for r in expansion_records(rs)):
        for key, label in (("cv_rmse_mev_per_atom", "CV RMSE (meV/atom)"), ("n_fitted", "structures fitted"),
                           ("n_failed", "structures failed"), ("relax_seconds", "relaxation time (s)")):
            row = {"id": parent, "property": label}
            for model, records in results.items():
                record = records_by_id(records).get(parent, {})
                row[model] = record.get(key)
            rows.append(row)
        row = {"id": parent, "property": "ground states"}
        for model, records in results.items():
            record = records_by_id(records).get(parent, {})
            row[model] = ", ".join(f"{g['formula']} {g['space_group']}" for g in record.get("ground_states", [])) or None
        rows.append(row)
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Per input structure: the convex hull of each model (its own energies as points, the expansion's hull as a
    line), and the ECIs against cluster radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    parents = list(dict.fromkeys(
        r["id"] for rs in results.values() for r in expansion_records(rs) if "ground_states" in r
    ))
    for parent in parents:
        label = parent.rsplit("/", 1)[0]
        figure, (hull_axis, eci_axis) = plt.subplots(1, 2, figsize=(10, 4))
        for model, records in results.items():
            summary = records_by_id(records).get(parent)
            if summary is None or "ground_states" not in summary:  # missing, or an error record
                continue
            rows = [r for r in records if r.get("parent") == label and r.get("kind") == "structure"]
            x = np.array([r["concentration"] for r in rows])
            own = np.array([np.nan if r["mixing_energy_per_atom"] is None else r["mixing_energy_per_atom"] for r in rows])
            (points,) = hull_axis.plot(x, own * 1000, "o", ms=3, alpha=0.5, label=f"{model}: computed")
            ground = sorted(summary["ground_states"], key=lambda g: g["concentration"])
            hull_axis.plot([g["concentration"] for g in ground], [g["mixing_energy_per_atom"] * 1000 for g in ground],
                           "-", color=points.get_color(), label=f"{model}: expansion hull")
            ecis = [e for e in summary["ecis"] if e["order"] >= 2]
            eci_axis.plot([e["radius"] for e in ecis], [e["eci"] * 1000 for e in ecis], "o", label=model)
        species = "–".join(next(iter(expansion_records(next(iter(results.values())))), {}).get("mixing_species", []))
        hull_axis.set_xlabel(f"x({species.split('–')[-1]}) on the mixing sites")
        hull_axis.set_ylabel("mixing energy (meV/atom)")
        hull_axis.axhline(0, color="gray", lw=0.6)
        hull_axis.legend(fontsize="x-small")
        eci_axis.axhline(0, color="gray", lw=0.6)
        eci_axis.set_xlabel("cluster radius (Å)")
        eci_axis.set_ylabel("ECI (meV/atom)")
        eci_axis.legend(fontsize="x-small")
        figure.suptitle(f"cluster expansion: {label}")
        figure.tight_layout()
        path = out_dir / f"cluster_expansion_{safe_filename(label)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
