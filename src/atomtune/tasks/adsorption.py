"""Adsorption energies of an atom or molecule on the top/bridge/hollow sites of a slab, and the sites' ranking.

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``). For each slab the
symmetry-distinct sites of its top face are found with pymatgen's ``AdsorbateSiteFinder``, named by how many surface
atoms they touch (ontop, bridge, fcc/hcp hollow, fourfold hollow), the adsorbate is placed above each and relaxed, and

    E_ads = E(slab + adsorbate) − E(slab) − E(adsorbate reference)

with all three energies from the same calculator: the clean slab relaxed with the same constraints, and the gas-phase
reference relaxed in a box (the adsorbate itself by default, or e.g. ½ O2 for O). Negative E_ads binds; rank 1 is the
most stable site. The slab's cell is used as given (its in-plane lattice is not rescaled to each calculator's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.constraints import FixAtoms
from ase.data import chemical_symbols
from ase.geometry import find_mic

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import as_calculator, error_message, run_each
from atomtune.tasks.comparison import compare_properties, plot_properties
from atomtune.tasks.relax import relax_structures

#: Å: atoms within this height of the topmost one form the top layer (and likewise for the layer below it).
LAYER_TOLERANCE = 0.5
#: Å: surface atoms this much farther than the nearest one from a site still count as touching it (a bridge's two atoms
#: are equidistant; the next shell is ≥ 0.5 Å farther on close-packed faces).
CONTACT_TOLERANCE = 0.25
#: pymatgen's site kinds (``AdsorbateSiteFinder.find_adsorption_sites``).
SITE_KINDS = ("ontop", "bridge", "hollow")
#: Å of vacuum along the surface normal below which a structure is taken for a bulk crystal, not a slab.
MIN_VACUUM = 5.0
#: Å of vacuum around a gas-phase reference in its periodic box (beyond the cutoff of every backbone).
GAS_VACUUM = 8.0


@dataclass
class Settings:
    """The adsorbate, its reference, the sites and the relaxation.

    ``adsorbate``: a chemical symbol (``"O"``) or a molecule name of ASE's g2 set (``"CO"``, ``"OH"``, ``"H2O"``);
    a molecule binds through ``binding_atom`` (its index in ``ase.build.molecule``, or a chemical symbol: ``"C"`` for
    C-down CO) with the rest pointing away from the surface.
    ``reference``: gas-phase species and coefficients whose energies sum to the adsorbate reference, e.g.
    ``{"O2": 0.5}`` for O; they must add up to the adsorbate's composition. None: the adsorbate itself in a box.
    ``sites``: site kinds to try among ``ontop``, ``bridge``, ``hollow`` (hollows are then named fcc, hcp or fourfold).
    ``initial_height``: Å above the top layer where the binding atom starts; relaxation finds the bond length.
    ``fixed_bottom_layers``: slab layers held fixed, the usual two that stand for the bulk below.
    ``relax``: relax the slab and the adsorbate (False: energies at the initial geometry, a quick screen).
    ``fmax``: eV/Å; ``max_steps``: optimizer steps per relaxation. ``symprec``: Å, symmetry tolerance for reducing
    equivalent sites.
    """

    adsorbate: str = "O"
    binding_atom: int | str = 0
    reference: dict[str, float] | None = None
    sites: tuple[str, ...] = SITE_KINDS
    initial_height: float = 2.0
    fixed_bottom_layers: int = 2
    relax: bool = True
    fmax: float = 0.02
    max_steps: int = 500
    symprec: float = 0.01


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per slab and distinct site of its top face.

    Record: ``id`` (``"<structure id>:<site>"``), ``structure``, ``site`` (see :func:`site_kind`; ``_2``, ``_3`` … for
    further distinct sites of one kind), ``adsorbate``, ``site_position`` (Å, x y of the site), ``final_site`` (where
    the adsorbate ended), ``lateral_displacement`` (Å it moved in-plane while relaxing), ``adsorbate_height`` (Å above
    the top layer, final), ``energy_slab``, ``energy_slab_adsorbate``, ``energy_reference`` (eV), ``adsorption_energy``
    (eV), ``rank`` (1 = most stable among the slab's converged sites; None for a failed site), ``relaxation_steps``,
    ``converged``. A structure that is not a slab gives one record with ``"error"``.
    """
    settings = settings or Settings()
    unknown = sorted(set(settings.sites) - set(SITE_KINDS))
    if unknown:
        raise AtomtuneError(f"unknown site kind(s) {', '.join(unknown)}: choose among {', '.join(SITE_KINDS)}")
    adsorbate = adsorbate_atoms(settings.adsorbate, settings.binding_atom)
    reference = settings.reference or {settings.adsorbate: 1.0}
    _check_reference(adsorbate, reference, settings.adsorbate)
    calculator = as_calculator(calculator)
    try:
        energy_reference = sum(
            coefficient * gas_energy(name, calculator, settings.fmax, settings.max_steps)
            for name, coefficient in reference.items()
        )
        reference_error = None
    except Exception as error:  # e.g. a model without the adsorbate's element: every slab's record says so
        energy_reference, reference_error = None, f"gas-phase reference {reference}: {error_message(error)}"

    def compute(slab: Atoms, label: str) -> list[dict]:
        if reference_error is not None:
            raise AtomtuneError(reference_error)
        return _adsorption(slab, label, calculator, adsorbate, energy_reference, settings)

    return run_each(structures, compute, "adsorption", progress)


