"""Reader for MPtrj JSON, the CHGNet / MACE-MP training set layout: material id → frame id → one labelled frame.

Each frame holds a pymatgen ``Structure`` dict (``structure``), ``uncorrected_total_energy`` (eV, total, no MP2020
correction: the energy that matches the forces), ``force`` (eV/Å), ``stress`` (**kbar, VASP sign**: positive under
compression), ``magmom`` (μB per site or null) and bookkeeping (``corrected_total_energy``, ``ef_per_atom``,
``bandgap``, ``mp_id``). Stress is converted to ASE's eV/Å³ (×−0.1 GPa/kbar), as in the SevenNet/MACE conversions of
MPtrj. MPtrj mixes GGA (PBE) and GGA+U frames; ``info["functional"]`` is ``"pbe"`` for all of them.

The full file is ~11 GB, so it is parsed one material at a time (:func:`_materials`) instead of ``json.load``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.data.readers.records import ReadReport, SkippedRecord, build_structure, stress_from_vasp_kbar
from atomtune.exceptions import DatasetError

#: Frame fields copied into ``atoms.info`` when present.
INFO_FIELDS = ("corrected_total_energy", "energy_per_atom", "ef_per_atom", "e_per_atom_relaxed", "bandgap")

#: Characters read at a time while streaming the JSON.
CHUNK_CHARS = 1 << 20


def iter_mptrj(
    path: str | Path,
    report: ReadReport | None = None,
    require: Sequence[str] = ("energy", "forces"),
    keep_species: Callable[[list[str]], bool] | None = None,
    max_rows: int | None = None,
) -> Iterator[Atoms]:
    """Stream the frames of an MPtrj JSON file as labelled Atoms (ASE units; stress converted from kbar).

    Bad frames are skipped and counted in ``report``; a file that is not JSON, or whose first material is not in the
    MPtrj layout, raises :class:`DatasetError`. ``max_rows`` counts frames.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    report.source = path.name
    if not path.exists():
        raise DatasetError(f"{path}: file not found.")
    first = True
    for material_id, frames in _materials(path):
        if first:
            _check_layout(path, material_id, frames)
            first = False
        if not isinstance(frames, dict):
            report.read += 1
            report.skip("malformed material", material_id)
            continue
        for frame_id, frame in frames.items():
            if not report.count_read(max_rows):
                return
            atoms = report.take(
                frame_id, _frame_to_atoms, frame_id, material_id, frame, path.name, require, keep_species
            )
            if atoms is not None:
                yield atoms


def read_mptrj(path: str | Path, report: ReadReport | None = None, **options) -> Dataset:
    """:func:`iter_mptrj` collected into a :class:`Dataset`."""
    return Dataset(list(iter_mptrj(path, report=report, **options)), name=Path(path).stem)


def _frame_to_atoms(frame_id, material_id, frame, source, require, keep_species) -> Atoms | None:
    if not isinstance(frame, dict):
        raise SkippedRecord("malformed frame")
    species, positions, cell = _structure_arrays(frame)
    if keep_species is not None and not keep_species(species):
        return None
    info = {"source": source, "material_id": frame.get("mp_id") or material_id, "functional": "pbe"}
    info.update({key: frame[key] for key in INFO_FIELDS if frame.get(key) is not None})
    return build_structure(
        frame_id,
        species,
        positions,
        cell,
        energy=frame.get("uncorrected_total_energy"),
        forces=frame.get("force"),
        stress=stress_from_vasp_kbar(frame.get("stress")),
        require=require,
        info=info,
        magmoms=frame.get("magmom"),
    )


def _structure_arrays(frame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Species, Cartesian positions (Å) and lattice (Å) from a pymatgen Structure dict (ordered sites only)."""
    try:
        structure = frame["structure"]
        cell = np.asarray(structure["lattice"]["matrix"], dtype=float)
        species, positions = [], []
        for site in structure["sites"]:
            occupancy = site["species"]
            if len(occupancy) != 1 or abs(float(occupancy[0].get("occu", 1.0)) - 1.0) > 1e-6:
                raise SkippedRecord("disordered site", "MPtrj frames are ordered; this site has partial occupancy")
            species.append(occupancy[0]["element"])
            if "xyz" in site:
                positions.append(site["xyz"])
            else:
                positions.append(np.asarray(site["abc"], dtype=float) @ cell)
        return species, np.asarray(positions, dtype=float), cell
    except SkippedRecord:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise SkippedRecord("malformed structure", "not a pymatgen Structure dict") from None


def _check_layout(path: Path, material_id, frames) -> None:
    """A whole file in another layout is one clear error, not millions of skips."""
    if isinstance(frames, dict) and frames:
        first = next(iter(frames.values()))
        if isinstance(first, dict) and "structure" in first:
            return
    raise DatasetError(
        f"{path}: not in the MPtrj layout (material id → frame id → {{structure, uncorrected_total_energy, force, "
        f"stress, magmom}}); the first entry {material_id!r} does not look like that. Other formats have their own "
        f"readers (LeMat-Bulk parquet, vasprun.xml/OUTCAR, ASE .db, extxyz)."
    )


def _materials(path: Path) -> Iterator[tuple[str, object]]:
    """Yield ``(key, value)`` of the top-level JSON object one entry at a time (memory ~ one material)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer = handle.read(CHUNK_CHARS)
        position = _skip_space(buffer, 0)
        if position >= len(buffer) or buffer[position] != "{":
            raise DatasetError(f"{path}: not a JSON object; MPtrj files are {{material id: {{frame id: frame}}}}.")
        position += 1
        exhausted = False
        expect_key = True
        while True:
            position = _skip_space(buffer, position)
            if position < len(buffer) and buffer[position] == "}":
                return
            if position < len(buffer) and buffer[position] == "," and not expect_key:
                position += 1
                expect_key = True
                continue
            try:
                key, after_key = decoder.raw_decode(buffer, position)
                colon = _skip_space(buffer, after_key)
                if colon >= len(buffer):
                    raise json.JSONDecodeError("incomplete", buffer, colon)
                if buffer[colon] != ":":
                    raise DatasetError(f"{path}: malformed JSON near character {colon} (expected ':').")
                value, end = decoder.raw_decode(buffer, _skip_space(buffer, colon + 1))
            except json.JSONDecodeError as error:
                if exhausted:
                    raise DatasetError(f"{path}: malformed or truncated JSON ({error.msg}).") from error
                more = handle.read(max(CHUNK_CHARS, len(buffer)))  # grow geometrically: O(n) total for big entries
                exhausted = not more
                buffer = buffer[position:] + more
                position = 0
                continue
            yield key, value
            expect_key = False
            position = end
            if len(buffer) - position < CHUNK_CHARS // 2 and not exhausted:  # top up; compact only now and then
                more = handle.read(CHUNK_CHARS)
                exhausted = not more
                buffer = buffer[position:] + more
                position = 0


def _skip_space(buffer: str, position: int) -> int:
    while position < len(buffer) and buffer[position] in " \t\r\n":
        position += 1
    return position
