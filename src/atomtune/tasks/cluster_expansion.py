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
2. **relax** them with the calculator (``relax``: ``True`` — cell and ions, batched FIRE when it is a Potential;
   ``"volume"`` — an isotropic E(V) scan of single points fitted with ASE's equation of state, positions and cell shape
   kept, which costs a few single points and so runs for a DFT reference too; ``"pressure"`` — one single point with
   its stress, the volume change to zero pressure in the harmonic approximation; ``False`` — one single point), each
   started at the volume per atom that Vegard's law gives between the end members; a structure whose relaxation fails
   is recorded with its error, left out of the fit and counted. Single points can be cached (``cache_dir``), one file
   per structure and calculator, so a killed DFT run resumes;
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
RELAX_MODES = (True, False, "volume", "pressure")
EOS_TYPES = ("birchmurnaghan", "murnaghan", "vinet", "sj", "taylor", "birch", "pouriertarantola", "antonschmidt")


@dataclass
class Settings:
    """``species``: the species that mix, on every site (``["Ni", "Al"]``), or one list per site of the primitive cell
    (a one-species list is an inert sublattice); exactly two species may mix. ``max_cell_size``: largest supercell
    enumerated, in primitive cells (6: 137 fcc binary structures up to 6 atoms). ``max_structures``: refuse an
    enumeration larger than this before relaxing anything. ``cutoff_candidates``: cutoff sets (Å, pairs, triplets, …)
    compared by cross-validation (fcc Ni: the 1st–4th neighbour shells lie at 2.5, 3.5, 4.3, 5.0 Å).
    ``fit_method``: trainstation's (``ardr``: sparse Bayesian, icet's usual choice for small training sets).
    ``cv_splits``: k of the k-fold CV. ``relax``: relax each structure (False: single points at the Vegard volume —
    the cheapest setting for a DFT reference; ``"volume"`` and ``"pressure"``: volume only, see below);
    ``relax_cell``; ``fmax`` eV/Å, ``max_steps``, ``optimizer``,
    ``batch_size``: as in the relax task. ``max_shape_strain``: a relaxed cell whose shape (volume change removed) is
    strained by more than this has left the parent lattice (fcc → bcc along the Bain path is 0.19): recorded with its
    energy, left out of the fit and counted — a lattice cluster expansion cannot describe it. ``predict_max_cell_size``: also evaluate the fitted expansion on all structures up to this size (None: off).
    ``max_predicted_structures``: limit of that enumeration. ``seed``: CV folds.

    ``relax: "volume"``: each structure is scaled isotropically to ``eos_points`` volumes spread evenly over ±
    ``eos_volume_range`` (a fraction) around its start volume — the Vegard volume between the end members, whose own
    scans start at the volume per atom of the element's ASE reference state (``ase.build.bulk``) — and
    ``ase.eos.EquationOfState`` (``eos_type``) gives the minimum energy and volume. A minimum outside the scanned range
    is scanned again around the edge nearest to it, at most ``eos_max_rescans`` times, then the structure is recorded
    as failed.

    ``relax: "pressure"``: the end members are scanned as with ``"volume"``; every other structure costs one single
    point with stress at its Vegard volume V, and its zero-pressure energy and volume are taken to second order,
    E₀ = E − P²V / 2B and V₀ = V (1 + P/B), with P its pressure and B the end members' bulk moduli interpolated
    linearly in x (the one-point volume relaxation a DFT reference can afford; anharmonicity and the bulk modulus'
    change with composition are left out). P is the single point's pressure less the end members' pressures at their
    own E(V) minima interpolated linearly in x (one more single point with stress per end member): the Pulay-stress
    correction of a calculator whose stress is not the derivative of its energy (a plane-wave code at a finite cutoff
    — GPAW at 450 eV reads −1 to −5 GPa at its own minima); ~0 for a model whose stress is the derivative of its
    energy (EMT, an MLIP's autograd stress), to the E(V) fit's error.

    ``cache_dir``: a folder for the single points (``relax`` False, ``"volume"`` or ``"pressure"``): one JSON file per
    structure and calculator, written atomically, so a killed run loses only the structure in flight."""

    species: list = field(default_factory=lambda: ["Ni", "Al"])
    max_cell_size: int = 6
    max_structures: int = 200
    cutoff_candidates: list = field(default_factory=lambda: [[5.0], [6.0], [6.0, 4.5], [7.0, 5.0], [8.0, 5.0, 4.0]])
    fit_method: str = "ardr"
    cv_splits: int = 5
    relax: bool | str = True
    relax_cell: bool = True
    fmax: float = 0.05
    max_steps: int = 300
    optimizer: str = "FIRE"
    batch_size: int | None = None
    max_shape_strain: float = 0.1
    predict_max_cell_size: int | None = None
    max_predicted_structures: int = 5000
    seed: int = 42
    eos_points: int = 5
    eos_volume_range: float = 0.1
    eos_type: str = "birchmurnaghan"
    eos_max_rescans: int = 2
    cache_dir: str | None = None

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
        if not any(self.relax is mode or self.relax == mode and isinstance(mode, str) for mode in RELAX_MODES):
            raise AtomtuneError(
                f"relax {self.relax!r}: use true (cell and ions), \"volume\" (isotropic E(V) scan of single points), "
                f"\"pressure\" (one single point with stress, corrected to zero pressure) or false (one single point "
                f"at the Vegard volume)."
            )
        if self.relax in ("volume", "pressure"):
            if self.eos_points < 5:
                raise AtomtuneError(
                    f"eos_points {self.eos_points}: an equation-of-state fit needs at least 5 volumes (4 parameters)."
                )
            if not 0 < self.eos_volume_range < 0.5:
                raise AtomtuneError(
                    f"eos_volume_range {self.eos_volume_range}: give the half-width of the volume scan as a fraction "
                    f"between 0 and 0.5 (0.1 scans ±10 %)."
                )
            if self.eos_type not in EOS_TYPES:
                raise AtomtuneError(f"eos_type {self.eos_type!r}: use one of {', '.join(EOS_TYPES)} (ase.eos).")
            if self.eos_max_rescans < 0:
                raise AtomtuneError("eos_max_rescans must be 0 or more.")


