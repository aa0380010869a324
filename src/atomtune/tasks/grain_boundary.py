"""Grain-boundary energy γ_GB of symmetric tilt boundaries in cubic elemental crystals (Σ3 (111) twin, Σ5 (310),
Σ5 (210), …).

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``). The bulk is relaxed
with the calculator; pymatgen's :class:`~pymatgen.core.interface.GrainBoundaryGenerator` builds the coincidence-site
lattice (CSL) bicrystal from its conventional cell, with the boundary plane normal to c and two boundaries per periodic
cell (at c = 0 and c = ½). Rigid-body translations of one grain parallel to the plane are scanned on a grid (the
boundary's energy depends on them: the γ-surface of the boundary), each bicrystal is relaxed (atoms, and the cell length
along the normal so the boundary's excess volume can open), and

    γ_GB = min over translations of (E_GB − N e_bulk) / (2 A)

with N the atoms of the bicrystal, e_bulk the relaxed bulk energy per atom and A the boundary area. The cell length
along the normal (``expand_times``, the number of CSL periods per grain) must be converged: the two boundaries of the
cell interact through it.

Specification: ``{"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [3, 1, 0]}``; the rotation angle is the one of
that Σ about that axis for which the plane is a symmetric tilt plane. A Σ that is not a CSL of the axis, or a plane that
is not a symmetric tilt plane of it, is an error naming what exists instead.

The coherent Σ3 (111) twin of an fcc crystal has a much smaller exact cell than pymatgen's CSL bicrystal (4 atoms per
(111) layer): the hexagonal 1 × 1 (111) cell with one atom per layer, stacked ABCABC|BACBAC (``twin_cell="compact"``,
6 × ``expand_times`` atoms: 12 at 2 periods instead of 48). Its bulk reference is the same cell stacked ABCABC… and
computed with the same calculator, so a plane-wave DFT reference uses one k-mesh for both and its k-point and basis
errors cancel in E_twin − E_fcc (a twin energy of 40 mJ/m² is 27 meV per cell, two boundaries of 5.4 Å² in Ni: a
1 meV/atom k-mesh mismatch between a 12-atom bicrystal and a primitive-cell bulk would be 12 meV of it). That makes a
DFT twin energy affordable; the k-mesh must still be converged for γ itself (docs/lammps.md, section 4).
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import as_calculator, run_each
from atomtune.tasks.bulk_reference import starting_bulk
from atomtune.tasks.comparison import compare_properties, plot_properties
from atomtune.tasks.surface import J_PER_M2

#: Space groups of the cubic elemental lattices GrainBoundaryGenerator's cubic CSL ('c') applies to.
CUBIC_SPACE_GROUPS = {225: "fcc", 229: "bcc", 227: "diamond", 221: "simple cubic"}

DEFAULT_BOUNDARIES = (
    {"sigma": 3, "rotation_axis": [1, -1, 0], "plane": [1, 1, 1]},  # coherent twin
    {"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [3, 1, 0]},
    {"sigma": 5, "rotation_axis": [0, 0, 1], "plane": [2, 1, 0]},
)


#: How the Σ3 (111) twin's cell is built (``Settings.twin_cell``).
TWIN_CELLS = {
    "csl": "pymatgen's CSL bicrystal, like every other boundary",
    "compact": "fcc only: one atom per (111) layer, ABCABC|BACBAC, bulk reference the same cell stacked ABCABC",
}


@dataclass
class Boundary:
    """One symmetric tilt boundary: Σ, rotation (tilt) axis [uvw] and boundary plane (hkl), cubic Miller indices."""

    sigma: int
    rotation_axis: tuple[int, int, int]
    plane: tuple[int, int, int]

    @property
    def name(self) -> str:
        axis = "".join(str(i) if i >= 0 else f"-{-i}" for i in self.rotation_axis)
        plane = "".join(str(i) if i >= 0 else f"-{-i}" for i in self.plane)
        return f"Σ{self.sigma}({plane})[{axis}]"

    def rotation_angle(self) -> float:
        """The rotation angle (degrees) of this Σ about the axis for which ``plane`` is a symmetric tilt plane."""
        return _rotation_angle(self.sigma, self.rotation_axis, self.plane, self.name)

    @property
    def is_coherent_twin(self) -> bool:
        """Σ3 with a {111} plane: the coherent twin (the Σ3 {112} boundaries are incoherent twins)."""
        return self.sigma == 3 and sorted(abs(i) for i in self.plane) == [1, 1, 1]


@functools.lru_cache(maxsize=None)
def _rotation_angle(sigma: int, rotation_axis: tuple, plane: tuple, name: str) -> float:
    """:meth:`Boundary.rotation_angle`, cached: pymatgen enumerates the CSL planes each time it is asked."""
    from pymatgen.core.interface import GrainBoundaryGenerator

    axis = list(rotation_axis)
    if np.dot(axis, plane) != 0:
        raise AtomtuneError(
            f"{name}: the plane {list(plane)} does not contain the rotation axis {axis}, so it cannot be a "
            "tilt boundary (a tilt plane's normal is perpendicular to the axis)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        angles = GrainBoundaryGenerator.get_rotation_angle_from_sigma(sigma, axis, lat_type="c")
    refusals = [str(warning.message) for warning in caught if "not possible" in str(warning.message)]
    if refusals or not angles:
        # pymatgen's warning lists the Σ values below the requested one that exist for this axis
        listed = re.search(r"possible values: (\[[^\]]*\])", refusals[0]) if refusals else None
        raise AtomtuneError(
            f"{name}: Σ{sigma} is not a coincidence-site lattice for rotation axis {axis} in a cubic crystal"
            + (f"; Σ values up to it that exist for this axis: {listed.group(1)}" if listed else "")
            + "."
        )
    wanted = {tuple(plane), tuple(-np.array(plane))}
    found: list[tuple] = []
    for angle in angles:
        # planes up to the requested one's largest index: enough to find it, and the enumeration grows fast with the cutoff
        cutoff = max(3, *(abs(int(i)) for i in plane))
        planes = GrainBoundaryGenerator.enum_possible_plane_cubic(cutoff, axis, angle)["Symmetric tilt"]
        tilt_planes = {tuple(int(i) for i in pair[0]) for pair in planes}
        found.extend(sorted(tilt_planes))
        if tilt_planes & wanted:
            return float(angle)
    raise AtomtuneError(
        f"{name}: ({' '.join(map(str, plane))}) is not a symmetric tilt plane of Σ{sigma} about "
        f"{axis}; its symmetric tilt planes are {sorted(set(found))}."
    )


@dataclass
class Settings:
    """The boundaries, the bicrystal size, the translation scan and the relaxation.

    ``boundaries``: list of ``{"sigma", "rotation_axis", "plane"}`` (default: Σ3 (111)[1-10] twin, Σ5 (310)[001],
    Σ5 (210)[001]). ``expand_times``: CSL periods per grain along the normal (pymatgen's ``expand_times``); 3 puts the
    two boundaries of the cell ≥ 12 Å apart in Cu's Σ5 cells; check convergence with 4–6 for a new system.
    ``translations``: grid points per in-plane direction for the rigid-body translation scan (n × n shifts of the second
    grain over one in-plane CSL cell; 1 = no scan). ``rm_ratio``: pymatgen's removal of atoms closer than this times the
    bulk bond length at the boundary. ``relax_bulk``: relax the bulk first (the bicrystal is built at the calculator's
    own lattice constant). ``relax``: relax atoms and the cell length along the normal; False gives rigid γ.
    ``fmax``: eV/Å; ``max_steps``: per bicrystal. ``symprec``: Å, for recognising the cubic lattice.
    ``twin_cell``: ``"csl"`` builds every boundary with pymatgen; ``"compact"`` builds the Σ3 (111) twin of an fcc
    crystal on the one-atom-per-layer cell (3 × ``expand_times`` (111) layers per grain, the translation scan over the
    1 × 1 (111) cell) with the same-cell fcc stack as its bulk reference (see the module docstring); other boundaries
    are built with pymatgen either way.
    """

    boundaries: list[dict] = field(default_factory=lambda: [dict(b) for b in DEFAULT_BOUNDARIES])
    expand_times: int = 3
    translations: int = 2
    rm_ratio: float = 0.7
    relax_bulk: bool = True
    relax: bool = True
    fmax: float = 0.01
    max_steps: int = 300
    symprec: float = 0.01
    twin_cell: str = "csl"

    def boundary_specs(self) -> list[Boundary]:
        """The boundaries as :class:`Boundary`, each checked to be a valid CSL symmetric tilt boundary."""
        specs = []
        for entry in self.boundaries:
            try:
                spec = Boundary(
                    sigma=int(entry["sigma"]),
                    rotation_axis=tuple(int(i) for i in entry["rotation_axis"]),
                    plane=tuple(int(i) for i in entry["plane"]),
                )
            except (KeyError, TypeError, ValueError):
                raise AtomtuneError(
                    f"grain boundary {entry!r}: give sigma (odd integer), rotation_axis [u, v, w] and plane [h, k, l]."
                ) from None
            spec.rotation_angle()  # raises for a non-CSL Σ or a plane that is not a symmetric tilt plane
            specs.append(spec)
        return specs

    def check(self) -> None:
        if self.expand_times < 1 or self.translations < 1:
            raise AtomtuneError("grain boundary: expand_times and translations must be ≥ 1.")
        if self.twin_cell not in TWIN_CELLS:
            raise AtomtuneError(
                f"grain boundary: twin_cell {self.twin_cell!r} is not one of {list(TWIN_CELLS)} "
                f"({'; '.join(f'{name}: {what}' for name, what in TWIN_CELLS.items())})."
            )
        self.boundary_specs()


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per (structure, boundary); each structure a cubic elemental crystal (fcc, bcc, …).

    Record: ``id`` (``"<structure> Σ3(111)[1-10]"``), ``structure``, ``element``, ``boundary``, ``sigma``,
    ``rotation_axis``, ``plane``, ``rotation_angle_deg``, ``lattice_constant`` (Å), ``n_atoms``, ``area`` (Å², one
    boundary), ``cell_length_normal`` (Å, after relaxation, at the best translation), ``translations`` (fractional
    in-plane shifts), ``gamma_per_translation_j_per_m2``, ``gamma_gb_j_per_m2`` and ``gamma_gb_mj_per_m2`` (the
    minimum), ``best_translation``, ``excess_volume_angstrom`` (normal expansion per boundary, Å³/Å²),
    ``relaxation_steps``, ``converged``, ``twin_cell`` for the Σ3 (111) twin (``"csl"`` or ``"compact"``; a compact
    record adds ``bulk_energy_per_atom``, eV, of the same-cell fcc stack it is measured from). A structure that is not
    cubic and elemental gives records with ``"error"``.
    """
    settings = settings or Settings()
    settings.check()
    boundaries = settings.boundary_specs()
    calculator = as_calculator(calculator)

    def compute(atoms: Atoms, label: str) -> list[dict]:
        return _grain_boundaries(atoms, label, calculator, settings, boundaries)

    return run_each(structures, compute, "grain boundary", progress)


def _grain_boundaries(bulk: Atoms, label: str, calculator, settings: Settings, boundaries) -> list[dict]:
    from pymatgen.core.interface import GrainBoundaryGenerator
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    element, lattice = _cubic_element(bulk, label, settings.symprec)
    bulk = starting_bulk(
        bulk, label, calculator, "the grain-boundary task", settings.relax_bulk, settings.fmax, settings.max_steps
    )
    energy_per_atom = float(bulk.get_potential_energy()) / len(bulk)
    structure = AseAtomsAdaptor.get_structure(bulk)
    conventional = SpacegroupAnalyzer(structure, symprec=settings.symprec).get_conventional_standard_structure()
    lattice_constant = float(conventional.lattice.a)
    generator = GrainBoundaryGenerator(conventional)
    records = []
    for boundary in boundaries:
        record = {
            "id": f"{label} {boundary.name}",
            "structure": label,
            "element": element,
            "lattice": lattice,
            "boundary": boundary.name,
            "sigma": boundary.sigma,
            "rotation_axis": list(boundary.rotation_axis),
            "plane": list(boundary.plane),
            "lattice_constant": lattice_constant,
        }
        try:
            if settings.twin_cell == "compact" and boundary.is_coherent_twin:
                record.update(_compact_twin(element, lattice, lattice_constant, boundary, calculator, settings))
            else:

                def build(translation, boundary=boundary) -> Atoms:
                    return bicrystal(generator, boundary, settings.expand_times, translation, settings.rm_ratio)

                record.update(_one_boundary(build, boundary, calculator, energy_per_atom, settings))
                if boundary.is_coherent_twin:
                    record["twin_cell"] = "csl"
        except AtomtuneError as error:
            record["error"] = str(error)
        records.append(record)
    return records


def bicrystal(generator, boundary: Boundary, expand_times: int, translation=(0.0, 0.0), rm_ratio: float = 0.7) -> Atoms:
    """The periodic bicrystal of ``boundary`` (two boundaries, normal along c) from a pymatgen GrainBoundaryGenerator,
    with the second grain shifted by ``translation`` (fractions of the in-plane cell vectors), as ``ase.Atoms``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grain_boundary = generator.gb_from_parameters(
            list(boundary.rotation_axis),
            boundary.rotation_angle(),
            expand_times=expand_times,
            ab_shift=list(translation),
            normal=True,
            plane=list(boundary.plane),
            rm_ratio=rm_ratio,
        )
    atoms = AseAtomsAdaptor.get_atoms(grain_boundary.get_sorted_structure())
    for key in list(atoms.arrays):
        if key not in ("numbers", "positions"):
            del atoms.arrays[key]
    atoms.info.clear()
    atoms.wrap()
    return atoms


def compact_twin(
    element: str, lattice_constant: float, layers_per_grain: int, translation=(0.0, 0.0), twinned: bool = True
) -> Atoms:
    """The coherent Σ3 (111) twin of fcc ``element`` on the hexagonal 1 × 1 (111) cell, one atom per layer, normal
    along z: ``layers_per_grain`` layers stacked ABC… and then their mirror image, ABCABC|BACBAC for 6 (two twin planes
    per cell, ``layers_per_grain`` layers apart: the last layer of each grain); the second grain shifted by
    ``translation`` (fractions of the in-plane cell vectors). ``twinned=False`` gives the same cell stacked ABCABC…
    (the bulk reference, same k-mesh). ``layers_per_grain``: a multiple of 3, so that the fcc reference is periodic in
    the same cell. ``lattice_constant``: cubic a, Å."""
    from ase.build import fcc111

    layers = 2 * layers_per_grain
    if layers_per_grain < 3 or layers_per_grain % 3:
        raise AtomtuneError(
            f"compact twin of {element}: {layers_per_grain} layers per grain; give a multiple of 3 (3, 6, 9, …): "
            "the fcc reference in the same cell repeats every 3 layers."
        )
    atoms = fcc111(element, (1, 1, layers), a=lattice_constant, periodic=True)
    order = np.argsort(atoms.positions[:, 2], kind="stable")
    atoms = atoms[order]
    if twinned:
        sites = atoms.positions[:3, :2].copy()  # the A, B and C sites of a (111) layer
        shift = translation[0] * atoms.cell[0, :2] + translation[1] * atoms.cell[1, :2]
        for k in range(layers_per_grain, layers):
            # the stacking mirrored about layer layers_per_grain − 1 (a twin plane); the last layer then sits between
            # two equal layers across the periodic boundary (the second twin plane): ABC|BAC for 3 layers per grain
            atoms.positions[k, :2] = sites[(2 * layers_per_grain - 2 - k) % 3] + shift
    atoms.info.clear()
    atoms.wrap()
    return atoms


def _compact_twin(
    element: str, lattice: str, lattice_constant: float, boundary: Boundary, calculator, settings: Settings
) -> dict:
    if lattice != "fcc":
        raise AtomtuneError(
            f"twin_cell 'compact' builds the coherent {boundary.name} twin of fcc crystals; {element} is {lattice}: "
            "use twin_cell 'csl' (pymatgen's bicrystal)."
        )
    layers_per_grain = 3 * settings.expand_times
    reference = compact_twin(element, lattice_constant, layers_per_grain, twinned=False)
    reference.calc = calculator
    reference_converged = _relax_normal(reference, settings)[0] if settings.relax else True
    energy_per_atom = float(reference.get_potential_energy()) / len(reference)

    def build(translation) -> Atoms:
        return compact_twin(element, lattice_constant, layers_per_grain, translation)

    result = _one_boundary(build, boundary, calculator, energy_per_atom, settings)
    result["twin_cell"] = "compact"
    result["bulk_energy_per_atom"] = energy_per_atom  # of the same-cell fcc stack (eV), what γ is measured from
    if not reference_converged:
        result["converged"] = False
        result["error"] = (
            f"the relaxation of the fcc reference cell ({len(reference)} atoms) did not converge to fmax "
            f"{settings.fmax} eV/Å in {settings.max_steps} steps"
        )
    return result


def _relax_normal(atoms: Atoms, settings: Settings) -> tuple[bool, int]:
    """Relax the atoms and the cell length along the normal (c, zz only) of a bicrystal or its bulk reference."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    # the normal cell length relaxes too (zz only): a boundary has excess volume, and with the length fixed its
    # expansion would strain both grains and make γ depend on expand_times
    optimizer = BFGS(FrechetCellFilter(atoms, mask=[0, 0, 1, 1, 1, 0]), logfile=None)
    converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps))
    return converged, optimizer.nsteps


