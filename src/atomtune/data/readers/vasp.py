"""Reader for VASP outputs (``vasprun.xml`` or ``OUTCAR``), every ionic step or the last one, through ASE's parsers.

ASE already converts VASP's units: stress from kbar (VASP sign, positive under compression) to eV/Å³ with ASE's sign,
and ``energy`` is the energy extrapolated to σ → 0 (``free_energy``, the force-consistent one, can be chosen instead).
A folder is searched recursively for ``vasprun.xml`` files (``OUTCAR`` where a folder has no vasprun.xml), so a tree of
relaxations reads in one call. Each frame's id is ``<file relative to the folder>:<ionic step>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ase import Atoms

from atomtune.data.dataset import Dataset, labels_of
from atomtune.data.readers.paths import expand_paths
from atomtune.data.readers.records import ReadReport, build_structure
from atomtune.exceptions import DatasetError

ENERGIES = ("energy", "free_energy")


def vasp_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """vasprun.xml / OUTCAR files named by ``source`` (files, globs, or folders searched recursively; in a folder with
    both, vasprun.xml wins)."""
    files: list[Path] = []
    for path in expand_paths(source):
        if path.is_dir():
            runs = sorted(path.rglob("vasprun*.xml"))
            folders_with_vasprun = {run.parent for run in runs}
            outcars = [out for out in sorted(path.rglob("OUTCAR*")) if out.parent not in folders_with_vasprun]
            files.extend(sorted(runs + outcars))
        else:
            files.append(path)
    if not files:
        raise DatasetError(f"{source}: no vasprun.xml or OUTCAR found.")
    return files


def iter_vasp(
    source: str | Path | Sequence[str | Path],
    steps: str = "all",
    energy: str = "energy",
    report: ReadReport | None = None,
    require: Sequence[str] = ("energy", "forces"),
    keep_species: Callable[[list[str]], bool] | None = None,
    max_rows: int | None = None,
) -> Iterator[Atoms]:
    """Stream labelled frames from VASP outputs.

    ``steps``: ``"all"`` ionic steps or ``"last"``. ``energy``: ``"energy"`` (σ → 0) or ``"free_energy"``. A file ASE
    cannot parse raises :class:`DatasetError` naming it; frames without the required labels are skipped and counted.
    """
    if steps not in ("all", "last"):
        raise DatasetError(f"steps={steps!r}: use 'all' or 'last'.")
    if energy not in ENERGIES:
        raise DatasetError(f"energy={energy!r}: use one of {', '.join(ENERGIES)}.")
    report = report if report is not None else ReadReport()
    files = vasp_files(source)
    root = Path(source) if isinstance(source, (str, Path)) and Path(source).is_dir() else None
    report.source = str(source) if len(files) > 1 else files[0].name
    for path in files:
        name = str(path.relative_to(root)) if root is not None else path.name
        for step, frame in _frames(path, steps):
            if not report.count_read(max_rows):
                return
            record_id = f"{name}:{step}"
            atoms = report.take(record_id, _frame_to_atoms, frame, record_id, name, step, energy, require, keep_species)
            if atoms is not None:
                yield atoms


def read_vasp(source, steps: str = "all", energy: str = "energy", report: ReadReport | None = None, **options):
    """:func:`iter_vasp` collected into a :class:`Dataset`."""
    structures = list(iter_vasp(source, steps=steps, energy=energy, report=report, **options))
    return Dataset(structures, name="vasp")


def _frames(path: Path, steps: str) -> list[tuple[int, Atoms]]:
    from ase.io import read

    lowered = path.name.lower()
    if lowered.endswith(".xml") or "vasprun" in lowered:
        format_name = "vasp-xml"
    elif "outcar" in lowered:
        format_name = "vasp-out"
    else:
        raise DatasetError(f"{path}: not a VASP output name (expected vasprun*.xml or OUTCAR*).")
    try:
        frames = read(path, index=":", format=format_name)
    except Exception as error:  # ASE raises ParseError, ElementTree.ParseError, IndexError … for a broken file
        raise DatasetError(
            f"{path}: could not read as {format_name} ({type(error).__name__}: {error}). Is the run complete and the "
            f"file a {'vasprun.xml' if format_name == 'vasp-xml' else 'VASP OUTCAR'}?"
        ) from error
    if not frames:
        raise DatasetError(f"{path}: no ionic steps found.")
    numbered = list(enumerate(frames))
    return numbered[-1:] if steps == "last" else numbered


def _frame_to_atoms(frame: Atoms, record_id: str, source: str, step: int, energy: str, require, keep_species):
    if keep_species is not None and not keep_species(frame.get_chemical_symbols()):
        return None
    results = frame.calc.results if frame.calc is not None else {}
    labels = labels_of(frame)
    return build_structure(
        record_id,
        frame.get_chemical_symbols(),
        frame.positions,
        frame.cell[:],
        energy=results.get(energy),
        forces=labels.forces,
        stress=labels.stress,
        pbc=frame.pbc,
        require=require,
        info={"source": source, "ionic_step": step},
        magmoms=results.get("magmoms"),
    )