@dataclass
class ExpansionRecord:
    """The fitted expansion of one input structure, with everything needed to judge and rebuild it.

    Energies in eV/atom, errors in meV/atom, times in seconds. ``expansion``: plain data for
    :func:`expansion_from_dict` (primitive cell, species per site, cutoffs Å, icet's parameters in eV/atom per orbit).
    ``ecis``: per orbit its order, radius (Å), multiplicity, parameter and ECI (parameter / multiplicity), eV/atom. ``candidates``: CV RMSE of every cutoff set tried. ``ground_states`` / ``reference_ground_states``:
    the vertices of the expansion's / the calculator's hull (id, formula, space group, x, mixing energy);
    ``hull_matches_reference``: both hulls have their vertices at the same concentrations;
    ``hull_energy_rmse_mev_per_atom``: RMS difference of the two hulls over the enumerated concentrations.
    ``pressure_offsets_gpa``: with ``relax: "pressure"``, each end member's pressure at its own E(V) minimum (the
    Pulay-stress offset subtracted from every structure's pressure, interpolated in x); None otherwise."""

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
    pressure_offsets_gpa: dict | None = None


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
            "volume_per_atom": atoms.info.get("volume_per_atom"),
            "equation_of_state": atoms.info.get("equation_of_state"),
            "single_points": atoms.info.get("single_points"),
            "single_point_cpu_seconds": atoms.info.get("single_point_cpu_seconds"),
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
        pressure_offsets_gpa=_pressure_offsets(decorations, ends, mixing),
    )
    return records + [json_ready(asdict(summary))]