def _one_boundary(build, boundary: Boundary, calculator, energy_per_atom: float, settings: Settings) -> dict:
    """γ over the translation scan; ``build(translation)`` gives the bicrystal, ``energy_per_atom`` the bulk (eV)."""
    grid = np.arange(settings.translations) / settings.translations
    translations = [(float(u), float(v)) for u in grid for v in grid]
    gammas, steps, lengths, converged, sizes = [], [], [], True, set()
    area = None
    for translation in translations:
        atoms = build(translation)
        sizes.add(len(atoms))
        area = float(np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1])))
        atoms.calc = calculator
        length_before = float(atoms.cell.lengths()[2])
        used = 0
        if settings.relax:
            relaxed, used = _relax_normal(atoms, settings)
            converged = relaxed and converged
        energy = float(atoms.get_potential_energy())
        gammas.append((energy - len(atoms) * energy_per_atom) / (2.0 * area) / J_PER_M2)
        steps.append(used)
        lengths.append((length_before, float(np.linalg.norm(atoms.cell[2]))))
    best = int(np.argmin(gammas))
    # the normal vector c may tilt slightly while relaxing; the expansion is measured along the boundary normal
    expansion = (lengths[best][1] - lengths[best][0]) / 2.0
    result = {
        "rotation_angle_deg": boundary.rotation_angle(),
        "n_atoms": sorted(sizes),
        "area": area,
        "cell_length_normal": lengths[best][1],
        "translations": translations,
        "gamma_per_translation_j_per_m2": gammas,
        "gamma_gb_j_per_m2": gammas[best],
        "gamma_gb_mj_per_m2": gammas[best] * 1000.0,
        "best_translation": list(translations[best]),
        "excess_volume_angstrom": expansion,
        "relaxation_steps": steps,
        "converged": converged,
    }
    if not converged:
        result["error"] = (
            f"a bicrystal relaxation did not converge to fmax {settings.fmax} eV/Å in {settings.max_steps} steps"
        )
    return result