def _adsorption(
    slab: Atoms, label: str, calculator, adsorbate: Atoms, energy_reference: float, settings: Settings
) -> list[dict]:
    normal = _check_slab(slab, label)
    heights = slab.positions @ normal
    sites = find_sites(slab, settings.sites, settings.initial_height, settings.symprec)
    if not sites:
        raise AtomtuneError(f"structure {label}: no {'/'.join(settings.sites)} sites found on its top face")
    if settings.fixed_bottom_layers:
        slab.set_constraint(FixAtoms(indices=_bottom_layers(heights, settings.fixed_bottom_layers)))
    slab.calc = calculator
    energy_slab = slab.get_potential_energy()
    if settings.relax:
        (relaxation,) = relax_structures(
            [slab], calculator, settings.fmax, settings.max_steps, relax_cell=False, optimizer="BFGS"
        )
        if not relaxation.converged:
            raise AtomtuneError(f"structure {label}: clean-slab relaxation failed: {relaxation.error}")
        slab, energy_slab = relaxation.atoms, relaxation.energy

    records = []
    for name, position in sites.items():
        record = {
            "id": f"{label}:{name}",
            "structure": label,
            "site": name,
            "adsorbate": adsorbate.get_chemical_formula(),
            "site_position": position[:2],
            "rank": None,
        }
        try:
            system = slab.copy()
            placed = adsorbate.copy()
            placed.rotate((0, 0, 1), normal)  # the molecule points along +z; the slab's outward normal may not
            placed.positions += position - placed.positions[0]
            system += placed  # the slab's FixAtoms indices still hold: the adsorbate is appended after them
            system.calc = calculator
            energy, steps, converged, error = system.get_potential_energy(), 0, True, None
            if settings.relax:
                (relaxation,) = relax_structures(
                    [system], calculator, settings.fmax, settings.max_steps, relax_cell=False, optimizer="BFGS"
                )
                system = relaxation.atoms
                energy, steps, converged = relaxation.energy, relaxation.steps, relaxation.converged
                error = relaxation.error
            final = system.positions[len(slab)]
            top = (system.positions[: len(slab)] @ normal).max()
            shift = final - position
            shift -= (shift @ normal) * normal
            _, lateral = find_mic(shift[None], system.cell, pbc=[True, True, False])
            record.update(
                final_site=site_kind(slab, final),
                lateral_displacement=float(lateral[0]),
                adsorbate_height=float(final @ normal - top),
                energy_slab=energy_slab,
                energy_slab_adsorbate=energy,
                energy_reference=energy_reference,
                adsorption_energy=energy - energy_slab - energy_reference,
                relaxation_steps=steps,
                converged=converged,
            )
            if error:
                record["error"] = f"relaxation: {error}"
        except Exception as error:  # one site failing keeps the other sites' records
            record["error"] = error_message(error)
        records.append(record)
    ranked = sorted((r for r in records if "error" not in r), key=lambda r: r["adsorption_energy"])
    for rank, record in enumerate(ranked, start=1):
        record["rank"] = rank
    return records


