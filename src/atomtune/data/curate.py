"""Curation: named, composable filters that cut a stream of structures down to the system a user cares about.

Sits between the readers and selection in the data box. Each filter reports how many structures it removed (and the
first few ids), so ``atomtune data curate`` prints a table a user can sanity-check. Filters that only need the
composition (:class:`CompositionFilter`) can be run on a source's raw species list before a row is even converted to
Atoms (:meth:`Curation.keep_species`), which is what makes curating LeMat-Bulk's millions of rows feasible.

The high-entropy-oxide preset (:func:`heo_filters`) encodes: contains O; at least 5 elements; every element other than
O is a metal; has forces — plus optional cation-sublattice entropy, equimolarity, an element blacklist (noble metals by
default), a size cap and a force-outlier cut.

Example::

    dataset, report = curate("LeMat-Bulk/compatible_pbe/*.parquet", heo_filters(min_cation_entropy=1.5,
                             exclude=NOBLE_METALS))
    print(report.to_markdown())
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from atomtune.data.dataset import Dataset, labels_of
from atomtune.data.readers.records import EXAMPLES_KEPT, ReadReport
from atomtune.exceptions import AtomtuneError

NOBLE_METALS = ("Ru", "Rh", "Pd", "Ag", "Os", "Ir", "Pt", "Au")

#: Metals as pymatgen's ``Element.is_metal`` defines them for Z ≤ 103 (alkali, alkaline-earth, transition,
#: post-transition, lanthanoid, actinoid); the metalloids B, Si, Ge, As, Sb, Te, Po are not metals. Written out so that
#: testing a composition costs a set lookup (tests/data/test_curate.py checks the list against pymatgen).
METALS = frozenset(
    "Li Be Na Mg Al K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Cs Ba La Ce Pr Nd Pm "
    "Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No "
    "Lr".split()
)


# -- filters ----------------------------------------------------------------------------------------------------------


class StructureFilter:
    """Keeps or drops one structure. Subclasses set ``name`` (shown in the report) and implement :meth:`keep`."""

    name = "filter"

    def keep(self, atoms: Atoms) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class CompositionFilter(StructureFilter):
    """A filter decided by the element counts alone (so it can run on raw rows before conversion)."""

    def keep_counts(self, counts: Counter) -> bool:
        raise NotImplementedError

    def keep(self, atoms: Atoms) -> bool:
        return self.keep_counts(Counter(atoms.get_chemical_symbols()))


class ContainsElements(CompositionFilter):
    """Keep structures that contain every one of ``elements``."""

    def __init__(self, elements: Sequence[str]):
        self.elements = tuple(elements)
        self.name = f"contains {' '.join(self.elements)}"

    def keep_counts(self, counts):
        return all(counts.get(element, 0) > 0 for element in self.elements)


class ExcludeElements(CompositionFilter):
    """Drop structures containing any of ``elements``."""

    def __init__(self, elements: Sequence[str]):
        self.elements = tuple(elements)
        self.name = f"excludes {' '.join(self.elements)}"

    def keep_counts(self, counts):
        return not any(counts.get(element, 0) > 0 for element in self.elements)


class OnlyElements(CompositionFilter):
    """Keep structures whose elements all lie in ``elements`` (a chemical system, e.g. Cu-Ni-Al and its subsystems)."""

    def __init__(self, elements: Sequence[str]):
        self.elements = frozenset(elements)
        self.name = f"only {'-'.join(sorted(self.elements))}"

    def keep_counts(self, counts):
        return set(counts) <= self.elements


class ElementCount(CompositionFilter):
    """Keep structures with between ``minimum`` and ``maximum`` distinct elements (inclusive)."""

    def __init__(self, minimum: int | None = None, maximum: int | None = None):
        self.minimum, self.maximum = minimum, maximum
        if minimum is not None and maximum is not None:
            self.name = f"{minimum}–{maximum} elements"
        elif minimum is not None:
            self.name = f"≥ {minimum} elements"
        else:
            self.name = f"≤ {maximum} elements"

    def keep_counts(self, counts):
        n = len(counts)
        return (self.minimum is None or n >= self.minimum) and (self.maximum is None or n <= self.maximum)


class MetalsBesides(CompositionFilter):
    """Keep structures in which every element other than ``anions`` is a metal (:data:`METALS`)."""

    def __init__(self, anions: Sequence[str] = ("O",)):
        self.anions = frozenset(anions)
        self.name = f"non-{'/'.join(sorted(self.anions))} elements are metals"

    def keep_counts(self, counts):
        return all(element in METALS for element in counts if element not in self.anions)


class CationEntropy(CompositionFilter):
    """Keep structures whose ideal configurational entropy of the cation sublattice, −Σ xᵢ ln xᵢ over the cation mole
    fractions (cations = every element but ``anions``), is at least ``minimum`` in units of R. Five equimolar cations
    give ln 5 ≈ 1.61 R; 1.5 R is the usual high-entropy threshold (Murty, Yeh & Ranganathan)."""

    def __init__(self, minimum: float = 1.5, anions: Sequence[str] = ("O",)):
        self.minimum = float(minimum)
        self.anions = frozenset(anions)
        self.name = f"cation entropy ≥ {self.minimum:g} R"

    def keep_counts(self, counts):
        return cation_entropy(counts, self.anions) >= self.minimum - 1e-12


class EquimolarCations(CompositionFilter):
    """Keep structures whose cation mole fractions are all within ``tolerance`` (absolute) of 1/n_cations."""

    def __init__(self, tolerance: float = 0.05, anions: Sequence[str] = ("O",)):
        self.tolerance = float(tolerance)
        self.anions = frozenset(anions)
        self.name = f"equimolar cations (±{self.tolerance:g})"

    def keep_counts(self, counts):
        fractions = cation_fractions(counts, self.anions)
        if not fractions:
            return False
        ideal = 1.0 / len(fractions)
        return all(abs(x - ideal) <= self.tolerance + 1e-12 for x in fractions.values())


class MaxAtoms(CompositionFilter):
    """Keep structures with at most ``maximum`` atoms."""

    def __init__(self, maximum: int):
        self.maximum = int(maximum)
        self.name = f"≤ {self.maximum} atoms"

    def keep_counts(self, counts):
        return sum(counts.values()) <= self.maximum


class HasForces(StructureFilter):
    """Keep structures with a forces label."""

    name = "has forces"

    def keep(self, atoms):
        return labels_of(atoms).forces is not None


class MaxForce(StructureFilter):
    """Drop force outliers: structures with any atomic force magnitude above ``maximum`` eV/Å (typically broken
    SCF or wildly distorted frames that would dominate a force loss)."""

    def __init__(self, maximum: float):
        self.maximum = float(maximum)
        self.name = f"|F| ≤ {self.maximum:g} eV/Å"

    def keep(self, atoms):
        forces = labels_of(atoms).forces
        return forces is None or float(np.linalg.norm(forces, axis=1).max()) <= self.maximum


class Functional(StructureFilter):
    """Keep structures whose ``info["functional"]`` is one of ``names`` (case-insensitive, e.g. ``pbe``, ``pbesol``,
    ``scan``, ``r2scan``); structures with no functional recorded are dropped."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(name.lower() for name in names)
        self.name = f"functional {'/'.join(self.names)}"

    def keep(self, atoms):
        return str(atoms.info.get("functional", "")).lower() in self.names


