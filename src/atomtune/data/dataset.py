"""Labelled structures: the Dataset every other box reads and writes.

A Dataset is a list of ``ase.Atoms``. Reference labels live in a ``SinglePointCalculator`` on each Atoms (so
``atoms.get_potential_energy()`` is the DFT energy, as in ASE), in ASE units and sign: energy in eV (total), forces in eV/Å,
stress in eV/Å³ as a Voigt 6-vector with ASE's sign (negative under compression). ``atoms.info`` carries ``id``, ``source``
and ``split``. Files are extxyz or ASE db; the label keys inside files are configurable (``REF_energy`` … is the common
convention of fitting codes and the default when writing).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa

from atomtune.exceptions import DatasetError

#: Keys tried, in order, when a file's label keys are not given.
ENERGY_KEYS = ("REF_energy", "energy", "DFT_energy", "dft_energy", "free_energy")
FORCES_KEYS = ("REF_forces", "forces", "DFT_forces", "dft_forces")
STRESS_KEYS = ("REF_stress", "stress", "DFT_stress", "dft_stress")

#: Atoms closer than this (Å) are almost certainly a broken structure (overlapping sites, wrong units).
MIN_DISTANCE = 0.5

#: Stress labels above this (GPa, largest |component|) are refused on read unless ``max_stress_gpa`` says otherwise.
#: DFT training sets (MPtrj, Alexandria, OMat24's rattled and AIMD frames) stay within a few hundred GPa; a file holding
#: VASP's kBar (or GPa) numbers under an eV/Å³ key is 1602× (160×) too large, so a 1 GPa stress reads as 1602 GPa.
MAX_STRESS_GPA = 1000.0
#: Stress labels above this (GPa) are named in a warning: possible under strong compression, but more often a unit slip.
STRESS_WARNING_GPA = 200.0
#: How far a 3×3 stress may be from symmetric: this fraction of its largest component, or this many eV/Å³ (0.16 MPa),
#: whichever is larger (DFT stresses are symmetric to rounding; an asymmetric one is a wrong layout or a wrong key).
STRESS_ASYMMETRY_RELATIVE = 1e-3
STRESS_ASYMMETRY_ABSOLUTE = 1e-6
#: Periodic cell vectors whose normalised volume (volume over the product of their lengths: 1 for orthogonal vectors,
#: the sine of the angle between two) is below this are linearly dependent: the cell is singular.
MIN_NORMALISED_CELL_VOLUME = 1e-6


@dataclass(frozen=True)
class Labels:
    """Reference labels of one structure. ``stress`` is Voigt (xx, yy, zz, yz, xz, xy) in eV/Å³, ASE sign."""

    energy: float | None
    forces: np.ndarray | None
    stress: np.ndarray | None


def labels_of(atoms: Atoms) -> Labels:
    """The reference labels attached to ``atoms`` (None for what is missing)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy")
    forces = results.get("forces")
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (3, 3):
            stress = full_3x3_to_voigt_6_stress(stress)
    return Labels(
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=float),
        stress=stress,
    )