def adsorbate_atoms(name: str, binding_atom: int | str = 0) -> Atoms:
    """The adsorbate with its binding atom first at the origin and the rest above it (+z).

    ``binding_atom``: index in ``ase.build.molecule(name)`` or a chemical symbol (its first atom of that element).
    """
    if name in chemical_symbols:
        return Atoms(name)
    try:
        species = molecule(name)
    except KeyError:
        raise AtomtuneError(
            f"adsorbate {name!r} is neither a chemical symbol nor a molecule of ASE's g2 set (e.g. CO, OH, H2O, NH3)"
        ) from None
    symbols = species.get_chemical_symbols()
    if isinstance(binding_atom, str) and binding_atom in symbols:
        binding_atom = symbols.index(binding_atom)
    if not isinstance(binding_atom, int) or not 0 <= binding_atom < len(species):
        raise AtomtuneError(f"binding_atom={binding_atom!r} is not an atom of {name} ({'-'.join(symbols)})")
    order = [binding_atom] + [i for i in range(len(species)) if i != binding_atom]
    species = species[order]
    species.positions -= species.positions[0]
    away = species.get_center_of_mass()
    if np.linalg.norm(away) > 1e-6:
        species.rotate(away, (0, 0, 1))
    return species


def gas_energy(name: str, calculator, fmax: float, max_steps: int) -> float:
    """Energy (eV) of atom or g2 molecule ``name`` relaxed in a periodic box with ``GAS_VACUUM`` of vacuum."""
    species = Atoms(name) if name in chemical_symbols else molecule(name)
    species.center(vacuum=GAS_VACUUM)
    species.pbc = True
    species.calc = calculator
    if len(species) == 1:
        return species.get_potential_energy()
    (relaxation,) = relax_structures([species], calculator, fmax, max_steps, relax_cell=False, optimizer="BFGS")
    if not relaxation.converged:
        raise AtomtuneError(f"{name} in a box: relaxation failed: {relaxation.error}")
    return relaxation.energy


def find_sites(slab: Atoms, kinds: Sequence[str], height: float, symprec: float) -> dict[str, np.ndarray]:
    """Symmetry-distinct adsorption sites of the top face whose kind (``ontop``, ``bridge``, ``hollow``) is in
    ``kinds``, as name (see :func:`site_kind`) → Cartesian position ``height`` Å above the top layer."""
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.io.ase import AseAtomsAdaptor

    finder = AdsorbateSiteFinder(AseAtomsAdaptor.get_structure(slab))
    # all kinds are asked for, since pymatgen files some hollows under "bridge" (the centre of a square's diagonal)
    found = finder.find_adsorption_sites(distance=height, positions=SITE_KINDS, symm_reduce=symprec)
    sites: dict[str, np.ndarray] = {}
    for pymatgen_kind in SITE_KINDS:
        for position in found.get(pymatgen_kind, []):
            name = site_kind(slab, np.asarray(position, dtype=float), pymatgen_kind)
            kind = "hollow" if name.endswith("hollow") else name
            if kind not in kinds:
                continue
            count = sum(1 for existing in sites if existing == name or existing.startswith(f"{name}_"))
            sites[name if count == 0 else f"{name}_{count + 1}"] = np.asarray(position, dtype=float)
    return sites


def site_kind(slab: Atoms, position: np.ndarray, hint: str | None = None) -> str:
    """Name of the site above which ``position`` lies, from the top-layer atoms nearest to it in-plane: ``ontop``,
    ``bridge`` (two), ``fcc_hollow`` / ``hcp_hollow`` (three; without / with a second-layer atom below),
    ``fourfold_hollow`` (four). ``hint`` (pymatgen's kind) names the sites the top layer alone cannot, such as those
    on the lower terrace of a stepped surface; without it they are ``<n>fold`` (n top-layer atoms equally near).
    """
    normal = _surface_normal(slab)
    heights = slab.positions @ normal
    top_layer = heights > heights.max() - LAYER_TOLERANCE
    lateral = _lateral_distances(slab, position, np.flatnonzero(top_layer), normal)
    nearest = lateral.min()
    touching = int((lateral < nearest + CONTACT_TOLERANCE).sum())
    if nearest < CONTACT_TOLERANCE or hint == "ontop":
        return "ontop"
    if touching == 2 and hint != "hollow":
        return "bridge"
    if touching == 3:
        below = heights[~top_layer]
        second = np.flatnonzero(~top_layer & (heights > below.max() - LAYER_TOLERANCE)) if below.size else []
        covered = len(second) and _lateral_distances(slab, position, second, normal).min() < CONTACT_TOLERANCE
        return "hcp_hollow" if covered else "fcc_hollow"
    if touching == 4:
        return "fourfold_hollow"
    return hint or f"{touching}fold"


