"""Reader for LeMaterial's LeMat-Bulk (Hugging Face ``LeMaterial/LeMat-Bulk``): rows → labelled ``ase.Atoms``.

Online, the rows are streamed with Hugging Face ``datasets`` (``streaming=True``), so filtering the ~5 M rows of a
config never holds them in memory; offline, the same rows come from local parquet files, read one record batch at a
time with pyarrow. Either way the caller may pass ``keep_species``: a cheap test on a row's ``species_at_sites`` run
*before* the row is turned into Atoms (curation uses it so that the millions of rows it rejects cost almost nothing).

Units. ``energy`` is the uncorrected total energy in eV (``energy_corrected``, with the compatibility corrections, is
kept in ``info``), ``forces`` eV/Å, positions and lattice Å. ``stress_tensor`` is **kbar with VASP's sign** (positive
under compression) and is converted here to ASE's eV/Å³ (negative under compression). The dataset card gives no unit;
this comes from LeMaterial's own pipeline (github.com/LeMaterial/lematerial-fetcher), which copies each source's VASP
stress without conversion: Materials Project rows take emmet's task ``output.stress`` (documented in emmet as "the
stress on the cell in units of kB"), Alexandria rows ``_alexandria_stress_tensor`` (Alexandria's VASP output) and OQMD
rows the ``sxx … sxy`` of its VASP runs. Confidence: high for the Materials Project rows, good for Alexandria (the bulk
of the data), medium for the dataset as a whole, since no document states the unit outright.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.data.readers.paths import expand_paths
from atomtune.data.readers.records import ReadReport, build_structure, stress_from_vasp_kbar
from atomtune.exceptions import AtomtuneError, DatasetError

HUB_DATASET = "LeMaterial/LeMat-Bulk"
CONFIGS = ("compatible_pbe", "compatible_pbesol", "compatible_scan", "non_compatible")
#: What users may type for ``--source`` to mean the Hub rather than local files.
HUB_NAMES = ("lematerial", "lemat-bulk", "lemat_bulk", HUB_DATASET.lower(), "hub")

REQUIRED_COLUMNS = (
    "immutable_id",
    "lattice_vectors",
    "species_at_sites",
    "cartesian_site_positions",
    "energy",
    "forces",
)
OPTIONAL_COLUMNS = (
    "stress_tensor",
    "functional",
    "magnetic_moments",
    "energy_corrected",
    "chemical_formula_reduced",
    "cross_compatibility",
    "space_group_it_number",
)


def is_hub_source(source) -> bool:
    return isinstance(source, str) and source.strip().lower() in HUB_NAMES


def iter_lematerial(
    source: str | Path | Sequence[str | Path] = "lematerial",
    config: str = "compatible_pbe",
    report: ReadReport | None = None,
    require: Sequence[str] = ("energy", "forces"),
    keep_species: Callable[[list[str]], bool] | None = None,
    max_rows: int | None = None,
    batch_size: int = 1024,
) -> Iterator[Atoms]:
    """Stream LeMat-Bulk structures, labels in ASE units (stress converted from VASP kbar).

    ``source``: ``"lematerial"`` for the Hub (``config`` picks ``compatible_pbe``, ``compatible_pbesol``,
    ``compatible_scan`` or ``non_compatible``), or parquet file(s) / glob(s) with the same schema. ``keep_species``:
    rows whose ``species_at_sites`` it rejects are dropped before any conversion. ``max_rows``: stop after reading this
    many rows. Bad rows are skipped and counted in ``report``; a file without the LeMat-Bulk columns raises
    :class:`DatasetError`; an unreachable Hub raises :class:`AtomtuneError` saying how to work offline.
    """
    report = report if report is not None else ReadReport()
    if is_hub_source(source):
        if config not in CONFIGS:
            raise AtomtuneError(f"unknown LeMat-Bulk config {config!r}; use one of {', '.join(CONFIGS)}.")
        report.source = f"{HUB_DATASET}/{config}"
        rows = _hub_rows(config, report, keep_species, max_rows)
    else:
        paths = parquet_paths(source)
        report.source = paths[0].name if len(paths) == 1 else f"{len(paths)} parquet files ({paths[0].parent})"
        rows = _parquet_rows(paths, report, keep_species, max_rows, batch_size)
    label = report.source
    for row in rows:
        record_id = row.get("immutable_id") or row.get("id") or f"row {report.read}"
        atoms = report.take(record_id, row_to_atoms, row, label, require)
        if atoms is not None:
            yield atoms


def read_lematerial(source="lematerial", config: str = "compatible_pbe", report: ReadReport | None = None, **options):
    """:func:`iter_lematerial` collected into a :class:`Dataset`."""
    report = report if report is not None else ReadReport()
    structures = list(iter_lematerial(source, config=config, report=report, **options))
    return Dataset(structures, name=f"lematerial-{config}" if is_hub_source(source) else "lematerial")


def row_to_atoms(row: dict, source: str, require: Sequence[str] = ("energy", "forces")) -> Atoms:
    """One LeMat-Bulk row → labelled Atoms (raises :class:`SkippedRecord` for a bad row)."""
    info = {"source": source}
    for column, key in (
        ("functional", "functional"),
        ("chemical_formula_reduced", "formula"),
        ("energy_corrected", "energy_corrected"),
        ("space_group_it_number", "space_group"),
    ):
        if row.get(column) is not None:
            info[key] = row[column]
    return build_structure(
        row.get("immutable_id") or row.get("id"),
        row.get("species_at_sites"),
        row.get("cartesian_site_positions"),
        row.get("lattice_vectors"),
        energy=row.get("energy"),
        forces=row.get("forces"),
        stress=stress_from_vasp_kbar(row.get("stress_tensor")),
        require=require,
        info=info,
        magmoms=row.get("magnetic_moments"),
    )


def parquet_paths(source) -> list[Path]:
    """Parquet files named by ``source`` (files, globs, folders searched recursively)."""
    paths: list[Path] = []
    for path in expand_paths(source):
        found = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not found:
            raise DatasetError(f"{path}: folder has no .parquet files.")
        paths.extend(found)
    return paths


def _hub_rows(config: str, report: ReadReport, keep_species, max_rows) -> Iterator[dict]:
    try:
        from datasets import load_dataset

        rows = iter(load_dataset(HUB_DATASET, config, split="train", streaming=True))
    except Exception as error:  # network, auth, missing cache: one message with the offline route
        raise _hub_error(config, error, report.read) from error
    while max_rows is None or report.read < max_rows:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:  # connection lost part-way: say how far we got
            raise _hub_error(config, error, report.read) from error
        report.read += 1
        species = row.get("species_at_sites")
        if keep_species is not None and isinstance(species, list) and not keep_species(species):
            continue
        yield row


def _hub_error(config: str, error: Exception, rows_read: int) -> AtomtuneError:
    where = f" after {rows_read:,} rows" if rows_read else ""
    return AtomtuneError(
        f"could not stream {HUB_DATASET} ({config}) from the Hugging Face Hub{where} "
        f"({type(error).__name__}: {error}). Without internet, download the parquet files of config {config} once "
        f"(https://huggingface.co/datasets/{HUB_DATASET}, e.g. `huggingface-cli download {HUB_DATASET} "
        f"--repo-type dataset --local-dir LeMat-Bulk`) and pass them: "
        f"--source 'LeMat-Bulk/<{config} folder>/*.parquet'."
    )


def _parquet_rows(paths: list[Path], report: ReadReport, keep_species, max_rows, batch_size: int) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            parquet = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
            raise DatasetError(
                f"{path}: not a parquet file ({type(error).__name__}: {error}). LeMat-Bulk files are parquet; "
                f"other formats have their own readers (MPtrj .json, vasprun.xml/OUTCAR, ASE .db, extxyz)."
            ) from error
        names = set(parquet.schema_arrow.names)
        missing = [column for column in REQUIRED_COLUMNS if column not in names]
        if missing:
            raise DatasetError(
                f"{path}: not in the LeMat-Bulk layout: missing column(s) {', '.join(missing)} "
                f"(found {', '.join(sorted(names))})."
            )
        columns = [column for column in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if column in names]
        try:
            for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
                # Only the species column is converted for every row; the rest only for rows that pass keep_species.
                species_column = batch.column("species_at_sites").to_pylist()
                for index, species in enumerate(species_column):
                    if not report.count_read(max_rows):
                        return
                    if keep_species is not None and isinstance(species, list) and not keep_species(species):
                        continue
                    yield {name: batch.column(name)[index].as_py() for name in columns}
        except (OSError, pa.ArrowException) as error:  # a truncated or corrupt file: name it
            raise DatasetError(f"{path}: could not read parquet data ({error}). Re-download this file.") from error
