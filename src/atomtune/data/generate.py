"""Structure generators: build the unlabelled structures a user feeds to ``data.label`` when they have no dataset yet.

Bulk prototypes and supercells, random substitution at a target composition, strains, rattles, point defects, slabs,
fcc stacking faults, adsorbates and short MD snapshots, on ASE and pymatgen. Every generator returns new ``ase.Atoms``
(the input is never modified) and records how each structure was made in ``atoms.info``: ``generator`` (what was
done), ``parent`` (the input's ``id``, or its formula) and the parameters, so a dataset says where each frame came from.

Example::

    from atomtune.data import generate as gen
    ni3al = gen.bulk_prototype("L12", ["Ni", "Al"], 3.57)
    frames = gen.isotropic_strains(ni3al, [-0.02, 0.0, 0.02]) + gen.rattles(gen.supercell(ni3al, 2), 5, 0.05)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms

from atomtune.data.dataset import structure_id
from atomtune.exceptions import AtomtuneError

#: Prototypes :func:`bulk_prototype` builds and how many species each takes.
PROTOTYPES = {
    "fcc": 1, "bcc": 1, "hcp": 1, "sc": 1, "diamond": 1,
    "B2": 2, "L12": 2, "rocksalt": 2, "perovskite": 3,
}

#: Ideal hcp c/a, used when none is given.
IDEAL_C_OVER_A = float(np.sqrt(8.0 / 3.0))


# -- bulk ------------------------------------------------------------------------------------------------------------


def bulk_prototype(
    prototype: str,
    elements: str | Sequence[str],
    lattice_constant: float,
    c_over_a: float | None = None,
    cubic: bool = False,
) -> Atoms:
    """A bulk crystal of a named prototype; ``lattice_constant`` in Å (the cubic ``a``; hcp's in-plane ``a``).

    ``prototype``: ``fcc``, ``bcc``, ``hcp``, ``sc``, ``diamond`` (one element); ``B2`` (CsCl, ``[A, B]``), ``L12``
    (A₃B, e.g. Ni₃Al: ``["Ni", "Al"]``), ``rocksalt`` (``[cation, anion]``), ``perovskite`` (ABO₃: ``[A, B, O]``).
    ``cubic`` gives the conventional cubic cell for fcc/bcc/diamond/rocksalt (primitive otherwise); B2, L12 and
    perovskite cells are always their simple-cubic cells (2, 4 and 5 atoms).
    """
    from ase.build import bulk

    elements = [elements] if isinstance(elements, str) else list(elements)
    spelled = prototype.lower().replace("_", "").replace("₂", "2")  # L1_2, L1₂ and L12 are one prototype
    key = {name.lower(): name for name in PROTOTYPES}.get(spelled)
    if key is None:
        raise AtomtuneError(f"unknown prototype {prototype!r}; use one of {', '.join(PROTOTYPES)}.")
    if len(elements) != PROTOTYPES[key]:
        raise AtomtuneError(f"prototype {key} takes {PROTOTYPES[key]} element(s), got {elements}.")
    if lattice_constant <= 0:
        raise AtomtuneError(f"lattice constant must be positive (Å), got {lattice_constant}.")
    a = float(lattice_constant)
    if key in ("fcc", "bcc", "sc", "diamond"):
        atoms = bulk(elements[0], key, a=a, cubic=cubic)
    elif key == "hcp":
        atoms = bulk(elements[0], "hcp", a=a, c=a * (c_over_a or IDEAL_C_OVER_A))
    elif key == "rocksalt":
        atoms = bulk("".join(elements), "rocksalt", a=a, cubic=cubic)
    elif key == "B2":
        atoms = Atoms(elements, scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a, pbc=True)
    elif key == "L12":
        majority, minority = elements
        atoms = Atoms(
            [minority, majority, majority, majority],
            scaled_positions=[[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
            cell=np.eye(3) * a,
            pbc=True,
        )
    else:  # perovskite ABO3: A at the corner, B at the body centre, O at the face centres
        a_site, b_site, anion = elements
        atoms = Atoms(
            [a_site, b_site, anion, anion, anion],
            scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
            cell=np.eye(3) * a,
            pbc=True,
        )
    return _record(atoms, None, "bulk", prototype=key, lattice_constant=a, cubic=bool(cubic))


def supercell(atoms: Atoms, size: int | Sequence[int] | np.ndarray) -> Atoms:
    """A supercell: ``size`` is a repeat count, three counts, or a 3×3 integer transformation matrix."""
    from ase.build import make_supercell

    matrix = np.asarray(size)
    if matrix.ndim == 0:
        new = atoms.repeat(int(matrix))
    elif matrix.shape == (3,):
        new = atoms.repeat([int(n) for n in matrix])
    elif matrix.shape == (3, 3):
        new = make_supercell(atoms, matrix)
    else:
        raise AtomtuneError(f"supercell size must be an int, three ints or a 3×3 matrix, got {size!r}.")
    return _record(new, atoms, "supercell", size=matrix.tolist())


# -- chemistry -------------------------------------------------------------------------------------------------------


def substitute(
    atoms: Atoms,
    composition: dict[str, float],
    sublattice: str | Sequence[int] | None = None,
    seed: int = 0,
) -> Atoms:
    """Random substitution on a sublattice at a target composition (site fractions, normalised).

    ``sublattice``: an element whose sites are replaced (e.g. ``"Mg"`` in rock-salt MgO for the high-entropy oxide
    (Mg,Co,Ni,Cu,Zn)O), a list of site indices, or ``None`` for every site. Counts are rounded so they sum to the number
    of sites (largest remainder); ``info["composition"]`` is the realised one.
    """
    if not composition or any(value < 0 for value in composition.values()) or sum(composition.values()) <= 0:
        raise AtomtuneError(f"composition {composition} must give non-negative fractions that sum to more than 0.")
    if sublattice is None:
        sites = np.arange(len(atoms))
    elif isinstance(sublattice, str):
        sites = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == sublattice)
        if len(sites) == 0:
            raise AtomtuneError(f"no {sublattice} sites in {atoms.get_chemical_formula()} to substitute on.")
    else:
        sites = np.asarray(sublattice, dtype=int)
    counts = _integer_counts(composition, len(sites))
    species = [symbol for symbol, count in counts.items() for _ in range(count)]
    rng = np.random.default_rng(seed)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    symbols[sites] = rng.permutation(species)
    new = atoms.copy()
    new.set_chemical_symbols(list(symbols))
    _reset_moments(new)
    realised = {symbol: count / len(sites) for symbol, count in counts.items() if count}
    return _record(new, atoms, "substitution", composition=realised, sublattice=str(sublattice), seed=seed)


def antisite(atoms: Atoms, first: int, second: int) -> Atoms:
    """Swap the species of sites ``first`` and ``second`` (an antisite pair in an ordered compound)."""
    symbols = atoms.get_chemical_symbols()
    if symbols[first] == symbols[second]:
        raise AtomtuneError(f"sites {first} and {second} are both {symbols[first]}: swapping them changes nothing.")
    new = atoms.copy()
    symbols[first], symbols[second] = symbols[second], symbols[first]
    new.set_chemical_symbols(symbols)
    _reset_moments(new)
    return _record(new, atoms, "antisite", sites=[int(first), int(second)])


def vacancy(atoms: Atoms, index: int = 0) -> Atoms:
    """Remove the atom at ``index`` (use a supercell first so the vacancy does not see itself)."""
    if not 0 <= index < len(atoms):
        raise AtomtuneError(f"vacancy site {index} is outside the {len(atoms)}-atom structure.")
    new = atoms.copy()
    element = new[index].symbol
    del new[index]
    return _record(new, atoms, "vacancy", site=int(index), element=element)


# -- distortions -----------------------------------------------------------------------------------------------------


def strain(atoms: Atoms, strain_tensor: float | Sequence[float] | np.ndarray) -> Atoms:
    """Apply a strain: a number ε scales all lengths by (1+ε) (isotropic); a 3×3 symmetric ε or a Voigt 6-vector
    (xx, yy, zz, yz, xz, xy, engineering shears) deforms the cell by (I + ε). Atoms move with the cell."""
    value = np.asarray(strain_tensor, dtype=float)
    if value.ndim == 0:
        deformation = np.eye(3) * (1.0 + float(value))
        kind, parameters = "isotropic", {"strain": float(value)}
    else:
        if value.shape == (6,):
            xx, yy, zz, yz, xz, xy = value
            value = np.array([[xx, xy / 2, xz / 2], [xy / 2, yy, yz / 2], [xz / 2, yz / 2, zz]])
        if value.shape != (3, 3) or not np.allclose(value, value.T):
            raise AtomtuneError(f"strain must be a number, a Voigt 6-vector or a symmetric 3×3 matrix, got {value}.")
        deformation = np.eye(3) + value
        kind, parameters = "tensor", {"strain": value.round(6).tolist()}
    new = atoms.copy()
    new.set_cell(np.asarray(atoms.cell) @ deformation.T, scale_atoms=True)
    return _record(new, atoms, "strain", kind=kind, **parameters)


def isotropic_strains(atoms: Atoms, strains: Sequence[float]) -> list[Atoms]:
    """One copy per linear strain in ``strains`` (e.g. ``np.linspace(-0.03, 0.03, 7)`` for an EOS)."""
    return [strain(atoms, float(value)) for value in strains]


def random_strains(atoms: Atoms, count: int, max_strain: float = 0.02, seed: int = 0) -> list[Atoms]:
    """``count`` copies under random symmetric strains with components uniform in ±``max_strain``."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        tensor = rng.uniform(-max_strain, max_strain, size=(3, 3))
        frame = strain(atoms, (tensor + tensor.T) / 2)
        frame.info.update(generator="random_strain", max_strain=float(max_strain), seed=int(seed))
        frames.append(frame)
    return frames


def rattle(atoms: Atoms, stdev: float = 0.05, seed: int = 0) -> Atoms:
    """Displace every atom by Gaussian noise of ``stdev`` Å per Cartesian component."""
    new = atoms.copy()
    rng = np.random.default_rng(seed)
    new.positions += rng.normal(0.0, stdev, size=new.positions.shape)
    return _record(new, atoms, "rattle", stdev=float(stdev), seed=int(seed))


def rattles(atoms: Atoms, count: int, stdev: float = 0.05, seed: int = 0) -> list[Atoms]:
    """``count`` rattled copies with seeds ``seed, seed+1, …``."""
    return [rattle(atoms, stdev, seed + i) for i in range(count)]


# -- surfaces and planar defects -------------------------------------------------------------------------------------


def slab(
    atoms: Atoms,
    miller: Sequence[int],
    layers: int = 4,
    vacuum: float = 10.0,
    termination: int = 0,
) -> Atoms:
    """A slab of ``layers`` atomic planes normal to ``miller`` with ``vacuum`` Å of empty space, periodic in all three
    directions (plane-wave codes need that), via pymatgen's SlabGenerator on the primitive surface cell.

    ``termination`` picks among the distinct terminations pymatgen finds. ``info["surface_area"]`` is in Å².
    """
    if layers < 1 or vacuum <= 0:
        raise AtomtuneError(f"a slab needs ≥ 1 layer and positive vacuum, got layers={layers}, vacuum={vacuum}.")
    slabs = slab_terminations(_plain(atoms), tuple(miller), layers, vacuum, in_unit_planes=True)
    if termination >= len(slabs):
        raise AtomtuneError(f"Miller index {tuple(miller)} has {len(slabs)} termination(s); termination={termination}.")
    new = slabs[termination][0]
    _trim_layers(new, layers)
    _set_vacuum(new, vacuum)
    new.info.clear()
    area = float(np.linalg.norm(np.cross(new.cell[0], new.cell[1])))
    return _record(
        new, atoms, "slab", miller=[int(i) for i in miller], layers=int(layers), vacuum=float(vacuum),
        termination=int(termination), surface_area=area,
    )


def slab_terminations(bulk: Atoms, miller: tuple[int, int, int], min_size: float, min_vacuum: float,
                      in_unit_planes: bool = False, symprec: float = 0.01) -> list[tuple[Atoms, bool]]:
    """Slabs of ``bulk`` with face (h, k, l) of its conventional standard cell, one per termination, as (atoms with c
    normal to the surface, the slab centred in the vacuum, periodic in 3D; whether both faces are equivalent), by
    pymatgen's SlabGenerator. ``min_size``: slab thickness in Å, or in planes with ``in_unit_planes``; ``min_vacuum``:
    Å (or planes). Used by :func:`slab` and by the surface task.
    """
    from pymatgen.core.surface import SlabGenerator
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not any(miller):
        raise AtomtuneError(f"Miller index {miller} is not a plane: give at least one non-zero index")
    structure = AseAtomsAdaptor.get_structure(bulk)
    conventional = SpacegroupAnalyzer(structure, symprec=symprec).get_conventional_standard_structure()
    generator = SlabGenerator(conventional, tuple(miller), min_size, min_vacuum, in_unit_planes=in_unit_planes,
                              center_slab=True, primitive=True)
    slabs = generator.get_slabs()
    if not slabs:
        raise AtomtuneError(f"Miller index {tuple(miller)} gives no slab of {bulk.get_chemical_formula()}")
    cut = []
    for candidate in slabs:
        atoms = AseAtomsAdaptor.get_atoms(candidate.get_orthogonal_c_slab())
        atoms.pbc = True
        cut.append((atoms, bool(candidate.is_symmetric())))
    return cut


def fcc111_fault_cell(element: str, lattice_constant: float, layers: int, fraction: float,
                      in_plane_repeat: tuple[int, int] = (1, 1)) -> tuple[Atoms, float, float]:
    """An fcc (111) stack of ``layers`` close-packed planes whose c vector is tilted by ``fraction`` of the Shockley
    partial a/6<112>; returns (atoms, fault area Å², |partial Burgers vector| Å).

    In ASE's fcc111 cell each layer sits (a1 + a2)/3 further along than the one below (ABC…), so shifting the image
    above the boundary by this partial turns ABC|ABC into ABC|BCA (the opposite sign would stack the next layer right
    on the last one, AA). One fault per periodic cell; 0.0 is the perfect crystal in the same cell.
    """
    from ase.build import fcc111

    atoms = fcc111(element, size=(*in_plane_repeat, layers), a=lattice_constant, periodic=True)
    atoms.info.clear()
    cell = np.array(atoms.cell)
    in_plane = cell[:2] / np.array(in_plane_repeat)[:, None]
    partial = (in_plane[0] + in_plane[1]) / 3.0
    cell[2] = cell[2] + fraction * partial
    atoms.set_cell(cell, scale_atoms=False)
    atoms.wrap()
    return atoms, float(np.linalg.norm(np.cross(cell[0], cell[1]))), float(np.linalg.norm(partial))


def stacking_fault(element: str, lattice_constant: float, layers: int = 6, fraction: float = 1.0) -> Atoms:
    """An fcc (111) stack of ``layers`` close-packed planes (one atom each) whose c vector is tilted by ``fraction`` of
    the Shockley partial a/6<112>: 1.0 is the intrinsic stacking fault, 0.0 the perfect crystal (same cell, for the
    reference energy), values between trace the generalised stacking-fault curve.

    The tilt puts one fault per periodic cell, so the fault energy is (E_fault − E_perfect) / ``info["fault_area"]``
    (Å²). ``layers`` should be a multiple of 3 so the perfect stack is ABC-periodic.
    """
    if layers < 3 or layers % 3:
        raise AtomtuneError(f"stacking-fault cells need a multiple of 3 (111) layers for ABC stacking, got {layers}.")
    atoms, area, _ = fcc111_fault_cell(element, lattice_constant, layers, fraction)
    return _record(
        atoms, None, "stacking_fault", element=element, lattice_constant=float(lattice_constant), layers=int(layers),
        fraction=float(fraction), fault_area=area, fault="intrinsic" if fraction == 1.0 else "generalised",
    )


def adsorbate(
    slab_atoms: Atoms,
    molecule: str | Atoms,
    site: str = "ontop",
    height: float = 2.0,
    index: int = 0,
) -> Atoms:
    """Place ``molecule`` (a symbol like ``"O"``, an ase.build.molecule name like ``"CO"``, or Atoms) ``height`` Å
    above an adsorption site of a slab: ``site`` is ``ontop``, ``bridge`` or ``hollow`` (pymatgen AdsorbateSiteFinder on
    the upper surface; it finds no fourfold hollow on square (100) faces); ``index`` picks among sites of that kind."""
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.io.ase import AseAtomsAdaptor

    names = {"top": "ontop", "ontop": "ontop", "bridge": "bridge", "hollow": "hollow"}
    if site not in names:
        raise AtomtuneError(f"unknown adsorption site {site!r}; use top, bridge or hollow.")
    structure = AseAtomsAdaptor.get_structure(_plain(slab_atoms))
    finder = AdsorbateSiteFinder(structure, height=0.9)
    sites = finder.find_adsorption_sites(distance=height, positions=[names[site]])[names[site]]
    if not sites:
        raise AtomtuneError(f"no {site} site found on the surface of {slab_atoms.get_chemical_formula()}.")
    if index >= len(sites):
        raise AtomtuneError(f"only {len(sites)} {site} site(s) on this surface; index={index}.")
    adsorbed = _as_molecule(molecule)
    position = np.asarray(sites[index], dtype=float)
    adsorbed.translate(position - adsorbed.positions[0])  # the first atom of the molecule binds to the surface
    new = slab_atoms.copy()
    new.info.clear()
    new.extend(adsorbed)
    return _record(
        new, slab_atoms, "adsorbate", molecule=adsorbed.get_chemical_formula(), site=names[site], height=float(height),
        site_index=int(index),
    )


# -- dynamics --------------------------------------------------------------------------------------------------------


def md_snapshots(
    atoms: Atoms,
    calculator,
    count: int = 10,
    interval: int = 10,
    temperature_k: float = 300.0,
    timestep_fs: float = 2.0,
    seed: int = 0,
) -> list[Atoms]:
    """``count`` snapshots, one every ``interval`` steps, of Langevin MD at ``temperature_k`` K with a ``timestep_fs``
    fs step, driven by any ASE calculator (a Potential's calculator, EMT, GPAW …). Snapshots carry no labels: label
    them with the reference afterwards."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    if count < 1 or interval < 1:
        raise AtomtuneError(f"md_snapshots needs count ≥ 1 and interval ≥ 1, got {count}, {interval}.")
    work = _plain(atoms)
    work.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_k, rng=rng)
    dynamics = Langevin(
        work, timestep=timestep_fs * units.fs, temperature_K=temperature_k, friction=0.01 / units.fs, rng=rng,
        fixcm=False,
    )
    frames = []
    for step in range(1, count + 1):
        dynamics.run(interval)
        frame = _plain(work)
        frames.append(
            _record(
                frame, atoms, "md", temperature_k=float(temperature_k), timestep_fs=float(timestep_fs),
                step=int(step * interval), seed=int(seed), driver=type(calculator).__name__,
            )
        )
    return frames


def apply_each(structures: Sequence[Atoms], make: Callable[[Atoms], Atoms | list[Atoms]]) -> list[Atoms]:
    """Apply a generator to each structure and flatten, e.g. ``apply_each(bulks, lambda a: rattles(a, 3, 0.05))``."""
    frames: list[Atoms] = []
    for atoms in structures:
        made = make(atoms)
        frames.extend(made if isinstance(made, list) else [made])
    return frames


# -- helpers for the generators above --------------------------------------------------------------------------------


def _record(atoms: Atoms, parent: Atoms | None, generator: str, **parameters) -> Atoms:
    """Stamp provenance into ``atoms.info`` and give it a content-hash id (overwritten info keys are the parent's)."""
    # A pinned k-mesh ("kpts") belongs to one cell shape; the caller pins it again for the new structure if wanted.
    inherited = {} if parent is None else {k: v for k, v in parent.info.items() if k not in ("id", "generator", "kpts")}
    atoms.info = {**inherited, **atoms.info}
    atoms.info["generator"] = generator
    if parent is not None:
        atoms.info["parent"] = str(parent.info.get("id", parent.get_chemical_formula()))
        history = str(parent.info.get("history", parent.info.get("generator", "")))
        atoms.info["history"] = f"{history}>{generator}" if history else generator
    else:
        atoms.info.pop("parent", None)
        atoms.info["history"] = generator
    for key, value in parameters.items():
        atoms.info[key] = _info_value(value)
    atoms.info["id"] = structure_id(atoms)
    return atoms


def _info_value(value):
    """extxyz stores scalars, strings and flat numeric arrays; nested lists and dicts go in as compact strings."""
    if isinstance(value, dict):
        return " ".join(f"{k}:{v:.4g}" if isinstance(v, float) else f"{k}:{v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        array = np.asarray(value)
        return array.ravel().tolist() if array.ndim == 1 else str(array.tolist()).replace(" ", "")
    return value


def _integer_counts(composition: dict[str, float], n_sites: int) -> dict[str, int]:
    total = sum(composition.values())
    exact = {symbol: fraction / total * n_sites for symbol, fraction in composition.items()}
    counts = {symbol: int(np.floor(value)) for symbol, value in exact.items()}
    for symbol in sorted(exact, key=lambda s: exact[s] - counts[s], reverse=True)[: n_sites - sum(counts.values())]:
        counts[symbol] += 1
    return counts


def _reset_moments(atoms: Atoms) -> None:
    """After a species change the old initial moments belong to other elements; the labeller sets fresh ones."""
    if atoms.has("initial_magmoms"):
        atoms.set_initial_magnetic_moments(None)


def _plain(atoms: Atoms) -> Atoms:
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def _as_molecule(molecule: str | Atoms) -> Atoms:
    if isinstance(molecule, Atoms):
        return molecule.copy()
    from ase.build import molecule as build_molecule
    from ase.data import chemical_symbols

    if molecule in chemical_symbols:
        return Atoms(molecule, positions=[[0, 0, 0]])
    try:
        return build_molecule(molecule)
    except KeyError as error:
        raise AtomtuneError(f"unknown adsorbate {molecule!r}: give an element, ASE molecule name or Atoms.") from error


def _trim_layers(atoms: Atoms, layers: int, tolerance: float = 0.3) -> None:
    """pymatgen's min_slab_size is a minimum; drop the top planes beyond ``layers`` so the cell is as small as asked."""
    heights = atoms.positions[:, 2]
    planes = []
    for z in np.sort(heights):
        if not planes or z - planes[-1] > tolerance:
            planes.append(z)
    if len(planes) > layers:
        cutoff = planes[layers] - tolerance / 2
        del atoms[[i for i, z in enumerate(heights) if z > cutoff]]


def _set_vacuum(atoms: Atoms, vacuum: float) -> None:
    """Make the c vector normal to the surface with exactly ``vacuum`` Å between the slab and its periodic image."""
    cell = np.array(atoms.cell)
    normal = np.cross(cell[0], cell[1])
    normal /= np.linalg.norm(normal)
    heights = atoms.positions @ normal
    thickness = heights.max() - heights.min()
    atoms.positions -= normal * (heights.min() - vacuum / 2)  # half the vacuum below, half above
    cell[2] = normal * (thickness + vacuum)
    atoms.set_cell(cell, scale_atoms=False)