def attach_labels(atoms: Atoms, energy=None, forces=None, stress=None) -> Atoms:
    """Attach reference labels (eV, eV/Å, eV/Å³ ASE sign) to ``atoms`` in place and return it.

    ``stress``: Voigt 6-vector, 3×3 matrix or 9 numbers (a flattened 3×3, as extxyz files often store it); see
    :func:`voigt_stress`.
    """
    results = {}
    if energy is not None:
        results["energy"] = float(energy)
    if forces is not None:
        results["forces"] = np.asarray(forces, dtype=float)
    if stress is not None:
        where = f"structure {atoms.info.get('id', '?')} ({atoms.get_chemical_formula()})"
        results["stress"] = voigt_stress(stress, where)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def voigt_stress(stress, where: str = "stress") -> np.ndarray:
    """A stress label as ASE's Voigt 6-vector (xx, yy, zz, yz, xz, xy), units unchanged.

    Accepts 6 numbers (Voigt), a 3×3 matrix or 9 numbers (a 3×3 flattened row by row, e.g. extxyz ``REF_stress`` written
    by fitting codes). A 3×3 must be symmetric (see :data:`STRESS_ASYMMETRY_RELATIVE`): otherwise the numbers are not a
    stress in this layout and averaging σ_ij with σ_ji would hide that. Other shapes raise :class:`DatasetError` naming
    ``where``.
    """
    stress = np.asarray(stress, dtype=float)
    if stress.shape == (6,):
        return stress
    if stress.shape not in ((9,), (3, 3)):
        raise DatasetError(
            f"{where}: stress has {stress.size} numbers (shape {stress.shape}); expected 6 (Voigt xx yy zz yz xz xy), "
            f"a 3×3 matrix or 9 numbers (a flattened 3×3). Check the stress key and its layout in the file."
        )
    full = stress.reshape(3, 3)
    asymmetry = float(np.abs(full - full.T).max())
    tolerance = max(STRESS_ASYMMETRY_ABSOLUTE, STRESS_ASYMMETRY_RELATIVE * float(np.abs(full).max()))
    if asymmetry > tolerance:  # NaN passes here and is reported by Dataset.validate
        raise DatasetError(
            f"{where}: the 3×3 stress {full.tolist()} is not symmetric (|σ_ij − σ_ji| up to {asymmetry:.3g}, tolerance "
            f"{tolerance:.3g}). A stress tensor is symmetric: check that the key holds a stress (not a deformation "
            f"gradient or virial per atom) and that its 9 numbers are the 3×3 row by row."
        )
    return full_3x3_to_voigt_6_stress(full)


def structure_id(atoms: Atoms) -> str:
    """A content hash of a structure (numbers, positions, cell, pbc) for ids and caches."""
    digest = hashlib.sha1()
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(np.round(np.asarray(atoms.positions, dtype=float), 6).tobytes())
    digest.update(np.round(np.asarray(atoms.cell[:], dtype=float), 6).tobytes())
    digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return digest.hexdigest()[:16]