def _lateral_distances(slab: Atoms, position: np.ndarray, indices, normal: np.ndarray) -> np.ndarray:
    vectors = slab.positions[indices] - position
    vectors -= np.outer(vectors @ normal, normal)
    _, distances = find_mic(vectors, slab.cell, pbc=[True, True, False])
    return distances


def _surface_normal(slab: Atoms) -> np.ndarray:
    normal = np.cross(slab.cell[0], slab.cell[1])
    return normal / np.linalg.norm(normal)


def _check_slab(slab: Atoms, label: str) -> np.ndarray:
    """The unit surface normal of a slab (a, b in-plane, vacuum along c), or an AtomtuneError saying what is wrong."""
    if not (slab.pbc[0] and slab.pbc[1]):
        raise AtomtuneError(
            f"structure {label} is not periodic in-plane (pbc={slab.pbc.tolist()}); adsorption needs a slab periodic "
            "along a and b with vacuum along c, e.g. ase.build.fcc111('Cu', (3, 3, 4), vacuum=10)"
        )
    normal = _surface_normal(slab)
    heights = slab.positions @ normal
    gap = abs(slab.cell[2] @ normal) - (heights.max() - heights.min())
    if gap < MIN_VACUUM:
        raise AtomtuneError(
            f"structure {label} has {gap:.1f} Å of vacuum along c (< {MIN_VACUUM} Å): it looks like a bulk crystal, "
            "not a slab; give a slab with vacuum along c, e.g. ase.build.fcc111('Cu', (3, 3, 4), vacuum=10)"
        )
    return normal


def _bottom_layers(heights: np.ndarray, count: int) -> np.ndarray:
    """Indices of the atoms in the ``count`` lowest layers (heights within LAYER_TOLERANCE are one layer)."""
    levels: list[float] = []
    for height in np.sort(heights):
        if not levels or height - levels[-1] > LAYER_TOLERANCE:
            levels.append(height)
    if count >= len(levels):
        raise AtomtuneError(f"fixed_bottom_layers={count} would fix all {len(levels)} layers of the slab")
    return np.flatnonzero(heights < levels[count] - LAYER_TOLERANCE / 2)


def _check_reference(adsorbate: Atoms, reference: dict[str, float], name: str) -> None:
    """The reference species must add up to the adsorbate's atoms (else E_ads compares different compositions)."""
    total: dict[str, float] = {}
    for species, coefficient in reference.items():
        atoms = Atoms(species) if species in chemical_symbols else adsorbate_atoms(species)
        for symbol in atoms.get_chemical_symbols():
            total[symbol] = total.get(symbol, 0.0) + coefficient
    wanted: dict[str, float] = {}
    for symbol in adsorbate.get_chemical_symbols():
        wanted[symbol] = wanted.get(symbol, 0.0) + 1.0
    if set(total) != set(wanted) or any(abs(total[s] - wanted[s]) > 1e-9 for s in wanted):
        raise AtomtuneError(
            f"reference {reference} has composition {total}, but adsorbate {name} has {wanted}: choose species and "
            "coefficients that add up to the adsorbate (e.g. {'O2': 0.5} for O)"
        )


#: Scalar properties of a record that ``compare`` tabulates.
PROPERTIES = ("adsorption_energy", "rank")


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per site (``id`` = structure:site) for E_ads (eV) and the site's rank, a column per model, differences and
    MAE vs ``reference``; plus one row per slab telling each model's most stable site."""
    rows = compare_properties(results, PROPERTIES, reference)
    preferred: dict[str, dict[str, str]] = {}
    for model, records in results.items():
        for record in records:
            if record.get("rank") == 1:
                preferred.setdefault(str(record["structure"]), {})[model] = record["site"]
    for structure, by_model in preferred.items():
        sites = {model: by_model.get(model) for model in results}
        rows.append({"id": structure, "property": "most_stable_site", **sites})
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bar chart of E_ads (eV) per site, bars grouped by model."""
    return plot_properties(results, ["adsorption_energy"], out_dir, "adsorption")
