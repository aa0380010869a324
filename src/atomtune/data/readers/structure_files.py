"""Crystal-structure files (CIF, POSCAR, any format ASE reads) → checked ``ase.Atoms``, optionally as a supercell.

Where this sits: a reader of the data box, for structures that come from crystallography rather than from a DFT run
(no labels). Published CIFs carry things a simulation cannot take as they are, and this reader stops on them with the
site named instead of producing a wrong cell:

- **partial occupancy** (a site shared by two species or partly empty) → :class:`StructureFileError` naming the site
  label, its species and occupancies; ``partial_occupancy="majority"`` resolves it explicitly (each site takes its most
  occupied species, and is removed when its total occupancy is below one half), and records what it did;
- **overlapping sites** (two atoms closer than ``min_distance``, typically split positions of a disordered site or a
  symmetry-equivalent copy of an atom on a special position) → error naming both sites and the distance;
- **missing hydrogens** (the CIF's ``_chemical_formula_sum`` has H, the sites have none: X-ray structures of hydrates
  and hydroxides) → error, unless ``allow_missing_hydrogens``.

CIFs are parsed by pymatgen (symmetry expansion, occupancies, site labels); other formats by ``ase.io.read``. Loading a
structure file never executes code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.exceptions import DatasetError

PARTIAL_OCCUPANCY = ("error", "majority")


class StructureFileError(DatasetError):
    """A structure file describes something that is not one well-defined periodic cell (names file and site)."""


@dataclass
class ReadSettings:
    """How to read and check structure files.

    ``supercell``: repetitions along a, b, c (``(2, 2, 1)``), or None. ``partial_occupancy``: ``"error"`` (default) or
    ``"majority"`` (see module docstring). ``min_distance``: Å; closer pairs are overlapping sites (0.7 Å is below every
    real bond, O–H 0.96 Å included, and above the split positions of disordered sites). ``allow_missing_hydrogens``:
    accept a CIF whose formula has H that its sites lack. ``occupancy_tolerance``: occupancies within this of 1 count as
    full. ``format``: an ``ase.io`` format name when the suffix does not say it. ``index``: frames of a multi-frame file
    (``":"`` all, ``"-1"`` the last).
    """

    supercell: tuple[int, int, int] | None = None
    partial_occupancy: str = "error"
    min_distance: float = 0.7
    allow_missing_hydrogens: bool = False
    occupancy_tolerance: float = 1e-3
    format: str | None = None
    index: str = ":"

    def check(self) -> None:
        if self.partial_occupancy not in PARTIAL_OCCUPANCY:
            raise DatasetError(
                f"partial_occupancy={self.partial_occupancy!r}: use one of {', '.join(PARTIAL_OCCUPANCY)}."
            )
        if self.supercell is not None:
            if len(self.supercell) != 3 or any(int(n) != n or n < 1 for n in self.supercell):
                raise DatasetError(f"supercell {self.supercell!r}: give three positive integers, e.g. 2x2x1.")
        if self.min_distance < 0:
            raise DatasetError(f"min_distance={self.min_distance}: must be ≥ 0 Å.")


def parse_supercell(text: str | None) -> tuple[int, int, int] | None:
    """``"2x2x1"`` / ``"2,2,1"`` / ``"2 2 1"`` → ``(2, 2, 1)``; None or empty → None."""
    if not text:
        return None
    parts = [part for part in re.split(r"[x×, ]+", text.strip().lower()) if part]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise DatasetError(f"supercell {text!r}: give three positive integers, e.g. 2x2x1.")
    return values  # type: ignore[return-value]


def read_structures(paths: str | Path | Sequence[str | Path], settings: ReadSettings | None = None) -> Dataset:
    """Read and check every structure in ``paths``; a :class:`Dataset` of unlabelled structures.

    Each structure's ``info`` gets ``id`` (file stem, plus the frame number for multi-frame files), ``source`` (the
    file) and, when ``partial_occupancy="majority"`` changed something, ``occupancy_resolved`` (what it did).
    """
    from atomtune.data.readers.paths import expand_paths

    settings = settings or ReadSettings()
    settings.check()
    structures: list[Atoms] = []
    for path in expand_paths(paths):
        if path.is_dir():
            raise StructureFileError(f"{path}: a folder; give structure files (CIF, POSCAR, …) or a glob.")
        frames = _read_cif(path, settings) if _is_cif(path, settings) else _read_with_ase(path, settings)
        for number, atoms in enumerate(frames):
            label = path.stem if len(frames) == 1 else f"{path.stem}-{number}"
            atoms.info.setdefault("id", label)
            atoms.info["source"] = str(path)
            check_overlaps(atoms, settings.min_distance, f"{path} ({label})")
            if settings.supercell is not None:
                atoms = _supercell(atoms, settings.supercell)
            structures.append(atoms)
    return Dataset(structures, name="structures")


def check_overlaps(atoms: Atoms, min_distance: float, where: str) -> None:
    """Raise :class:`StructureFileError` naming the closest pair of sites if any two atoms are within ``min_distance``
    (periodic images included)."""
    from ase.neighborlist import neighbor_list

    if len(atoms) < 2 and not atoms.pbc.any():
        return
    first, second, distance = neighbor_list("ijd", atoms, max(min_distance, 1e-6))
    if not len(distance):
        return
    k = int(np.argmin(distance))
    labels = atoms.arrays.get("site_label")
    name = (lambda i: f"{labels[i]} (atom {i})") if labels is not None else (lambda i: f"atom {i}")
    symbols = atoms.get_chemical_symbols()
    raise StructureFileError(
        f"{where}: overlapping sites {name(first[k])} {symbols[first[k]]} and {name(second[k])} {symbols[second[k]]} "
        f"are {distance[k]:.3f} Å apart (< {min_distance} Å): a disordered site given as split positions, or a "
        "duplicated atom. Keep one position per site (edit the file), or lower min_distance if this is real."
    )


# -- CIF (pymatgen) ---------------------------------------------------------------------------------------------------
def _is_cif(path: Path, settings: ReadSettings) -> bool:
    return (settings.format or "").lower() == "cif" or path.suffix.lower() in (".cif", ".mcif")


def _read_cif(path: Path, settings: ReadSettings) -> list[Atoms]:
    import warnings

    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns for every rounding of coordinates; errors are below
            parser = CifParser(str(path), occupancy_tolerance=1.0 + settings.occupancy_tolerance)
            structures = parser.parse_structures(primitive=False)
    except Exception as error:  # pymatgen raises ValueError / KeyError / its own errors for unreadable CIFs
        raise StructureFileError(f"{path}: pymatgen could not read it as a CIF ({type(error).__name__}: {error}).")
    formulas = [block.data.get("_chemical_formula_sum") for block in parser._cif.data.values()]
    frames = []
    for number, structure in enumerate(structures):
        where = f"{path}" if len(structures) == 1 else f"{path} (data block {number})"
        notes = []
        if not structure.is_ordered:
            block = list(parser._cif.data.values())[number] if number < len(parser._cif.data) else None
            structure, notes = _resolve_partial_occupancy(structure, settings, where, _partial_sites_in_file(block))
        formula = formulas[number] if number < len(formulas) else None
        _check_hydrogens(structure, formula, settings, where)
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.arrays["site_label"] = np.array([str(site.label) for site in structure], dtype=object).astype(str)
        for key in list(atoms.arrays):  # pymatgen's per-site properties that are not plain numbers do not travel
            if key not in ("numbers", "positions", "site_label") and atoms.arrays[key].dtype == object:
                del atoms.arrays[key]
        atoms.info.pop("occupancy", None)
        if notes:
            atoms.info["occupancy_resolved"] = "; ".join(notes)
        frames.append(atoms)
    return frames


def _partial_sites_in_file(block) -> list[str]:
    """``"Mg1 (Mg 0.6)"`` for each ``_atom_site`` row of a CIF block with occupancy below 1, as the file names it."""
    if block is None:
        return []
    labels = block.data.get("_atom_site_label") or []
    occupancies = block.data.get("_atom_site_occupancy") or []
    symbols = block.data.get("_atom_site_type_symbol") or labels
    rows = []
    for label, symbol, occupancy in zip(labels, symbols, occupancies):
        try:
            value = float(re.sub(r"\(.*\)", "", str(occupancy)))
        except ValueError:
            continue
        if value < 1.0 - 1e-6:
            rows.append(f"{label} ({symbol} {value:g})")
    return rows


def _resolve_partial_occupancy(structure, settings: ReadSettings, where: str, file_sites: Sequence[str] = ()):
    """Error naming the partially occupied sites, or (``"majority"``) the ordered structure and what was done."""
    from pymatgen.core import Structure

    partial = [site for site in structure if not _fully_occupied(site, settings.occupancy_tolerance)]
    if settings.partial_occupancy == "error":
        site = partial[0]
        occupancy = ", ".join(f"{element} {amount:.3g}" for element, amount in site.species.items())
        named = f" (in the file: {', '.join(file_sites)})" if file_sites else ""
        raise StructureFileError(
            f"{where}: site {' / '.join(dict.fromkeys([*(row.split()[0] for row in file_sites[:2]), str(site.label)]))} "
            f"at {np.round(site.frac_coords, 4).tolist()} is partially occupied ({occupancy}){named}. A simulation "
            "cell needs whole atoms: order the site (choose a configuration, "
            "e.g. with pymatgen's OrderDisorderedStructureTransformation or a supercell), or read with "
            "partial_occupancy='majority' (each site takes its most occupied species; sites under half occupied "
            "are removed)."
        )
    species, coordinates, labels, notes = [], [], [], []
    for site in structure:
        if _fully_occupied(site, settings.occupancy_tolerance):
            element = next(iter(site.species))
        else:
            element = max(site.species.items(), key=lambda item: item[1])[0]
            total = sum(site.species.values())
            if total < 0.5:
                notes.append(f"site {site.label} removed (occupancy {total:.3g})")
                continue
            notes.append(f"site {site.label} → {element} (was {site.species.formula})")
        species.append(element)
        coordinates.append(site.frac_coords)
        labels.append(site.label)
    ordered = Structure(structure.lattice, species, coordinates, labels=labels)
    return ordered, sorted(set(notes), key=notes.index)


def _fully_occupied(site, tolerance: float) -> bool:
    return len(site.species) == 1 and abs(sum(site.species.values()) - 1.0) <= tolerance


def _check_hydrogens(structure, formula: str | None, settings: ReadSettings, where: str) -> None:
    if settings.allow_missing_hydrogens or not formula:
        return
    declared = re.findall(r"\bH(\d*\.?\d*)\b", str(formula).replace("'", " "))
    if declared and not any(site.specie.symbol == "H" for site in structure):
        raise StructureFileError(
            f"{where}: the formula ({formula.strip()}) has hydrogen but no H site is given (X-ray structures usually "
            "omit H). Add the H positions (from a neutron study or by placing them with a model), or pass "
            "allow_missing_hydrogens to read the cell without them."
        )


# -- anything ASE reads --------------------------------------------------------------------------------------------------
def _read_with_ase(path: Path, settings: ReadSettings) -> list[Atoms]:
    from ase.io import read

    try:
        frames = read(str(path), index=settings.index, format=settings.format)
    except Exception as error:  # ASE raises many types for unreadable files
        raise StructureFileError(
            f"{path}: ASE could not read it ({type(error).__name__}: {error}); give format=… (an ase.io format name, "
            "e.g. vasp, lammps-data, xyz) if the file name does not say it."
        ) from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise StructureFileError(f"{path}: no structure in the file.")
    for atoms in frames:
        atoms.calc = None
    return frames


def _supercell(atoms: Atoms, repeat: Sequence[int]) -> Atoms:
    if not atoms.pbc.all() and any(n > 1 for n, periodic in zip(repeat, atoms.pbc) if not periodic):
        raise StructureFileError(
            f"{atoms.info.get('id')}: cannot repeat along a non-periodic axis (pbc={atoms.pbc.tolist()})."
        )
    label = atoms.info.get("id")
    bigger = atoms.repeat(tuple(int(n) for n in repeat))
    bigger.info["id"] = f"{label}-{'x'.join(str(int(n)) for n in repeat)}"
    bigger.info["supercell"] = list(int(n) for n in repeat)
    return bigger


__all__ = ["ReadSettings", "StructureFileError", "check_overlaps", "parse_supercell", "read_structures"]