class Dataset(Sequence):
    """An ordered collection of labelled ``ase.Atoms``.

    Example::

        data = Dataset.read("train.extxyz")            # label keys found automatically
        parts = data.split({"train": 0.8, "test": 0.2}, by="composition", seed=0)
        parts["test"].write("test.extxyz")
    """

    def __init__(self, structures: Iterable[Atoms] = (), name: str = ""):
        self.structures: list[Atoms] = list(structures)
        self.name = name

    # -- sequence protocol -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.structures[index], name=self.name)
        if isinstance(index, (list, np.ndarray)):
            return Dataset([self.structures[i] for i in index], name=self.name)
        return self.structures[index]

    def __iter__(self) -> Iterator[Atoms]:
        return iter(self.structures)

    def __add__(self, other: Dataset) -> Dataset:
        return Dataset(self.structures + list(other), name=self.name or other.name)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} structures, {self.n_atoms} atoms, elements {self.elements})"

    # -- views -------------------------------------------------------------------------------------------------------
    @property
    def elements(self) -> list[str]:
        """Chemical symbols present, sorted by atomic number."""
        from ase.data import chemical_symbols

        numbers = sorted({int(z) for atoms in self.structures for z in atoms.numbers})
        return [chemical_symbols[z] for z in numbers]

    @property
    def n_atoms(self) -> int:
        return sum(len(atoms) for atoms in self.structures)

    def labels(self) -> list[Labels]:
        return [labels_of(atoms) for atoms in self.structures]

    @property
    def has_stress(self) -> bool:
        """True when every structure carries a stress label."""
        return bool(self.structures) and all(labels_of(a).stress is not None for a in self.structures)

    def ids(self) -> list[str]:
        return [str(atoms.info.get("id", i)) for i, atoms in enumerate(self.structures)]

    def fingerprint(self) -> str:
        """A hash of structures and labels: identical data ⇒ identical fingerprint (used by caches and model metadata)."""
        digest = hashlib.sha1()
        for atoms in self.structures:
            digest.update(structure_id(atoms).encode())
            lab = labels_of(atoms)
            for value in (lab.energy, lab.forces, lab.stress):
                if value is not None:
                    digest.update(np.round(np.asarray(value, dtype=float), 8).tobytes())
        return digest.hexdigest()[:16]

    # -- io ----------------------------------------------------------------------------------------------------------
    @classmethod
    def read(
        cls,
        path: str | Path,
        energy_key: str | None = None,
        forces_key: str | None = None,
        stress_key: str | None = None,
        index: str | int = ":",
        require: Sequence[str] = ("energy", "forces"),
        source: str | None = None,
        max_stress_gpa: float | None = MAX_STRESS_GPA,
    ) -> Dataset:
        """Read an extxyz (``.xyz``/``.extxyz``) or ASE db (``.db``) file and validate it.

        ``*_key``: where the labels are stored in the file (info/arrays keys or the ASE calculator's results); ``None``
        tries the common names (``REF_energy``, ``energy``, ``DFT_energy`` …). Stress may be stored as 6 (Voigt), 9 or
        3×3 numbers in eV/Å³. ``require``: labels every structure must have (``"stress"`` may be added).
        ``max_stress_gpa``: refuse stress labels above this (GPa; likely kBar stored as eV/Å³), None to accept any
        (structures above :data:`STRESS_WARNING_GPA` are still named in a warning). Raises :class:`DatasetError`
        naming the file and structure index.
        """
        path = Path(path)
        if not path.exists():
            raise DatasetError(f"{path}: file not found. Check the path (relative paths are from {Path.cwd()}).")
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: the file is empty. Give a dataset with at least one structure.")
        raw = _read_frames(path, index)
        if not raw:
            raise DatasetError(f"{path}: no structures found in the file.")
        label_info_keys = _all_keys(energy_key, stress_key)  # label keys stay out of info / arrays
        label_array_keys = _all_keys(forces_key)
        structures = []
        for i, atoms in enumerate(raw):
            where = f"{path}, structure {i}"
            energy = _find_label(atoms, energy_key, ENERGY_KEYS, "info", where)
            forces = _find_label(atoms, forces_key, FORCES_KEYS, "arrays", where)
            stress = _find_label(atoms, stress_key, STRESS_KEYS, "info", where)
            clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            clean.info.update({k: v for k, v in atoms.info.items() if k not in label_info_keys})
            for key, value in atoms.arrays.items():
                if key not in ("numbers", "positions") and key not in label_array_keys:
                    clean.arrays[key] = value
            if "initial_magmoms" in atoms.arrays:
                clean.set_initial_magnetic_moments(atoms.arrays["initial_magmoms"])
            clean.info.setdefault("id", f"{path.stem}-{i}")
            if source is not None or "source" not in clean.info:
                clean.info["source"] = source or path.name
            if stress is not None:
                stress = voigt_stress(stress, f"{where} (id {clean.info['id']})")
            attach_labels(clean, energy, forces, stress)
            structures.append(clean)
        dataset = cls(structures, name=path.stem)
        dataset.validate(require=require, where=str(path), max_stress_gpa=max_stress_gpa)
        return dataset

    def write(
        self,
        path: str | Path,
        energy_key: str = "REF_energy",
        forces_key: str = "REF_forces",
        stress_key: str = "REF_stress",
    ) -> Path:
        """Write to extxyz or ASE db (by suffix) with labels under the given keys. Writes atomically."""
        from ase.io import write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = []
        for atoms in self.structures:
            lab = labels_of(atoms)
            frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            frame.info.update({k: v for k, v in atoms.info.items() if _json_friendly(v)})
            for key, value in atoms.arrays.items():
                if key not in ("numbers", "positions"):
                    frame.arrays[key] = value
            if lab.energy is not None:
                frame.info[energy_key] = lab.energy
            if lab.stress is not None:
                frame.info[stress_key] = np.asarray(lab.stress)
            if lab.forces is not None:
                frame.arrays[forces_key] = np.asarray(lab.forces)
            frames.append(frame)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        if path.suffix == ".db":
            from ase.db import connect

            with connect(tmp, type="db") as db:
                for frame in frames:
                    info = {k: v for k, v in frame.info.items() if k not in (energy_key, stress_key)}
                    data = {key: frame.info[key] for key in (energy_key, stress_key) if key in frame.info}
                    if forces_key in frame.arrays:
                        data[forces_key] = frame.arrays[forces_key]
                    plain = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
                    db.write(plain, data={**data, "info": info})
        else:
            write(tmp, frames, format="extxyz")
        tmp.replace(path)
        return path

    # -- checks ------------------------------------------------------------------------------------------------------
    def validate(
        self,
        require: Sequence[str] = ("energy", "forces"),
        where: str | None = None,
        max_stress_gpa: float | None = MAX_STRESS_GPA,
    ) -> None:
        """Raise :class:`DatasetError` on the first broken structure (missing labels, NaN/inf, wrong shapes, a
        periodic direction without a cell vector or a singular cell, atoms closer than 0.5 Å), naming the file and the
        structure index; and on stress labels above ``max_stress_gpa`` GPa (None: no limit), naming the structures and
        the likely unit fix. Stresses above :data:`STRESS_WARNING_GPA` GPa are named in a warning."""
        where = where or (self.name or "dataset")
        if not self.structures:
            raise DatasetError(f"{where}: the dataset is empty.")
        large_stress: list[tuple[int, str, float]] = []  # (index, id, largest |σ| in GPa)
        for i, atoms in enumerate(self.structures):
            label = f"{where}, structure {i} (id {atoms.info.get('id', i)}, {atoms.get_chemical_formula()})"
            if len(atoms) == 0:
                raise DatasetError(f"{label}: has no atoms.")
            if not np.all(np.isfinite(atoms.positions)):
                raise DatasetError(f"{label}: positions contain NaN or inf.")
            problem = cell_problem(atoms)
            if problem:
                raise DatasetError(f"{label}: {problem}")
            lab = labels_of(atoms)
            for name in require:
                if getattr(lab, name) is None:
                    raise DatasetError(
                        f"{label}: no {name} label. Pass the key it is stored under (e.g. --{name}-key REF_{name}) "
                        f"or drop structures without it."
                    )
            if lab.energy is not None and not np.isfinite(lab.energy):
                raise DatasetError(f"{label}: energy is {lab.energy}. Remove this structure or fix its label.")
            if lab.forces is not None:
                if lab.forces.shape != (len(atoms), 3):
                    raise DatasetError(
                        f"{label}: forces have shape {lab.forces.shape}, expected ({len(atoms)}, 3)."
                    )
                if not np.all(np.isfinite(lab.forces)):
                    raise DatasetError(f"{label}: forces contain NaN or inf. Remove this structure or fix its labels.")
            if lab.stress is not None:
                if lab.stress.shape != (6,):
                    raise DatasetError(f"{label}: stress has shape {lab.stress.shape}, expected (6,) or (3, 3).")
                if not np.all(np.isfinite(lab.stress)):
                    raise DatasetError(f"{label}: stress contains NaN or inf. Remove this structure or fix its labels.")
                largest = float(np.abs(lab.stress).max()) / GPa
                if largest > STRESS_WARNING_GPA:
                    large_stress.append((i, str(atoms.info.get("id", i)), largest))
            distance = closest_distance(atoms)
            if distance < MIN_DISTANCE:
                raise DatasetError(
                    f"{label}: two atoms are {distance:.3f} Å apart (< {MIN_DISTANCE} Å). The structure is broken "
                    f"(overlapping sites or positions not in Å); remove or fix it."
                )
        _check_stress_magnitudes(large_stress, len(self.structures), where, max_stress_gpa)

    # -- splits ------------------------------------------------------------------------------------------------------
    def split(self, fractions: dict[str, float], by: str = "random", seed: int = 0) -> dict[str, Dataset]:
        """Deterministic split into named parts.

        ``by="random"`` shuffles structures; ``by="composition"`` shuffles reduced formulas so a formula never appears
        in two parts (no leakage of a composition from train into test). Fractions are normalised; every part named gets
        at least one structure (or formula) when there are enough. Each structure's ``info["split"]`` is set.
        """
        if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
            raise DatasetError(f"split fractions {fractions} must be non-negative and sum to more than 0.")
        rng = np.random.default_rng(seed)
        if by == "random":
            groups = [[i] for i in range(len(self))]
        elif by == "composition":
            by_formula: dict[str, list[int]] = {}
            for i, atoms in enumerate(self.structures):
                by_formula.setdefault(reduced_formula(atoms), []).append(i)
            groups = [by_formula[key] for key in sorted(by_formula)]
        else:
            raise DatasetError(f"unknown split method {by!r}: use 'random' or 'composition'.")
        order = rng.permutation(len(groups))
        total = sum(fractions.values())
        names = list(fractions)
        counts = [int(round(fractions[name] / total * len(groups))) for name in names]
        counts[-1] = len(groups) - sum(counts[:-1])
        if counts[-1] < 0:
            counts[-1] = 0
        parts: dict[str, Dataset] = {}
        start = 0
        for name, count in zip(names, counts):
            indices = [i for g in order[start : start + count] for i in groups[g]]
            start += count
            chosen = []
            for i in sorted(indices):
                atoms = self.structures[i].copy()
                atoms.calc = self.structures[i].calc
                atoms.info["split"] = name
                chosen.append(atoms)
            parts[name] = Dataset(chosen, name=f"{self.name}-{name}" if self.name else name)
        return parts


