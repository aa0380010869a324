"""Labelling: run a reference calculator (GPAW PBE, ASE EMT or any ASE calculator) over structures → a labelled Dataset.

Sits between ``data.generate`` (structures without labels) and everything that reads a :class:`Dataset`. Each finished
structure is written to its own small JSON file in a cache directory (atomically), keyed by the structure's content hash
and the calculator settings, so a killed run loses at most the structures in flight and a re-run skips finished work.
Failures (SCF not converged, a crash, an element the calculator cannot treat) are recorded per structure, cached like
results, and summarised at the end; the rest of the batch continues.

Example::

    from atomtune.data.label import label
    data, failures = label(structures, "gpaw", cache_dir="cache/", workers=2)
    data, failures = label(structures, CalculatorSpec("gpaw", {"cutoff": 400, "kpoint_density": 3.5}), "cache/")
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import time
import traceback
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from atomtune.data.dataset import Dataset, attach_labels, structure_id
from atomtune.exceptions import AtomtuneError
from atomtune.files import atomic_write_json

#: Bump when the meaning of a cache file changes, so old files are not reused.
CACHE_VERSION = 1

#: Elements whose ground state (or a nearby state reached from ASE's initial moments) is magnetic; a structure with any
#: of them is computed spin-polarised. Values are the initial moments (μB) used when the structure has none set.
MAGNETIC_MOMENTS = {"Cr": 1.0, "Mn": 2.0, "Fe": 2.5, "Co": 1.7, "Ni": 0.6, "Gd": 7.0}

#: Plane-wave cutoff floor (eV) when oxygen is present: the O PAW setup needs it for converged energies and stress.
OXIDE_CUTOFF = 700.0

GPAW_INSTALL_HINT = (
    "GPAW is not installed. Install it with `pip install 'atomtune[gpaw]'` after the system packages "
    "(Debian/Ubuntu: `apt-get install build-essential pkg-config libxc-dev libopenblas-dev libfftw3-dev`), with "
    "GPAW_CONFIG=.ci/gpaw_siteconfig.py set so GPAW links FFTW and OpenBLAS. Run it with OMP_NUM_THREADS=1 "
    "OPENBLAS_NUM_THREADS=1 (threaded BLAS is many times slower for small cells)."
)


@dataclass(frozen=True)
class GPAWSettings:
    """Plane-wave PBE presets for GPAW.

    ``cutoff``: plane-wave cutoff in eV (raised to :data:`OXIDE_CUTOFF` when O is present). ``kpoint_density``: k-points
    per Å⁻¹ of reciprocal-lattice length (ASE's ``kpts={"density": ...}``, Γ-centred). ``smearing``: Fermi–Dirac width
    in eV. ``spin``: ``"auto"`` (spin-polarised when a magnetic element is present or initial moments are set), ``True``
    or ``False``. ``max_scf_iterations``: SCF iterations before the structure is recorded as not converged.
    """

    cutoff: float = 400.0
    kpoint_density: float = 3.5
    smearing: float = 0.1
    xc: str = "PBE"
    spin: str | bool = "auto"
    max_scf_iterations: int = 200


@dataclass(frozen=True)
class CalculatorSpec:
    """Which calculator labels the structures: ``name`` is ``"gpaw"``, ``"emt"`` or ``"module:Class"`` (any ASE
    calculator by import path); ``kwargs`` are its settings (for ``"gpaw"`` the fields of :class:`GPAWSettings`)."""

    name: str
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: CalculatorSpec | str | dict, kwargs: dict | None = None) -> CalculatorSpec:
        """Accept a spec, a name (with optional kwargs) or ``{"name": ..., "kwargs": {...}}``; check it resolves."""
        if isinstance(spec, CalculatorSpec):
            parsed = spec if kwargs is None else cls(spec.name, {**spec.kwargs, **kwargs})
        elif isinstance(spec, dict):
            if "name" not in spec:
                raise AtomtuneError(f"calculator spec {spec} has no 'name' (use 'gpaw', 'emt' or 'module:Class').")
            parsed = cls(str(spec["name"]), {**dict(spec.get("kwargs", {})), **(kwargs or {})})
        elif isinstance(spec, str):
            parsed = cls(spec.strip(), dict(kwargs or {}))
        else:
            raise AtomtuneError(f"calculator spec must be a name like 'gpaw', 'emt' or 'module:Class', not {spec!r}.")
        parsed.check()
        return parsed

    @classmethod
    def from_json(cls, name: str, kwargs_json: str) -> CalculatorSpec:
        """A spec from a name and a JSON object of settings, as given on the command line (``--kwargs``)."""
        try:
            kwargs = json.loads(kwargs_json or "{}")
        except json.JSONDecodeError as error:
            raise AtomtuneError(f"--kwargs is not valid JSON ({error}): {kwargs_json!r}") from error
        if not isinstance(kwargs, dict):
            raise AtomtuneError(f"--kwargs must be a JSON object like '{{\"cutoff\": 450}}', got {kwargs_json!r}.")
        return cls.parse(name, kwargs)

    def check(self) -> None:
        """Raise :class:`AtomtuneError` when the calculator cannot be used at all (unknown name, not installed)."""
        name = self.name.lower()
        if name == "gpaw":
            try:
                import gpaw  # noqa: F401
            except ImportError as error:
                raise AtomtuneError(GPAW_INSTALL_HINT) from error
            unknown = set(self.kwargs) - set(GPAWSettings.__dataclass_fields__)
            if unknown:
                raise AtomtuneError(
                    f"unknown GPAW setting(s) {sorted(unknown)}; use {sorted(GPAWSettings.__dataclass_fields__)}."
                )
        elif name == "emt":
            return
        elif ":" in self.name:
            _import_calculator_class(self.name)
        else:
            raise AtomtuneError(
                f"unknown calculator {self.name!r}. Use 'gpaw' (plane-wave PBE), 'emt' (ASE EMT, for tests) or an ASE "
                f"calculator by import path 'module:Class' (e.g. 'ase.calculators.lj:LennardJones') with --kwargs JSON."
            )

    def settings_hash(self) -> str:
        """A short hash of the name and settings (with defaults filled in) that keys the cache."""
        settings = {"name": self.name.lower(), "kwargs": self.resolved_kwargs(), "version": CACHE_VERSION}
        return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def resolved_kwargs(self) -> dict:
        """Settings with the defaults filled in (what the cache and provenance record)."""
        if self.name.lower() == "gpaw":
            return asdict(GPAWSettings(**self.kwargs))
        return dict(self.kwargs)

    def build(self, atoms: Atoms, force_consistent: bool = False, point_group: bool = True):
        """A fresh ASE calculator for ``atoms`` (GPAW settings depend on the structure: spin, oxide cutoff).

        ``force_consistent``: report GPAW's force-consistent free energy as the energy (what the labels hold), so a
        property task on the reference (E–V curve, vacancy energy) uses the same energy surface as the forces and as
        the datasets the models were trained on; GPAW's plain energy is the σ→0 extrapolation (26 meV/atom apart for Ni
        at 0.1 eV smearing, 2 GPa in B)."""
        name = self.name.lower()
        if name == "gpaw":
            calculator = _build_gpaw(atoms, GPAWSettings(**self.kwargs), point_group=point_group)
            return ForceConsistentEnergy(calculator) if force_consistent else calculator
        if name == "emt":
            from ase.calculators.emt import EMT

            return EMT(**self.kwargs)
        return _import_calculator_class(self.name)(**self.kwargs)

    def task_calculator(self, atoms: Atoms):
        """The calculator a property task runs on ``atoms`` with (force-consistent energy for GPAW).

        Tasks build new cells from their input (vacancy supercells, slabs, stacking-fault cells, adsorbate slabs); for
        GPAW each such cell needs its own k-point mesh, so GPAW runs behind :class:`CellFamilyCalculator`. Other
        calculators have no structure-dependent settings and are built once."""
        if self.name.lower() == "gpaw":
            return CellFamilyCalculator(self, atoms)
        return self.build(atoms, force_consistent=True)


class CellFamilyCalculator(Calculator):
    """GPAW with settings (k-point mesh, spin) chosen per *cell family*, not once for the first structure.

    Two cells are one family when they have the same atoms count and lattice lengths within 10 % and angles within 5°:
    the strained cells of an equation of state or an elastic-constant fit keep one mesh (a mesh that jumps between two
    strains puts a step into E(V)), while a 2×2×2 vacancy supercell or a slab gets a mesh from its own cell at the same
    k-point density. A mesh pinned in ``info["kpts"]`` holds only for the family of the structure given here (copies made
    by a task inherit ``info`` from a cell of another size). Energy is GPAW's force-consistent free energy.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, spec: CalculatorSpec, atoms: Atoms):
        super().__init__()
        self.spec = spec
        self.settings = GPAWSettings(**spec.kwargs)
        self.pinned_family = _cell_signature(atoms)
        self.families: list[_CellFamily] = []

    def calculator_for(self, atoms: Atoms) -> Calculator:
        return self._family(atoms).calculator

    def kpoint_mesh_for(self, atoms: Atoms) -> list[int]:
        """The mesh the calculation of ``atoms`` uses (for checks and logs)."""
        return self._family(atoms).template.info["kpts"]

    def _family(self, atoms: Atoms) -> _CellFamily:
        signature = _cell_signature(atoms)
        for family in self.families:
            if _same_family(family.signature, signature):
                return family
        template = atoms.copy()
        if not _same_family(self.pinned_family, signature):
            template.info.pop("kpts", None)
        template.info["kpts"] = _kpoint_mesh(template, self.settings.kpoint_density)["size"]
        family = _CellFamily(signature, template, self.spec.build(template, force_consistent=True))
        self.families.append(family)
        return family

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        family = self._family(self.atoms)
        _prepare_spin(self.atoms, self.settings)

        def run() -> dict:
            return {name: family.calculator.get_property(name, self.atoms) for name in properties}

        if family.grid_checked:
            self.results = run()
        else:

            def rebuild(point_group: bool) -> None:
                family.calculator = self.spec.build(family.template, force_consistent=True, point_group=point_group)

            self.results, note = _run_without_grid_blowup(run, rebuild)
            family.grid_checked = True
            if note:
                warnings.warn(f"{self.atoms.get_chemical_formula()} ({len(self.atoms)} atoms): {note}", stacklevel=2)
        self.results.update({k: v for k, v in family.calculator.results.items() if k in self.implemented_properties})

    def get_magnetic_moment(self, atoms=None):
        return self.calculator_for(atoms if atoms is not None else self.atoms).get_magnetic_moment(atoms)