def cation_fractions(counts: Counter | dict, anions=("O",)) -> dict[str, float]:
    """Mole fractions of the cations (all elements but ``anions``) on their own sublattice."""
    cations = {element: n for element, n in counts.items() if element not in anions and n > 0}
    total = sum(cations.values())
    return {element: n / total for element, n in cations.items()} if total else {}


def cation_entropy(counts: Counter | dict, anions=("O",)) -> float:
    """Ideal configurational entropy of the cation sublattice, −Σ xᵢ ln xᵢ, in units of R (per cation site)."""
    return -sum(x * math.log(x) for x in cation_fractions(counts, anions).values())


# -- presets ----------------------------------------------------------------------------------------------------------

PRESETS = ("heo",)


def heo_filters(
    min_cation_entropy: float | None = None,
    equimolar_tolerance: float | None = None,
    exclude: Sequence[str] | None = None,
    max_atoms: int | None = None,
    max_force: float | None = None,
) -> list[StructureFilter]:
    """The high-entropy-oxide definition (contains O; ≥ 5 elements; every non-O element a metal; has forces) plus the
    optional cuts. Composition filters come first so they can run on raw rows."""
    return build_filters(
        preset="heo",
        min_cation_entropy=min_cation_entropy,
        equimolar_tolerance=equimolar_tolerance,
        exclude=exclude,
        max_atoms=max_atoms,
        max_force=max_force,
    )