def _check_stress_magnitudes(
    large: list[tuple[int, str, float]], total: int, where: str, max_stress_gpa: float | None
) -> None:
    """Warn about stresses above :data:`STRESS_WARNING_GPA`; refuse those above ``max_stress_gpa`` (None: never)."""
    if not large:
        return
    refused = [entry for entry in large if max_stress_gpa is not None and entry[2] > max_stress_gpa]
    named = refused or large
    worst = max(named, key=lambda entry: entry[2])
    shown = ", ".join(f"{identifier} (structure {index}, {value:.3g} GPa)" for index, identifier, value in named[:5])
    more = f" and {len(named) - 5} more" if len(named) > 5 else ""
    fix = (
        f"Stress labels must be eV/Å³ with ASE's sign. These look like kBar (VASP's unit: σ[eV/Å³] = σ[kBar] × "
        f"{GPa / 10:.3g}, and negate VASP's sign) or GPa (σ[eV/Å³] = σ[GPa] × {GPa:.3g}) numbers stored as eV/Å³."
    )
    if refused:
        raise DatasetError(
            f"{where}: {len(refused)} of {total} structure(s) have stresses above {max_stress_gpa:g} GPa (largest "
            f"{worst[2]:.3g} GPa): {shown}{more}. {fix} If these stresses are real, read with max_stress_gpa=None "
            f"(or a larger bound)."
        )
    warnings.warn(
        f"{where}: {len(large)} of {total} structure(s) have stresses above {STRESS_WARNING_GPA:g} GPa (largest "
        f"{worst[2]:.3g} GPa): {shown}{more}. {fix} Ignore this if the structures really are that strained.",
        UserWarning,
        stacklevel=3,
    )