def _pressure_offsets(decorations, ends: list[int], mixing: list[str]) -> dict | None:
    """End member → its pressure (GPa) at its E(V) minimum, the offset ``relax: "pressure"`` subtracts; None otherwise."""
    states = [decorations[i].info.get("equation_of_state") or {} for i in ends]
    if not all("pressure_at_minimum_gpa" in state for state in states):
        return None
    return {symbol: state["pressure_at_minimum_gpa"] for symbol, state in zip(mixing, states)}


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
    """Energy per atom (eV) of every decoration (relaxed, volume-relaxed or single point at the Vegard volume), errors,
    steps. Per-structure extras (volume, cell-shape strain, the E(V) scan, single-point cost) go into its ``info``."""
    from atomtune.tasks import error_message
    from atomtune.tasks.relax import relax_structures

    n = len(decorations)
    energies = np.full(n, np.nan)
    errors: list[str | None] = [None] * n
    steps: list[int | None] = [None] * n
    ends = [i for i, x in enumerate(concentrations) if x in (0.0, 1.0)]
    single_points = None if settings.relax is True else SinglePoints(calculator, settings.cache_dir)
    moduli: dict[float, float] = {}  # end members' bulk moduli (GPa) from their E(V) scans, for relax "pressure"
    offsets: dict[float, float] = {}  # end members' pressures (GPa) at their E(V) minima, for relax "pressure"

    def compute(indices: list[int], volumes: dict[float, float] | None) -> None:
        batch = []
        for i in indices:
            atoms = decorations[i].copy()
            if volumes is not None:
                x = concentrations[i]
                target = (1 - x) * volumes[0.0] + x * volumes[1.0]
                atoms = scaled_to_volume(atoms, target)
            elif settings.relax in ("volume", "pressure"):
                # An end member's scan starts at its element's own volume (Al's is 50 % above Ni's, far outside a
                # ±10 % scan around the parent cell's volume).
                target = _element_volume_per_atom(atoms)
                if target is not None:
                    atoms = scaled_to_volume(atoms, target)
            batch.append(atoms)
        if settings.relax is True:
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
        for i, atoms in zip(indices, batch):
            before = single_points.cost()
            try:
                if settings.relax == "volume" or settings.relax == "pressure" and volumes is None:
                    scan = volume_scan(atoms, single_points, settings.eos_points, settings.eos_volume_range,
                                       settings.eos_type, settings.eos_max_rescans)
                    energies[i] = scan.pop("energy_per_atom")
                    decorations[i].info["volume_per_atom"] = scan.pop("volume_per_atom")
                    if settings.relax == "pressure":
                        scan["pressure_at_minimum_gpa"] = pressure_at_volume(
                            atoms, single_points, decorations[i].info["volume_per_atom"])
                        offsets[concentrations[i]] = scan["pressure_at_minimum_gpa"]
                    decorations[i].info["equation_of_state"] = scan
                    moduli[concentrations[i]] = scan["bulk_modulus_gpa"]
                elif settings.relax == "pressure":
                    x = concentrations[i]
                    bulk_modulus_gpa = (1 - x) * moduli[0.0] + x * moduli[1.0]
                    corrected = pressure_corrected(atoms, single_points, bulk_modulus_gpa,
                                                   (1 - x) * offsets[0.0] + x * offsets[1.0])
                    energies[i] = corrected.pop("energy_per_atom")
                    decorations[i].info["volume_per_atom"] = corrected.pop("volume_per_atom")
                    decorations[i].info["equation_of_state"] = corrected
                else:
                    energies[i] = single_points(atoms) / len(atoms)
                    decorations[i].info["volume_per_atom"] = atoms.get_volume() / len(atoms)
            except Exception as error:  # one failed single point or E(V) fit is recorded, the others go on
                errors[i] = error_message(error)
            after = single_points.cost()
            decorations[i].info["single_points"] = after["n"] - before["n"]
            decorations[i].info["single_point_cpu_seconds"] = after["cpu_seconds"] - before["cpu_seconds"]

    compute(ends, None)
    volumes = {}
    for i in ends:
        volume = decorations[i].info.get("volume_per_atom")
        volumes[concentrations[i]] = volume if volume is not None else decorations[i].get_volume() / len(decorations[i])
    compute([i for i in range(n) if i not in ends], volumes)
    return energies, errors, steps


def _element_volume_per_atom(atoms: Atoms) -> float | None:
    """Volume per atom (Å³) of the element's reference state in ASE (``ase.build.bulk``), for a one-element cell; None
    for a cell with an inert sublattice or an element ASE has no crystal for."""
    from ase.build import bulk

    symbols = set(atoms.get_chemical_symbols())
    if len(symbols) != 1:
        return None
    try:
        reference = bulk(symbols.pop())
    except (ValueError, KeyError, TypeError):
        return None
    return reference.get_volume() / len(reference)