def build_filters(
    preset: str | None = None,
    only: Sequence[str] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    min_elements: int | None = None,
    max_elements: int | None = None,
    min_cation_entropy: float | None = None,
    equimolar_tolerance: float | None = None,
    max_atoms: int | None = None,
    functional: Sequence[str] | None = None,
    require_forces: bool = False,
    max_force: float | None = None,
) -> list[StructureFilter]:
    """Filters from options (what ``atomtune data curate`` takes): composition filters first, in a fixed order, then
    the ones that need labels. ``preset="heo"`` adds the high-entropy-oxide definition; ``min_elements`` below 5 cannot
    loosen it. Options that name the same filter twice (``--include O`` with the HEO preset) are merged."""
    if preset is not None and preset not in PRESETS:
        raise AtomtuneError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}.")
    filters: list[StructureFilter] = []
    if only:
        filters.append(OnlyElements(only))
    if include:
        filters.append(ContainsElements(include))
    if preset == "heo":
        filters += [
            ContainsElements(["O"]),
            ElementCount(max(5, min_elements or 0), max_elements),
            MetalsBesides(["O"]),
        ]
    elif min_elements is not None or max_elements is not None:
        filters.append(ElementCount(min_elements, max_elements))
    if exclude:
        filters.append(ExcludeElements(exclude))
    if max_atoms is not None:
        filters.append(MaxAtoms(max_atoms))
    if min_cation_entropy is not None:
        filters.append(CationEntropy(min_cation_entropy))
    if equimolar_tolerance is not None:
        filters.append(EquimolarCations(equimolar_tolerance))
    if functional:
        filters.append(Functional(functional))
    if require_forces or preset == "heo":
        filters.append(HasForces())
    if max_force is not None:
        filters.append(MaxForce(max_force))
    unique: dict[str, StructureFilter] = {}
    for filter_ in filters:
        unique.setdefault(filter_.name, filter_)
    return list(unique.values())


# -- running ----------------------------------------------------------------------------------------------------------


@dataclass
class CurationReport:
    """Rows read and skipped by the reader, then structures removed by each filter in order, and what was kept."""

    reader: ReadReport
    filters: list[str]
    removed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kept: int = 0

    def _remove(self, name: str, record_id) -> None:
        self.removed[name] = self.removed.get(name, 0) + 1
        ids = self.examples.setdefault(name, [])
        if len(ids) < EXAMPLES_KEPT:
            ids.append(str(record_id))

    def rows(self) -> list[dict]:
        """One row per filter: ``filter``, ``removed``, ``remaining`` after it."""
        remaining = self.reader.read - self.reader.n_skipped
        rows = []
        for name in self.filters:
            removed = self.removed.get(name, 0)
            remaining -= removed
            rows.append(
                {"filter": name, "removed": removed, "remaining": remaining, "first": self.examples.get(name, [])}
            )
        return rows

    def to_dict(self) -> dict:
        return {"reader": self.reader.to_dict(), "filters": self.rows(), "kept": self.kept}

    def to_markdown(self) -> str:
        lines = [f"# Curation of {self.reader.source}", ""]
        lines += [f"- read {self.reader.read:,} records"]
        for reason, count in self.reader.skipped.items():
            lines.append(f"- skipped {count:,} ({reason}); first: {', '.join(self.reader.examples.get(reason, []))}")
        lines += ["", "| filter | removed | remaining |", "|---|---:|---:|"]
        lines += [f"| {row['filter']} | {row['removed']:,} | {row['remaining']:,} |" for row in self.rows()]
        lines += ["", f"**kept {self.kept:,} structures**", ""]
        return "\n".join(lines)

    def write(self, path) -> None:
        """JSON record of the curation (reader skips, removals per filter, kept)."""
        from pathlib import Path

        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