def cell_problem(atoms: Atoms) -> str | None:
    """Why ``atoms``'s periodic cell is unusable (a periodic direction with a zero cell vector, or periodic cell
    vectors that are linearly dependent), or None when it is fine. Non-periodic directions may have any vector."""
    periodic = np.flatnonzero(atoms.pbc)
    if not len(periodic):
        return None
    cell = np.asarray(atoms.cell[:], dtype=float)
    lengths = np.linalg.norm(cell, axis=1)
    pbc = [bool(flag) for flag in atoms.pbc]
    for axis in periodic:
        if not np.isfinite(lengths[axis]) or lengths[axis] < 1e-8:
            return (
                f"pbc is {pbc} but cell vector {axis + 1} is zero. Give the periodic cell (extxyz: Lattice=\"…\") "
                f"or set pbc to False along that direction (a molecule or cluster needs no cell)."
            )
    vectors = cell[periodic]
    # volume (area, length) spanned by the periodic vectors over the product of their lengths
    spanned = float(np.sqrt(max(np.linalg.det(vectors @ vectors.T), 0.0)))
    normalised = spanned / float(np.prod(lengths[periodic]))
    if normalised < MIN_NORMALISED_CELL_VOLUME:
        measure = ("length", "area", "volume")[len(periodic) - 1]
        return (
            f"the cell is singular: its periodic vectors {vectors.round(6).tolist()} are linearly dependent ({measure} "
            f"{spanned:.3g} Å^{len(periodic)}, {normalised:.2g} of that of orthogonal vectors of the same lengths). "
            f"Fix the cell (Lattice) of this structure or remove it."
        )
    return None


