"""Readers: every format users arrive with becomes a :class:`~atomtune.data.dataset.Dataset` (first box of the flow).

One module per source: :mod:`.lematerial` (LeMat-Bulk, Hub streaming or parquet), :mod:`.mptrj` (MPtrj JSON),
:mod:`.vasp` (vasprun.xml / OUTCAR), :mod:`.oc22` (OC22 ASE db with tags); extxyz and plain ASE db go through
:meth:`Dataset.read`. :func:`iter_any` streams structures from any of them (curation filters millions of rows this way),
:func:`read_any` collects them. Labels always come out in ASE units and sign: eV, eV/Å, eV/Å³.

Example::

    from atomtune.data.readers import read_any
    data = read_any("MPtrj_2022.9_full.json", max_rows=1000)
    data = read_any("lematerial", config="compatible_pbe", max_rows=1000)   # online
    data = read_any("LeMat-Bulk/compatible_pbe/*.parquet")                  # offline
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.data.readers.paths import expand_paths
from atomtune.data.readers.records import ReadReport
from atomtune.exceptions import DatasetError

#: Names accepted by ``format=``.
FORMATS = ("lematerial", "mptrj", "vasp", "oc22", "extxyz", "ase-db")


def detect_format(source) -> str:
    """Which reader handles ``source`` (a Hub name, a path, a glob or a list of paths)."""
    from atomtune.data.readers.lematerial import is_hub_source
    from atomtune.data.readers.oc22 import looks_like_oc22

    if is_hub_source(source):
        return "lematerial"
    paths = expand_paths(source)
    first = paths[0]
    name = first.name.lower()
    if first.is_dir():
        if any(first.rglob("*.parquet")):
            return "lematerial"
        return "vasp"
    if name.endswith(".parquet"):
        return "lematerial"
    if name.endswith(".json"):
        return "mptrj"
    if name.endswith(".xml") or "vasprun" in name or "outcar" in name:
        return "vasp"
    if name.endswith(".db"):
        return "oc22" if looks_like_oc22(first) else "ase-db"
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    raise DatasetError(
        f"{first}: unknown format. Readers: LeMat-Bulk (.parquet or 'lematerial' for the Hub), MPtrj (.json), VASP "
        f"(vasprun.xml, OUTCAR, or a folder of runs), OC22/ASE db (.db), extxyz (.xyz/.extxyz); or pass format=…"
    )


def iter_any(
    source,
    format: str | None = None,
    report: ReadReport | None = None,
    require: Sequence[str] = ("energy", "forces"),
    keep_species: Callable[[list[str]], bool] | None = None,
    max_rows: int | None = None,
    **options,
) -> Iterator[Atoms]:
    """Stream labelled structures from any supported source (see :func:`detect_format`).

    ``report`` collects rows read and skipped (with reasons and first ids). ``keep_species`` drops structures by their
    species list before conversion. Source-specific ``options``: ``config`` (LeMat-Bulk), ``steps`` / ``energy``
    (VASP), ``energy_key`` / ``forces_key`` / ``stress_key`` (extxyz, ASE db).
    """
    report = report if report is not None else ReadReport()
    format = format or detect_format(source)
    common = {"report": report, "require": require, "keep_species": keep_species, "max_rows": max_rows}
    if format == "lematerial":
        from atomtune.data.readers.lematerial import iter_lematerial

        return iter_lematerial(source, **common, **_only(options, "config", "batch_size"))
    if format == "mptrj":
        from atomtune.data.readers.mptrj import iter_mptrj

        return (atoms for path in expand_paths(source) for atoms in iter_mptrj(path, **common))
    if format == "vasp":
        from atomtune.data.readers.vasp import iter_vasp

        return iter_vasp(source, **common, **_only(options, "steps", "energy"))
    if format == "oc22":
        from atomtune.data.readers.oc22 import iter_oc22

        return (atoms for path in expand_paths(source) for atoms in iter_oc22(path, **common))
    if format in ("extxyz", "ase-db"):
        return _iter_dataset_files(source, **common, **_only(options, "energy_key", "forces_key", "stress_key"))
    raise DatasetError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}.")


def read_any(source, report: ReadReport | None = None, **options) -> Dataset:
    """Every structure of ``source`` in one :class:`Dataset` (labels in eV, eV/Å, eV/Å³ ASE sign).

    Takes the options of :func:`iter_any`. Bad rows are skipped and counted in ``report``; if nothing is left, raises
    :class:`DatasetError` with the skip reasons.
    """
    report = report if report is not None else ReadReport()
    structures = list(iter_any(source, report=report, **options))
    if not structures:
        reasons = "; ".join(report.lines()[1:]).strip() or "the source has no structures"
        raise DatasetError(f"{source}: no usable structures ({reasons}).")
    name = Path(str(source)).stem if isinstance(source, (str, Path)) else "dataset"
    return Dataset(structures, name=name)


def _iter_dataset_files(source, report, require, keep_species, max_rows, **keys) -> Iterator[Atoms]:
    for path in expand_paths(source):
        report.source = path.name
        for atoms in Dataset.read(path, require=require, **keys):
            if not report.count_read(max_rows):
                return
            keep = keep_species is None or keep_species(atoms.get_chemical_symbols())
            kept = report.take(atoms.info.get("id", report.read - 1), _kept_or_none, atoms, keep)
            if kept is not None:
                yield kept


def _kept_or_none(atoms: Atoms, keep: bool) -> Atoms | None:
    return atoms if keep else None


def _only(options: dict, *names: str) -> dict:
    unknown = set(options) - {"config", "batch_size", "steps", "energy", "energy_key", "forces_key", "stress_key"}
    if unknown:
        raise DatasetError(f"unknown reader option(s) {', '.join(sorted(unknown))}.")
    return {name: options[name] for name in names if options.get(name) is not None}


__all__ = ["FORMATS", "ReadReport", "detect_format", "iter_any", "read_any"]