class Curation:
    """An ordered list of filters applied to a stream; a structure is counted against the first filter that drops it.

    The leading run of composition filters can be handed to a reader as ``keep_species`` (:meth:`keep_species`) so rows
    are rejected before conversion; :meth:`run` applies the rest.
    """

    def __init__(self, filters: Sequence[StructureFilter]):
        if not filters:
            raise AtomtuneError("no filters given: choose a --preset or at least one filter option.")
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise AtomtuneError(f"filters repeat: {names}.")
        self.filters = list(filters)
        self._leading = 0
        while self._leading < len(self.filters) and isinstance(self.filters[self._leading], CompositionFilter):
            self._leading += 1
        self.report: CurationReport | None = None

    def start(self, reader_report: ReadReport) -> CurationReport:
        self.report = CurationReport(reader=reader_report, filters=[f.name for f in self.filters])
        return self.report

    def keep_species(self, species: Sequence[str], record_id="") -> bool:
        """Apply the leading composition filters to a raw species list (counts removals). Call :meth:`start` first."""
        counts = Counter(species)
        if any(symbol not in atomic_numbers for symbol in counts):
            return True  # let the reader skip it as "unknown species", where bad input is reported
        for filter_ in self.filters[: self._leading]:
            if not filter_.keep_counts(counts):
                self.report._remove(filter_.name, record_id or _formula(counts))
                return False
        return True

    def run(
        self, structures: Iterable[Atoms], reader_report: ReadReport | None = None, prefiltered: bool = False
    ) -> tuple[Dataset, CurationReport]:
        """Filter ``structures``; ``prefiltered=True`` when the reader already applied :meth:`keep_species`."""
        counting_reads = reader_report is None  # a plain list: count its structures as the records read
        if counting_reads:
            self.start(ReadReport(source="structures"))
        elif self.report is None or self.report.reader is not reader_report:
            self.start(reader_report)
        report = self.report
        first = self._leading if prefiltered else 0
        kept = []
        for atoms in structures:
            if counting_reads:
                report.reader.read += 1
            for filter_ in self.filters[first:]:
                if not filter_.keep(atoms):
                    report._remove(filter_.name, atoms.info.get("id", atoms.get_chemical_formula()))
                    break
            else:
                kept.append(atoms)
        report.kept = len(kept)
        return Dataset(kept, name="curated"), report


def _formula(counts: Counter) -> str:
    return "".join(f"{element}{n if n > 1 else ''}" for element, n in sorted(counts.items()))


def curate(
    source,
    filters: Sequence[StructureFilter],
    require: Sequence[str] = ("energy",),
    max_rows: int | None = None,
    progress: Callable[[ReadReport, int], None] | None = None,
    **read_options,
) -> tuple[Dataset, CurationReport]:
    """Read ``source`` (any reader, streamed) and keep what passes ``filters``.

    ``require`` defaults to energy only, so structures without forces reach a :class:`HasForces` filter and are counted
    there rather than as reader skips. ``progress(reader_report, n)`` is called every 200 structures that pass the
    composition filters. ``read_options`` go to :func:`atomtune.data.readers.iter_any` (``format``, ``config`` …).
    Example::

        data, report = curate("LeMat-Bulk/compatible_pbe/*.parquet", heo_filters(exclude=NOBLE_METALS))
        print(report.to_markdown())
    """
    from atomtune.data.readers import iter_any

    curation = Curation(filters)
    reader_report = ReadReport()
    curation.start(reader_report)
    stream = iter_any(
        source,
        report=reader_report,
        require=require,
        keep_species=curation.keep_species,
        max_rows=max_rows,
        **read_options,
    )
    if progress is not None:
        stream = _with_progress(stream, reader_report, progress)
    return curation.run(stream, reader_report, prefiltered=True)


def _with_progress(stream: Iterable[Atoms], reader_report: ReadReport, progress) -> Iterator[Atoms]:
    for number, atoms in enumerate(stream, start=1):
        if number % 200 == 0:
            progress(reader_report, number)
        yield atoms