def _read_frames(path: Path, index) -> list[Atoms]:
    from ase.io import read

    try:
        if path.suffix == ".db":
            from ase.db import connect

            frames = []
            with connect(path) as db:
                for row in db.select():
                    atoms = row.toatoms()
                    data = dict(row.data) if row.get("data") else {}
                    atoms.info.update(data.pop("info", {}) if isinstance(data.get("info"), dict) else {})
                    for key, value in data.items():
                        value = np.asarray(value)
                        if value.ndim == 2 and value.shape[0] == len(atoms):
                            atoms.arrays[key] = value
                        else:
                            atoms.info[key] = value if value.ndim else value.item()
                    atoms.info.update(row.key_value_pairs)
                    frames.append(atoms)
            return frames
        return list(read(path, index=index))
    except DatasetError:
        raise
    except Exception as error:  # ASE raises many types for a malformed file; one clear message instead
        raise DatasetError(
            f"{path}: could not read as {'ASE db' if path.suffix == '.db' else 'extxyz'} ({type(error).__name__}: "
            f"{error}). Check the file format; other formats have readers in `atomtune data` (VASP, MPtrj, LeMaterial)."
        ) from error


def _find_label(atoms: Atoms, key: str | None, candidates: Sequence[str], place: str, where: str):
    results = atoms.calc.results if atoms.calc is not None else {}
    keys = [key] if key else list(candidates)
    for name in keys:
        if name in atoms.info:
            return np.asarray(atoms.info[name], dtype=float) if place == "arrays" else _as_float_or_array(atoms.info[name])
        if name in atoms.arrays:
            return np.asarray(atoms.arrays[name], dtype=float)
        if name in results:
            return _as_float_or_array(results[name])
    return None


def _as_float_or_array(value):
    array = np.asarray(value, dtype=float)
    return float(array) if array.ndim == 0 else array


def _all_keys(*given) -> set[str]:
    return set(ENERGY_KEYS) | set(FORCES_KEYS) | set(STRESS_KEYS) | {k for k in given if k}


def _json_friendly(value) -> bool:
    return isinstance(value, (str, int, float, bool, np.integer, np.floating, np.ndarray, list, tuple))


def closest_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance if below :data:`MIN_DISTANCE` (inf otherwise), images included.

    Fully periodic cells use matscipy's neighbour list: ~1000× faster than ASE's at this tiny cutoff (0.01 ms instead of
    15–20 ms per cell), which matters when millions of rows stream through a reader.
    """
    if atoms.pbc.any() and atoms.cell.rank < 3:
        return np.inf  # a periodic direction without a cell vector: nothing meaningful to measure
    if atoms.pbc.all():
        from matscipy.neighbours import neighbour_list

        distances = neighbour_list("d", atoms, MIN_DISTANCE * 1.01)
    else:
        from ase.neighborlist import neighbor_list

        distances = neighbor_list("d", atoms, MIN_DISTANCE * 1.01, self_interaction=False)
    return float(distances.min()) if len(distances) else np.inf


def reduced_formula(atoms: Atoms) -> str:
    """Reduced formula in metal order (``Ni3Al`` for Ni6Al2): the key of composition-grouped splits."""
    return atoms.symbols.formula.reduce()[0].format("metal")