def scaled_to_volume(atoms: Atoms, volume_per_atom: float) -> Atoms:
    """A copy of ``atoms`` scaled isotropically to ``volume_per_atom`` (Å³): fractional positions and cell shape kept."""
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell[:] * (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    return scaled


def _pressure(stress) -> float:
    """Pressure (eV/Å³, compression > 0) from an ASE Voigt stress (xx, yy, zz, …; ASE's tensile stress > 0)."""
    return -float(np.mean(np.asarray(stress, dtype=float)[:3]))


def volume_scan(atoms: Atoms, energy, points: int = 5, volume_range: float = 0.1, eos_type: str = "birchmurnaghan",
                max_rescans: int = 2) -> dict:
    """Volume-only relaxation: ``atoms`` scaled isotropically (fractional positions and cell shape kept) to ``points``
    volumes evenly over ``(1 ± volume_range)`` × its volume, ``energy(atoms) -> eV`` at each, and the minimum of
    ``ase.eos.EquationOfState`` (``eos_type``) fitted through them. A minimum outside the scanned volumes is scanned
    again around it (the centre moves at most ``2 × volume_range``), up to ``max_rescans`` times; then
    :class:`AtomtuneError`.

    Returns ``energy_per_atom`` (eV, the fit's minimum), ``volume_per_atom`` (Å³), ``bulk_modulus_gpa``, the scanned
    ``volumes_per_atom`` / ``energies_per_atom`` of the last window and the number of ``scans``."""
    from ase.eos import EquationOfState
    from ase.units import GPa

    n, start_volume = len(atoms), atoms.get_volume()
    computed: dict[float, float] = {}

    def energy_at(volume: float) -> float:
        key = round(volume, 6)
        if key not in computed:
            computed[key] = float(energy(scaled_to_volume(atoms, volume / n)))
        return computed[key]

    centre = start_volume
    for scan in range(max_rescans + 1):
        volumes = centre * np.linspace(1 - volume_range, 1 + volume_range, points)
        energies = np.array([energy_at(v) for v in volumes])
        try:
            v0, e0, bulk_modulus = EquationOfState(volumes, energies, eos=eos_type).fit(warn=False)
        except Exception:  # ASE's fit raises (or gives nan) for a curve without a minimum
            v0, e0, bulk_modulus = np.nan, np.nan, np.nan
        if np.isfinite(v0) and volumes[0] <= v0 <= volumes[-1] and np.isfinite(e0):
            return {"energy_per_atom": float(e0) / n, "volume_per_atom": float(v0) / n,
                    "bulk_modulus_gpa": float(bulk_modulus) / GPa, "volumes_per_atom": (volumes / n).tolist(),
                    "energies_per_atom": (energies / n).tolist(), "scans": scan + 1}
        lowest = volumes[int(np.argmin(energies))]
        target = v0 if np.isfinite(v0) else lowest
        centre = float(np.clip(target, centre * (1 - 2 * volume_range), centre * (1 + 2 * volume_range)))
    raise AtomtuneError(
        f"{atoms.get_chemical_formula()}: no E(V) minimum within the scanned volumes after {max_rescans + 1} scans "
        f"(last {volumes[0] / n:.2f}–{volumes[-1] / n:.2f} Å³/atom, lowest energy at {lowest / n:.2f}); widen "
        f"eos_volume_range or raise eos_max_rescans."
    )


def pressure_at_volume(atoms: Atoms, single_points: SinglePoints, volume_per_atom: float) -> float:
    """Pressure (GPa, compression > 0) of ``atoms`` scaled isotropically to ``volume_per_atom`` (Å³), one single point
    with stress; at an end member's E(V) minimum this is the offset of the calculator's stress from −dE/dV."""
    from ase.units import GPa

    result = single_points.compute(scaled_to_volume(atoms, volume_per_atom), stress=True)
    return _pressure(result["stress"]) / GPa


def pressure_corrected(atoms: Atoms, single_points: SinglePoints, bulk_modulus_gpa: float,
                       pressure_offset_gpa: float = 0.0) -> dict:
    """Zero-pressure energy and volume of ``atoms`` from one single point with stress, to second order in the volume
    change: with E(V) ≈ E − P (V′ − V) + B (V′ − V)² / 2V, the minimum is at V₀ = V (1 + P/B) with E₀ = E − P² V / 2B.
    ``bulk_modulus_gpa``: B at this composition. ``pressure_offset_gpa``: the calculator's pressure where its E(V) has
    its minimum (at this composition; the end members' interpolated), subtracted from the single point's before the
    correction (Pulay stress). Returns ``energy_per_atom`` (eV), ``volume_per_atom`` (Å³), the single point's
    ``pressure_gpa`` and ``energy_at_start_per_atom``, the ``pressure_offset_gpa`` used, and the correction in
    meV/atom."""
    from ase.units import GPa

    n, volume = len(atoms), atoms.get_volume()
    result = single_points.compute(atoms, stress=True)
    measured = _pressure(result["stress"])  # eV/Å³
    pressure = measured - pressure_offset_gpa * GPa
    bulk_modulus = bulk_modulus_gpa * GPa
    if not bulk_modulus > 0:
        raise AtomtuneError(f"{atoms.get_chemical_formula()}: bulk modulus {bulk_modulus_gpa} GPa; the end members' "
                            f"E(V) scans gave no positive bulk modulus.")
    correction = -pressure**2 * volume / (2 * bulk_modulus)
    return {"energy_per_atom": (result["energy"] + correction) / n, "volume_per_atom": volume * (1 + pressure /
            bulk_modulus) / n, "pressure_gpa": measured / GPa, "pressure_offset_gpa": pressure_offset_gpa,
            "bulk_modulus_gpa": bulk_modulus_gpa,
            "energy_at_start_per_atom": result["energy"] / n, "volume_at_start_per_atom": volume / n,
            "correction_mev_per_atom": correction / n * 1000}


def calculator_fingerprint(calculator) -> str:
    """A short hash that names a calculator and its settings, for the single-point cache: a Potential by its name and
    checkpoint (clear the cache after training into the same folder again); a calculator built from a reference
    spec (``CalculatorSpec.task_calculator``: GPAW) by its spec's settings hash; any other ASE calculator by its class
    and parameters."""
    import hashlib
    import json

    from atomtune.models.base import Potential

    if isinstance(calculator, Potential):
        identity = {"potential": calculator.name, "checkpoint": str(getattr(calculator, "checkpoint", ""))}
    else:
        spec = getattr(calculator, "spec", None)
        identity = {"calculator": type(calculator).__name__,
                    "spec": spec.settings_hash() if hasattr(spec, "settings_hash") else None,
                    "parameters": dict(getattr(calculator, "parameters", None) or {})}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


class SinglePoints:
    """``energy(atoms)`` in eV with one calculator, each result kept as one JSON file in ``cache_dir`` (when given)
    named by the structure's content hash and :func:`calculator_fingerprint`, written atomically: a killed run loses
    only the single point in flight, and a rerun reads the others back. Counts single points and their CPU time (cached
    ones count with the time they took when computed).

    The key holds the structure and the calculator's settings, not settings a calculator derives from the order it sees
    cells in (GPAW's k-point mesh per cell family is the first family member's); the task computes the structures in
    enumeration order every time, so a resumed run meets them in the same order."""

    def __init__(self, calculator, cache_dir: str | Path | None = None):
        from atomtune.tasks import as_calculator

        self.calculator = as_calculator(calculator)
        self.directory = None if cache_dir is None else Path(cache_dir)
        self.fingerprint = calculator_fingerprint(calculator)
        self.n = 0
        self.n_cached = 0
        self.cpu_seconds = 0.0

    def cost(self) -> dict:
        return {"n": self.n, "n_cached": self.n_cached, "cpu_seconds": self.cpu_seconds}

    def __call__(self, atoms: Atoms) -> float:
        return self.compute(atoms)["energy"]

    def compute(self, atoms: Atoms, stress: bool = False) -> dict:
        """``energy`` (eV) and, with ``stress``, ``stress`` (Voigt, eV/Å³, ASE's sign) of ``atoms``."""
        import json

        from atomtune.data.dataset import structure_id
        from atomtune.files import atomic_write_json

        path = None
        if self.directory is not None:
            path = self.directory / f"{structure_id(atoms)}-{self.fingerprint}.json"
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                record = None  # not there yet, or cut short by a kill: computed again
            if not (isinstance(record, dict) and isinstance(record.get("energy"), (int, float))):
                record = None  # a file that is not a single point's record: computed again and overwritten
            if record is not None and (not stress or record.get("stress") is not None):
                # A calculator that picks settings per cell family from the first cell it sees (GPAW's k-point mesh,
                # CellFamilyCalculator) must see the cells in the same order on a resumed run.
                register = getattr(self.calculator, "kpoint_mesh_for", None)
                if register is not None:
                    register(atoms)
                self.n += 1
                self.n_cached += 1
                self.cpu_seconds += float(record.get("cpu_seconds", 0.0))
                return record
        work = atoms.copy()
        work.calc = self.calculator
        started, cpu_started = time.perf_counter(), time.process_time()
        energy = float(work.get_potential_energy())
        stress_voigt = np.asarray(work.get_stress(voigt=True), dtype=float).tolist() if stress else None
        record = {"energy": energy, "stress": stress_voigt, "formula": atoms.get_chemical_formula(),
                  "n_atoms": len(atoms), "volume": float(atoms.get_volume()),
                  "calculator": calculator_name(self.calculator), "wall_seconds": time.perf_counter() - started,
                  "cpu_seconds": time.process_time() - cpu_started}
        if path is not None:
            atomic_write_json(path, record)
        self.n += 1
        self.cpu_seconds += record["cpu_seconds"]
        return record


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