@dataclass
class _CellFamily:
    """One cell family of a :class:`CellFamilyCalculator`: the first cell seen (its ``info["kpts"]`` is the family's
    k-mesh), its GPAW calculator, and whether GPAW's symmetrised-grid check has run for it."""

    signature: tuple
    template: Atoms
    calculator: Calculator
    grid_checked: bool = False


def _cell_signature(atoms: Atoms) -> tuple:
    return (len(atoms), tuple(float(x) for x in atoms.cell.cellpar()))


def _same_family(a: tuple, b: tuple) -> bool:
    (count_a, par_a), (count_b, par_b) = a, b
    lengths = all(abs(y / x - 1.0) < 0.10 for x, y in zip(par_a[:3], par_b[:3]) if x > 0)
    angles = all(abs(x - y) < 5.0 for x, y in zip(par_a[3:], par_b[3:]))
    return count_a == count_b and lengths and angles


class ForceConsistentEnergy(Calculator):
    """A calculator whose force-consistent free energy is reported as the energy (eV); forces (eV/Å), stress (eV/Å³, only
    when asked for: it costs) and the magnetic moment are passed through."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, calculator):
        super().__init__()
        self.calculator = calculator

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        free_energy = self.calculator.get_potential_energy(self.atoms, force_consistent=True)
        self.results = {"energy": free_energy, "free_energy": free_energy,
                        "forces": self.calculator.get_forces(self.atoms)}
        if "stress" in properties:
            self.results["stress"] = self.calculator.get_stress(self.atoms)

    def get_magnetic_moment(self, atoms=None):
        return self.calculator.get_magnetic_moment(atoms)


@dataclass
class LabelFailure:
    """A structure that could not be labelled: ``id``, its formula, the error type and message, wall time in s."""

    id: str
    formula: str
    error_type: str
    message: str
    wall_time_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.id} ({self.formula}): {self.error_type}: {self.message}"


def label(
    structures: Iterable[Atoms],
    calculator_spec: CalculatorSpec | str | dict,
    cache_dir: str | Path,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
) -> tuple[Dataset, list[LabelFailure]]:
    """Label ``structures`` with a reference calculator; return the labelled Dataset (input order, failures left out)
    and the failures.

    ``calculator_spec``: ``"gpaw"``, ``"emt"``, ``"module:Class"`` or a :class:`CalculatorSpec` with settings.
    ``cache_dir``: one JSON file per finished structure (energy eV, forces eV/Å, stress eV/Å³ Voigt ASE sign, wall and
    CPU time s); re-running skips finished structures, and cached failures too unless ``retry_failed``. With smearing
    the energy label is the force-consistent free energy (what forces and stress are derivatives of).
    ``workers``: processes of a local Dask cluster (one thread each, OMP_NUM_THREADS=1); ``1`` without a scheduler runs
    in this process. ``scheduler``: address of a running Dask scheduler (``tcp://host:8786``) to run on instead. Each
    labelled structure keeps its ``info`` and gets ``id`` (kept if set, else the content hash), ``source`` and
    ``label_wall_time_s`` / ``label_cpu_time_s``.
    """
    spec = CalculatorSpec.parse(calculator_spec)
    structures = [atoms for atoms in structures]
    from atomtune.files import OutputLock

    # One labelling run per cache folder: a second one would compute the same structures twice.
    with OutputLock(cache_dir, "labelling"):
        return _label_locked(structures, spec, cache_dir, workers, scheduler, progress, retry_failed)


def _label_locked(structures, spec, cache_dir, workers, scheduler, progress, retry_failed):
    cache = LabelCache(cache_dir, spec)
    ids = [str(atoms.info.get("id") or structure_id(atoms)) for atoms in structures]

    records: dict[int, dict] = {}
    todo: list[int] = []
    for index, atoms in enumerate(structures):
        record = cache.load(atoms)
        if record is not None and (record["status"] == "ok" or not retry_failed):
            records[index] = record
        else:
            todo.append(index)

    if todo:
        bar = _progress_bar(total=len(structures), done=len(records), enabled=progress, name=spec.name)
        try:
            for index, record in _run(spec, structures, ids, todo, workers, scheduler):
                cache.store(structures[index], record)
                records[index] = record
                if bar is not None:
                    bar.set_postfix_str(f"last {ids[index]} {record['wall_time_s']:.0f} s")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    labelled, failures = [], []
    for index, atoms in enumerate(structures):
        record = records[index]
        if record["status"] == "ok":
            labelled.append(_labelled_copy(atoms, ids[index], record, spec))
        else:
            failures.append(
                LabelFailure(
                    id=ids[index],
                    formula=atoms.get_chemical_formula(),
                    error_type=record["error_type"],
                    message=record["message"],
                    wall_time_s=record.get("wall_time_s", 0.0),
                )
            )
    if failures and progress:
        print(summarise_failures(failures, len(structures)))
    return Dataset(labelled, name=f"labelled-{spec.name}"), failures


def summarise_failures(failures: Sequence[LabelFailure], total: int) -> str:
    """One line per failed structure, grouped under a count, for the end of a run."""
    lines = [f"{len(failures)} of {total} structures could not be labelled:"]
    lines += [f"  - {failure}" for failure in failures]
    return "\n".join(lines)


class LabelCache:
    """One JSON file per (structure, settings) in ``directory``: ``<structure hash>-<settings hash>.json``.

    Written via a temporary file and ``os.replace`` so a file is either complete or absent, even under ``kill -9``.
    """

    def __init__(self, directory: str | Path, spec: CalculatorSpec):
        self.directory = Path(directory)
        self.spec = spec
        self.settings_hash = spec.settings_hash()

    def path(self, atoms: Atoms) -> Path:
        return self.directory / f"{_structure_key(atoms)}-{self.settings_hash}.json"

    def load(self, atoms: Atoms) -> dict | None:
        path = self.path(atoms)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None  # a file from before atomic writes, or damaged: recompute

    def store(self, atoms: Atoms, record: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(atoms)
        record = {**record, "calculator": self.spec.name, "settings": self.spec.resolved_kwargs()}
        return atomic_write_json(path, record, indent=None, lenient=True)

    def records(self) -> list[dict]:
        """Every finished record for these settings (for provenance and partial writes)."""
        found = []
        for path in sorted(self.directory.glob(f"*-{self.settings_hash}.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (json.JSONDecodeError, OSError):
                continue
        return found


def compute_record(atoms: Atoms, spec: CalculatorSpec, structure_label: str) -> dict:
    """Run the calculator on one structure and return a cache record; never raises (errors become failure records)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    work = Atoms(
        numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
        magmoms=atoms.get_initial_magnetic_moments() if atoms.has("initial_magmoms") else None,
    )
    if "kpts" in atoms.info:
        work.info["kpts"] = atoms.info["kpts"]
    try:
        work.calc = spec.build(work)
        note = None
        if spec.name.lower() == "gpaw":

            def rebuild(point_group: bool) -> None:
                work.calc = spec.build(work, point_group=point_group)

            energy, note = _run_without_grid_blowup(lambda: _force_consistent_energy(work), rebuild)
        else:
            energy = _force_consistent_energy(work)
        forces = work.get_forces()
        stress = work.get_stress(voigt=True) if work.pbc.all() else None
        record = {
            "status": "ok",
            "energy": float(energy),
            "forces": np.asarray(forces, dtype=float).tolist(),
            "stress": None if stress is None else np.asarray(stress, dtype=float).tolist(),
        }
        magmom = _magnetic_moment(work)
        if magmom is not None:
            record["magnetic_moment"] = magmom
        if note:
            record["note"] = note
    except AtomtuneError as error:
        record = {"status": "failed", "error_type": type(error).__name__, "message": str(error)}
    except Exception as error:  # any calculator crash: record it for this structure, the batch goes on
        message = str(error).strip() or repr(error)
        if "ConvergenceError" in type(error).__name__:  # GPAW's KohnShamConvergenceError carries no message
            message = (
                f"the SCF did not converge ({message}); raise max_scf_iterations or the smearing, or check the "
                f"structure (overlapping atoms, wrong units)"
            )
        record = {
            "status": "failed",
            "error_type": type(error).__name__,
            "message": f"structure {structure_label}: {message}",
            "traceback": traceback.format_exc(limit=6),
        }
    record["id"] = structure_label
    record["formula"] = atoms.get_chemical_formula()
    record["n_atoms"] = len(atoms)
    record["wall_time_s"] = round(time.perf_counter() - start, 3)
    # CPU time of this process: what the structure costs on a dedicated core when the machine is shared.
    record["cpu_time_s"] = round(time.process_time() - cpu_start, 3)
    return record


# -- running ---------------------------------------------------------------------------------------------------------


def _run(spec: CalculatorSpec, structures, ids, todo, workers: int, scheduler: str | None):
    """Yield ``(index, record)`` as structures finish, in this process or on a Dask cluster."""
    if scheduler is None and workers <= 1:
        for index in todo:
            yield index, compute_record(structures[index], spec, ids[index])
        return
    try:
        from dask.distributed import Client, as_completed
    except ImportError as error:
        raise AtomtuneError("parallel labelling needs dask.distributed: `pip install 'dask[distributed]'`.") from error
    cluster = None
    if scheduler is None:
        from atomtune.runtime import single_thread_cluster

        client, cluster = single_thread_cluster(workers)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise AtomtuneError(f"could not reach the Dask scheduler at {scheduler!r}: {error}") from error
    try:
        futures = {
            client.submit(compute_record, structures[index], spec, ids[index], key=f"label-{ids[index]}-{index}"): index
            for index in todo
        }
        for future in as_completed(futures):
            index = futures[future]
            try:
                record = future.result()
            except Exception as error:  # the worker died (out of memory, segfault in a C library)
                record = {
                    "status": "failed", "error_type": type(error).__name__,
                    "message": f"structure {ids[index]}: worker failed: {error}",
                    "id": ids[index], "formula": structures[index].get_chemical_formula(),
                    "n_atoms": len(structures[index]), "wall_time_s": 0.0,
                }
            yield index, record
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _progress_bar(total: int, done: int, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"labelling ({name})", unit="structure", smoothing=0.1)


# -- calculators -----------------------------------------------------------------------------------------------------


def _import_calculator_class(path: str):
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AtomtuneError(
            f"calculator {path!r}: cannot import module {module_name!r} ({error}). Install it or fix the import path."
        ) from error
    try:
        return getattr(module, class_name)
    except AttributeError as error:
        raise AtomtuneError(f"calculator {path!r}: module {module_name!r} has no {class_name!r}.") from error


def _build_gpaw(atoms: Atoms, settings: GPAWSettings, point_group: bool = True):
    from gpaw import GPAW, PW, FermiDirac

    _check_paw_setups(atoms, settings.xc)
    cutoff = settings.cutoff
    if "O" in atoms.get_chemical_symbols():
        cutoff = max(cutoff, OXIDE_CUTOFF)
    _prepare_spin(atoms, settings)
    if not atoms.pbc.all():
        raise AtomtuneError(
            f"GPAW plane-wave mode needs periodic boundaries in all directions (pbc={atoms.pbc.tolist()}); "
            f"add vacuum to the cell and set pbc=True."
        )
    return GPAW(
        mode=PW(cutoff),
        xc=settings.xc,
        kpts=_kpoint_mesh(atoms, settings.kpoint_density),
        occupations=FermiDirac(settings.smearing),
        maxiter=settings.max_scf_iterations,
        txt=None,
        **({} if point_group else {"symmetry": {"point_group": False}}),
    )


def _prepare_spin(atoms: Atoms, settings: GPAWSettings) -> None:
    """Initial magnetic moments on ``atoms`` as GPAW reads them: spin-polarised with ``spin`` on, or "auto" and a magnetic
    element (or moments already set) present; moments cleared otherwise."""
    symbols = set(atoms.get_chemical_symbols())
    has_moments = atoms.has("initial_magmoms") and np.any(atoms.get_initial_magnetic_moments() != 0)
    spin = settings.spin
    if spin == "auto":
        spin = bool(has_moments or symbols & set(MAGNETIC_MOMENTS))
    if spin and not has_moments:
        atoms.set_initial_magnetic_moments([MAGNETIC_MOMENTS.get(s, 0.0) for s in atoms.get_chemical_symbols()])
    if not spin and has_moments:
        atoms.set_initial_magnetic_moments(None)


def kpoint_mesh(atoms: Atoms, kpoint_density: float) -> list[int]:
    """The Γ-centred Monkhorst–Pack mesh ASE's ``kpts={"density": ...}`` gives ``atoms`` (k-points per Å⁻¹).

    Pin it in ``info["kpts"]`` of strained or rattled copies of a cell so a whole family shares its parent's mesh: a
    mesh that jumps from 8 to 7 between two strains puts a step into an equation of state."""
    from ase.calculators.calculator import kptdensity2monkhorstpack

    return [int(n) for n in kptdensity2monkhorstpack(atoms, kptdensity=kpoint_density, even=False)]


def _kpoint_mesh(atoms: Atoms, kpoint_density: float) -> dict:
    pinned = atoms.info.get("kpts")
    size = [int(n) for n in np.ravel(pinned)] if pinned is not None else kpoint_mesh(atoms, kpoint_density)
    if len(size) != 3 or min(size) < 1:
        raise AtomtuneError(f"info['kpts'] must be three positive integers, got {pinned!r}.")
    return {"size": size, "gamma": True}


def _check_paw_setups(atoms: Atoms, xc: str) -> None:
    from gpaw.setup_data import search_for_file

    missing = []
    for symbol in sorted(set(atoms.get_chemical_symbols())):
        try:
            search_for_file(f"{symbol}.{xc}")
        except (FileNotFoundError, RuntimeError):
            missing.append(symbol)
    if missing:
        raise AtomtuneError(
            f"no GPAW {xc} PAW setup for element(s) {', '.join(missing)}. Install the setups (`pip install gpaw-data`, "
            f"or `gpaw install-data DIR` and set GPAW_SETUP_PATH) or remove these structures."
        )


#: GPAW enlarges its real-space grid until it is compatible with the cell's symmetry operations. In cells whose
#: symmetry maps a tilted lattice vector onto the others (fcc (111) stacking-fault cells) 14×14×63 became 63×63×63:
#: ~20× the work per SCF iteration, and the intrinsic-fault cell of the shipped dataset had not converged after 45 min.
#: Above this growth factor the structure runs without point-group symmetry instead (the whole k-mesh, time reversal
#: kept): an Al stacking-fault cell took 4.0 s of CPU instead of 23.4 s, energies 0.2 meV/atom apart.
MAX_GRID_GROWTH = 4.0


def _run_without_grid_blowup(run, rebuild) -> tuple[object, str | None]:
    """``run()`` on a GPAW calculator; when GPAW would enlarge its grid by more than :data:`MAX_GRID_GROWTH` to fit the
    cell's symmetry, ``rebuild(point_group=False)`` (it installs a new calculator) and run again. Returns (result, note)."""
    initial = symmetrized = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # GPAW warns "Initial realspace grid (…) inconsistent with symmetries", then "Using symmetrized grid: (…)"
        # before any SCF work: stop there and decide.
        warnings.filterwarnings("error", message="Using symmetrized grid")
        try:
            result = run()
        except UserWarning as warning:
            symmetrized = _grid_of(str(warning))
            initial = next((_grid_of(str(w.message)) for w in caught if "Initial realspace grid" in str(w.message)), None)
    for record in caught:  # pass the other warnings on
        if "realspace grid" not in str(record.message) and "symmetrized grid" not in str(record.message):
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    if symmetrized is None:
        return result, None
    growth = float(np.prod(symmetrized)) / float(np.prod(initial)) if initial else float("inf")
    note = None
    if growth > MAX_GRID_GROWTH:
        rebuild(point_group=False)
        note = (f"GPAW point-group symmetry off: it would have enlarged the real-space grid {initial} → "
                f"{symmetrized} ({growth:.0f}×) to fit the cell's symmetry")
    else:
        rebuild(point_group=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(Initial realspace grid|Using symmetrized grid)")
        return run(), note


def _grid_of(message: str) -> tuple[int, int, int] | None:
    match = re.search(r"\((\d+),\s*(\d+),\s*(\d+)\)", message)
    return tuple(int(n) for n in match.groups()) if match else None


def _force_consistent_energy(atoms: Atoms) -> float:
    """The energy whose derivatives are the forces and stress: with smearing, the free energy (Mermin), not the
    zero-width extrapolation; fitting codes need energy, forces and stress from one consistent surface."""
    energy = atoms.get_potential_energy()
    free_energy = atoms.calc.results.get("free_energy")
    return float(energy if free_energy is None else free_energy)


def _magnetic_moment(atoms: Atoms) -> float | None:
    try:
        return float(atoms.calc.get_magnetic_moment())
    except Exception:  # calculators without spin (EMT) raise various errors; the moment is optional
        return None


# -- records ---------------------------------------------------------------------------------------------------------


def _structure_key(atoms: Atoms) -> str:
    """The content hash plus what else changes the result: a pinned k-mesh and the initial magnetic moments."""
    key = structure_id(atoms)
    if "kpts" in atoms.info:
        key += "k" + "x".join(str(int(n)) for n in np.ravel(atoms.info["kpts"]))
    if atoms.has("initial_magmoms"):
        moments = np.round(atoms.get_initial_magnetic_moments(), 3)
        if np.any(moments != 0):
            key += hashlib.sha1(moments.tobytes()).hexdigest()[:6]
    return key


def _labelled_copy(atoms: Atoms, structure_label: str, record: dict, spec: CalculatorSpec) -> Atoms:
    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    copy.info.update(atoms.info)
    copy.info["id"] = structure_label
    copy.info.setdefault("source", f"atomtune-label-{spec.name}")
    copy.info["label_wall_time_s"] = float(record.get("wall_time_s", 0.0))
    if "cpu_time_s" in record:
        copy.info["label_cpu_time_s"] = float(record["cpu_time_s"])
    if "magnetic_moment" in record:
        copy.info["magnetic_moment"] = float(record["magnetic_moment"])
    if atoms.has("initial_magmoms"):
        copy.set_initial_magnetic_moments(atoms.get_initial_magnetic_moments())
    stress = None if record.get("stress") is None else np.asarray(record["stress"], dtype=float)
    return attach_labels(copy, record["energy"], np.asarray(record["forces"], dtype=float), stress)