def _cubic_element(atoms: Atoms, label: str, symprec: float) -> tuple[str, str]:
    import spglib

    from atomtune.tasks.bulk_reference import periodic_bulk

    periodic_bulk(atoms, label, "the grain-boundary task")
    elements = sorted(set(atoms.get_chemical_symbols()))
    dataset = spglib.get_symmetry_dataset(
        (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers), symprec=symprec
    )
    number = None if dataset is None else int(dataset.number)
    if len(elements) != 1 or number not in CUBIC_SPACE_GROUPS:
        raise AtomtuneError(
            f"structure {label} ({atoms.get_chemical_formula()}, space group {number}) is not a cubic elemental "
            f"crystal; the grain-boundary task builds cubic CSL bicrystals of one element "
            f"({', '.join(CUBIC_SPACE_GROUPS.values())})"
        )
    return elements[0], CUBIC_SPACE_GROUPS[number]


#: Scalar properties of a record that ``compare`` and ``plot`` show.
PROPERTIES = ("gamma_gb_mj_per_m2", "excess_volume_angstrom")


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per (structure, boundary) for γ_GB (mJ/m²) and the excess volume, a column per model, differences and MAE
    vs ``reference``."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bar charts of γ_GB and excess volume per boundary and model."""
    return plot_properties(results, PROPERTIES, out_dir, "grain_boundary")
