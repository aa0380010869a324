"""From one source record to a labelled ``ase.Atoms``, or a counted skip: the checks every reader shares.

Readers stream millions of records; a bad one (missing forces or energy, a malformed lattice, an unknown species, a
duplicated id) must not stop the stream. :func:`build_structure` raises :class:`SkippedRecord` with a short reason, the
reader records it in a :class:`ReadReport` (counts per reason plus the first few ids) and carries on. A whole file in
the wrong format is different: that is one :class:`atomtune.exceptions.DatasetError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.units import GPa

from atomtune.data.dataset import MIN_DISTANCE, attach_labels, closest_distance

#: 1 kbar = 0.1 GPa, in eV/Å³.
KBAR_IN_EV_PER_A3 = 0.1 * GPa

#: Ids kept per skip reason for the report.
EXAMPLES_KEPT = 5


def vasp_kbar_to_ase_stress(stress_kbar) -> np.ndarray:
    """VASP stress (kbar, positive under compression: VASP prints a pressure) → ASE stress (eV/Å³, negative under
    compression), the same 3×3 shape. ASE's own VASP readers apply the same factor, ``-0.1 * ase.units.GPa``."""
    return -KBAR_IN_EV_PER_A3 * np.asarray(stress_kbar, dtype=float)


def stress_from_vasp_kbar(stress_kbar) -> np.ndarray | None:
    """:func:`vasp_kbar_to_ase_stress` for a source record: ``None`` stays ``None``, a non-numeric or ragged value
    is a skipped record (``malformed stress``)."""
    if stress_kbar is None:
        return None
    try:
        return vasp_kbar_to_ase_stress(stress_kbar)
    except (TypeError, ValueError):
        raise SkippedRecord("malformed stress", "not a 3×3 array of numbers") from None


class SkippedRecord(Exception):
    """One record that cannot become a labelled structure; ``reason`` is the short key counted in the report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class ReadReport:
    """What a reader saw: records read, structures produced, and records skipped by reason (with the first ids)."""

    source: str = ""
    read: int = 0
    produced: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    _seen_ids: set = field(default_factory=set, repr=False)

    def skip(self, reason: str, record_id) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(str(record_id))

    def take(self, record_id, build: Callable[..., Atoms | None], *arguments) -> Atoms | None:
        """Run ``build(*arguments)`` for one record: count it as produced, or as skipped for the reason it raised
        (:class:`SkippedRecord`) or for a duplicated id. ``None`` when skipped, or when ``build`` itself returned
        ``None`` (a record a ``keep_species`` test dropped, which is not a skip)."""
        try:
            atoms = build(*arguments)
        except SkippedRecord as skipped:
            self.skip(skipped.reason, record_id)
            return None
        if atoms is None:
            return None
        if self.is_duplicate(record_id):
            self.skip("duplicated id", record_id)
            return None
        self.produced += 1
        return atoms

    def count_read(self, max_rows: int | None) -> bool:
        """Count one more record read and return True, or return False (counting nothing) once ``max_rows`` records
        have been read: the readers' ``max_rows`` limit (None: no limit)."""
        if max_rows is not None and self.read >= max_rows:
            return False
        self.read += 1
        return True

    def is_duplicate(self, record_id) -> bool:
        """True if ``record_id`` was seen before in this read (the caller skips it); records it otherwise."""
        key = str(record_id)
        if key in self._seen_ids:
            return True
        self._seen_ids.add(key)
        return False

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "produced": self.produced,
            "skipped": dict(self.skipped),
            "skipped_examples": {reason: list(ids) for reason, ids in self.examples.items()},
        }

    def lines(self) -> list[str]:
        """Human-readable lines: one per skip reason with its first ids."""
        lines = [f"{self.source}: read {self.read:,} records, {self.produced:,} structures"]
        for reason, count in sorted(self.skipped.items(), key=lambda item: -item[1]):
            lines.append(f"  skipped {count:,} ({reason}); first: {', '.join(self.examples.get(reason, []))}")
        return lines


def build_structure(
    record_id: str,
    species: Sequence[str] | None,
    positions,
    cell,
    energy=None,
    forces=None,
    stress=None,
    pbc=True,
    require: Sequence[str] = ("energy", "forces"),
    info: dict | None = None,
    magmoms=None,
) -> Atoms:
    """A labelled ``Atoms`` from raw arrays (Å, eV, eV/Å, stress already in eV/Å³ with ASE sign, 3×3 or Voigt).

    Raises :class:`SkippedRecord` with reason ``unknown species``, ``malformed positions``, ``malformed lattice``,
    ``missing energy`` / ``missing forces`` / ``missing stress`` (those in ``require``), ``malformed energy``,
    ``malformed forces``,
    ``malformed stress``, ``non-finite labels`` or ``overlapping atoms`` (closer than 0.5 Å).
    ``magmoms``: DFT magnetic moments (μB per site), kept in ``atoms.arrays["magmoms"]`` as a label, not an input.
    """
    if species is None or len(species) == 0:
        raise SkippedRecord("malformed positions", "no sites")
    unknown = sorted({str(s) for s in species if s not in atomic_numbers or s == "X"})
    if unknown:
        raise SkippedRecord("unknown species", ", ".join(unknown))
    positions = _float_array(positions)
    if positions is None or positions.shape != (len(species), 3) or not np.all(np.isfinite(positions)):
        raise SkippedRecord("malformed positions", f"expected ({len(species)}, 3)")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = _float_array(cell)
    if cell is None or cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        raise SkippedRecord("malformed lattice", "expected 3×3 finite lattice vectors")
    if pbc.all() and abs(np.linalg.det(cell)) < 1e-6:
        raise SkippedRecord("malformed lattice", "zero cell volume")
    if energy is None and "energy" in require:
        raise SkippedRecord("missing energy")
    if forces is None and "forces" in require:
        raise SkippedRecord("missing forces")
    if stress is None and "stress" in require:
        raise SkippedRecord("missing stress")
    if energy is not None:
        try:
            energy = float(energy)
        except (TypeError, ValueError):
            raise SkippedRecord("malformed energy", f"{energy!r} is not a number") from None
    if forces is not None:
        forces = _float_array(forces)
        if forces is None or forces.shape != (len(species), 3):
            raise SkippedRecord("malformed forces", f"expected ({len(species)}, 3)")
    if stress is not None:
        stress = _float_array(stress)
        if stress is None or stress.shape not in ((3, 3), (6,)):
            raise SkippedRecord("malformed stress", "expected 3×3 or Voigt 6")
    for value in (energy, forces, stress):
        if value is not None and not np.all(np.isfinite(np.asarray(value, dtype=float))):
            raise SkippedRecord("non-finite labels", "NaN or inf in energy, forces or stress")
    atoms = Atoms(symbols=list(species), positions=positions, cell=cell, pbc=pbc)
    atoms.info.update(info or {})
    atoms.info["id"] = str(record_id)
    attach_labels(atoms, energy, forces, stress)
    if magmoms is not None and np.shape(magmoms) == (len(atoms),):
        atoms.arrays["magmoms"] = np.asarray(magmoms, dtype=float)
    closest = closest_distance(atoms)
    if closest < MIN_DISTANCE:
        raise SkippedRecord("overlapping atoms", f"two atoms {closest:.3f} Å apart (< {MIN_DISTANCE} Å)")
    return atoms


def _float_array(value) -> np.ndarray | None:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):  # ragged lists, None inside, strings
        return None
