"""Reader for Open Catalyst OC22 slabs and adsorbate+slab systems stored as an ASE db (the format fairchem reads).

Every atom carries OC22's tag: 0 sub-surface (fixed in the DFT relaxation), 1 surface, 2 adsorbate; tags travel in
``atoms.arrays["tags"]``. Energies are OC22's DFT total energies (eV), which is what surface energies need (unlike
OC20's adsorption energies). The metadata needed for surface energies is normalised into ``atoms.info``:

- ``bulk_id``: the bulk the slab was cut from (OC22 ``bulk_id`` / ``bulk_mpid``), to find its bulk reference energy;
- ``miller_index``: the facet as three integers (OC22 ``miller_index``, fairchem ``millers``);
- ``system``: ``"slab"`` or ``"adslab"`` (explicit ``is_slab`` / ``system`` keys, else whether any atom is tagged 2);
- ``surface_area``: |a × b| of the cell in Å² (one face; a symmetric slab has two);
- ``n_adsorbate_atoms``, and where present ``slab_sid`` (the clean slab of an adslab), ``ads_symbols``, ``sid``/``fid``.

Metadata may sit in a row's key-value pairs or in its ``data`` dict; both are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.data.readers.records import ReadReport, SkippedRecord, build_structure
from atomtune.exceptions import DatasetError

TAGS = {0: "sub-surface", 1: "surface", 2: "adsorbate"}
BULK_ID_KEYS = ("bulk_id", "bulk_mpid", "mpid")
MILLER_KEYS = ("miller_index", "millers", "miller")
COPIED_KEYS = ("slab_sid", "ads_symbols", "nads", "traj_id", "bulk_symbols", "sid", "fid")


def iter_oc22(
    path: str | Path,
    report: ReadReport | None = None,
    require: Sequence[str] = ("energy", "forces"),
    keep_species: Callable[[list[str]], bool] | None = None,
    max_rows: int | None = None,
) -> Iterator[Atoms]:
    """Stream labelled OC22 structures (tags, bulk id, Miller index, slab/adslab) from an ASE db file.

    Rows with unknown tags, missing labels or broken geometry are skipped and counted in ``report``; a file that is not
    an ASE db raises :class:`DatasetError`.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    report.source = path.name
    for row in _rows(path):
        if not report.count_read(max_rows):
            return
        metadata = _metadata(row)
        record_id = _record_id(path, row, metadata)
        atoms = report.take(record_id, _row_to_atoms, row, metadata, record_id, path.name, require, keep_species)
        if atoms is not None:
            yield atoms


def read_oc22(path: str | Path, report: ReadReport | None = None, **options) -> Dataset:
    """:func:`iter_oc22` collected into a :class:`Dataset`."""
    return Dataset(list(iter_oc22(path, report=report, **options)), name=Path(path).stem)


def looks_like_oc22(path: str | Path, rows_checked: int = 20) -> bool:
    """True if an ASE db's first rows carry OC22 tags (any non-zero) or OC22 metadata keys."""
    try:
        for number, row in enumerate(_rows(Path(path))):
            if number >= rows_checked:
                break
            metadata = _metadata(row)
            if any(key in metadata for key in BULK_ID_KEYS + MILLER_KEYS) or np.any(row.toatoms().get_tags() != 0):
                return True
    except DatasetError:
        return False
    return False


def _rows(path: Path):
    from ase.db import connect

    if not path.exists():
        raise DatasetError(f"{path}: file not found.")
    try:
        with connect(path, type="db") as database:
            yield from database.select()
    except DatasetError:
        raise
    except Exception as error:  # sqlite3.DatabaseError for a file that is not a db
        raise DatasetError(
            f"{path}: not an ASE database ({type(error).__name__}: {error}). OC22 structures are read from the ASE db "
            f"format fairchem uses; convert LMDB or trajectories with ase.db first."
        ) from error


def _metadata(row) -> dict:
    metadata = dict(row.data) if row.get("data") else {}
    if isinstance(metadata.get("info"), dict):  # written by Dataset.write
        metadata.update(metadata.pop("info"))
    metadata.update(row.key_value_pairs)
    return metadata


def _record_id(path: Path, row, metadata: dict) -> str:
    if metadata.get("id") is not None:
        return str(metadata["id"])
    if metadata.get("sid") is not None:
        return f"{metadata['sid']}" + (f"-{metadata['fid']}" if metadata.get("fid") is not None else "")
    return f"{path.stem}-{row.id}"


def _row_to_atoms(row, metadata: dict, record_id: str, source: str, require, keep_species) -> Atoms | None:
    frame = row.toatoms()
    if keep_species is not None and not keep_species(frame.get_chemical_symbols()):
        return None
    results = frame.calc.results if frame.calc is not None else {}
    energy = results.get("energy", metadata.get("energy"))
    forces = results.get("forces", metadata.get("forces"))
    stress = results.get("stress", metadata.get("stress"))
    tags = np.asarray(frame.get_tags(), dtype=int)
    unknown = sorted(set(tags.tolist()) - set(TAGS))
    if unknown:
        raise SkippedRecord("unknown tags", f"tags {unknown}; OC22 uses 0 sub-surface, 1 surface, 2 adsorbate")
    info = {"source": source, "system": _system(metadata, tags), "n_adsorbate_atoms": int((tags == 2).sum())}
    bulk_id = next((metadata[key] for key in BULK_ID_KEYS if metadata.get(key) is not None), None)
    if bulk_id is not None:
        info["bulk_id"] = str(bulk_id)
    miller = next((metadata[key] for key in MILLER_KEYS if metadata.get(key) is not None), None)
    if miller is not None:
        info["miller_index"] = _miller_index(miller, record_id)
    for key in COPIED_KEYS:
        if metadata.get(key) is not None:
            value = metadata[key]
            info[key] = value if isinstance(value, (int, float, str)) else str(value)
    info["surface_area"] = float(np.linalg.norm(np.cross(frame.cell[0], frame.cell[1])))
    atoms = build_structure(
        record_id,
        frame.get_chemical_symbols(),
        frame.positions,
        frame.cell[:],
        energy=energy,
        forces=forces,
        stress=stress,
        pbc=frame.pbc,
        require=require,
        info=info,
    )
    atoms.set_tags(tags)
    if frame.constraints:
        atoms.set_constraint(frame.constraints)
    return atoms


def _system(metadata: dict, tags: np.ndarray) -> str:
    if metadata.get("system") in ("slab", "adslab"):
        return metadata["system"]
    if metadata.get("is_slab") is not None:
        return "slab" if bool(metadata["is_slab"]) else "adslab"
    return "adslab" if np.any(tags == 2) else "slab"


def _miller_index(value, record_id: str) -> np.ndarray:
    numbers = re.findall(r"-?\d+", value) if isinstance(value, str) else list(np.ravel(value))
    try:
        miller = np.asarray([int(n) for n in numbers], dtype=int)
    except (TypeError, ValueError):
        raise SkippedRecord("malformed Miller index", repr(value)) from None
    if miller.shape != (3,) and miller.shape != (4,):
        raise SkippedRecord("malformed Miller index", f"{value!r} (expected 3 integers, or 4 for hexagonal)")
    return miller
