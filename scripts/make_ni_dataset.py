"""Generate and label atomtune's shipped Ni / Ni–Al / Ni–Cu PBE dataset with GPAW (one core, resumable).

Output in src/atomtune/resources/ni_alloy/: ``ni_alloy_pbe.extxyz`` (every labelled structure, labels under
REF_energy / REF_forces / REF_stress, ``info["config_type"]`` says which stage made it), ``ni_alloy_reference.extxyz``
(the bulk equilibria from a GPAW equation of state: fcc Ni, Al, Cu, L1₂ Ni₃Al, B2 NiAl), ``provenance.json``
(settings, versions, the cutoff / k-point convergence check, per-structure timings) and ``cache/`` (one JSON per
finished structure, committed so the run resumes in another session).

Order of work, most important first: convergence check → equations of state and equilibria → a first pass of random
strains, rattles and Ni–Cu solid solutions → (111) slab → vacancy → stacking faults → Ni-rich B2 → the rest of the
strains, rattles and solid solutions → extra rattles and strongly strained small cells while time remains. The outputs are
rewritten from the cache every ``--write-every`` structures, so a partial dataset exists whenever the run stops.

Run (single-threaded BLAS: threaded BLAS made one 8-atom cell 14× slower)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/make_ni_dataset.py            # resumes from the cache
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/make_ni_dataset.py --max-minutes 30 --dry-run
    # a second core: a helper takes unclaimed structures of the same plan (each process claims one before labelling it)
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/make_ni_dataset.py --helper &
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.data import generate
from atomtune.data.dataset import Dataset
from atomtune.data.label import CalculatorSpec, LabelCache, kpoint_mesh, label

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "atomtune" / "resources" / "ni_alloy"

# Chosen from the convergence check this script records (fcc Ni, 1 atom, spin-polarised): 450 eV is ~15 meV/atom above
# 600 eV, an offset nearly constant per Ni atom that cancels in energy differences; k-point density 2.5 Å⁻¹ is within
# ~4 meV/atom of 4.5 Å⁻¹. Denser settings would not fit the ~90 min single-core budget (a 1-atom cell without symmetry
# costs ~30 s here, a rattled 4-atom cell ~60 s).
SETTINGS = {"cutoff": 450.0, "kpoint_density": 2.5, "smearing": 0.1, "max_scf_iterations": 200}

CONVERGENCE_CUTOFFS = [300.0, 350.0, 400.0, 450.0, 500.0, 600.0]
CONVERGENCE_DENSITIES = [2.0, 2.5, 3.0, 3.5, 4.5]

#: Starting lattice constants (Å, PBE literature values) for the equation-of-state scans.
GUESS_LATTICE = {"Ni": 3.52, "Al": 4.04, "Cu": 3.63, "Ni3Al": 3.57, "NiAl": 2.89}
EOS_STRAINS = [-0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="output folder (default: the shipped resources)")
    parser.add_argument("--max-minutes", type=float, default=90.0, help="start no new structure after this (min)")
    parser.add_argument("--write-every", type=int, default=10, help="rewrite outputs every N structures")
    parser.add_argument("--dry-run", action="store_true", help="list the planned structures and exit")
    parser.add_argument("--quick", action="store_true", help="tiny settings and a few structures (smoke test)")
    parser.add_argument(
        "--helper", action="store_true",
        help="label only: take unclaimed structures from the same plan and write no outputs (run next to a main run "
        "to use a second core; each process claims a structure before labelling it)",
    )
    args = parser.parse_args()

    settings = dict(SETTINGS)
    if args.quick:
        settings.update(cutoff=250.0, kpoint_density=1.0, max_scf_iterations=60)
    spec = CalculatorSpec("gpaw", settings)
    run = Run(args.output, spec, args.max_minutes, args.write_every, quick=args.quick, helper=args.helper)
    run.execute(dry_run=args.dry_run)


class Run:
    """The stages of one (possibly resumed) dataset run, with the bookkeeping for outputs and provenance."""

    def __init__(
        self, output: Path, spec: CalculatorSpec, max_minutes: float, write_every: int, quick: bool, helper: bool = False
    ):
        self.output = output
        self.helper = helper
        self.spec = spec
        self.cache_dir = output / "cache"
        self.deadline = time.time() + max_minutes * 60
        self.write_every = write_every
        self.quick = quick
        self.started = time.time()
        self.stages: list[tuple[str, dict[int, Atoms]]] = []  # labelled so far: stage name, {position: structure}
        self.references: list[Atoms] = []
        self.failures: list = []
        self.convergence: dict = {}
        self.stopped_early = False
        self.deferred: list[tuple[str, int, Atoms, dict[int, Atoms]]] = []  # claimed by another process

    # -- driver ------------------------------------------------------------------------------------------------------
    def execute(self, dry_run: bool) -> None:
        self.log(f"settings {self.spec.resolved_kwargs()} → {self.output}")
        if not self.quick:
            self.convergence = self.convergence_check(dry_run)
        equilibria = self.equations_of_state(dry_run)
        plan = self.plan(equilibria)
        total = sum(len(frames) for _, frames in plan)
        stages = ", ".join(f"{name} {len(frames)}" for name, frames in plan)
        self.log(f"plan: {total} structures after the equations of state: {stages}")
        if dry_run:
            for name, frames in plan:
                for atoms in frames:
                    print(name, atoms.get_chemical_formula(), len(atoms), atoms.info["kpts"], atoms.info["history"])
            return
        for name, frames in plan:
            self.label_stage(name, frames)
        self.collect_deferred()
        self.write_outputs(final=True)
        self.log(f"done in {(time.time() - self.started) / 60:.1f} min; {len(self.failures)} failures")

    def label_stage(self, name: str, frames: list[Atoms]) -> list[Atoms]:
        """Label ``frames`` one by one, rewriting the outputs every few; stop at the deadline.

        A structure claimed by another process (``--helper``) is left to it and collected at the end of the run.
        """
        done: dict[int, Atoms] = {}
        self.stages.append((name, done))
        cache = LabelCache(self.cache_dir, self.spec)
        for position, atoms in enumerate(frames, start=1):
            path = cache.path(atoms)
            cached = path.exists()
            if not cached and time.time() > self.deadline:
                # Past the deadline: start nothing new, but keep collecting what is already in the cache.
                if not self.stopped_early:
                    self.log(f"time limit reached in stage {name} at {position}/{len(frames)}; rerun to continue")
                self.stopped_early = True
                continue
            claim = None
            if not cached:
                claim = _claim(path)
                if claim is None:  # another process is labelling it
                    if not self.helper:
                        self.deferred.append((name, position, atoms, done))
                    continue
            try:
                # One structure per call so the deadline is checked between structures, not between chunks.
                labelled, failures = label([atoms], self.spec, self.cache_dir, workers=1, progress=False)
            finally:
                if claim is not None:
                    claim.unlink(missing_ok=True)
            self.record(name, position, len(frames), atoms, labelled, failures, done, log=not cached)
            if not self.helper and (position == len(frames) or position % self.write_every == 0):
                self.write_outputs()
                self.log(
                    f"{name}: {position}/{len(frames)}; {sum(len(d) for _, d in self.stages)} in the dataset; "
                    f"{(time.time() - self.started) / 60:.1f} min elapsed"
                )
        return [done[position] for position in sorted(done)]

    def record(self, name, position, total, atoms, labelled, failures, done, log: bool) -> None:
        for result in labelled:
            result.info["config_type"] = name
            done[position] = result
            if log:
                self.log(
                    f"{name} {position}/{total} {result.get_chemical_formula()} k={atoms.info.get('kpts')}: "
                    f"{result.info['label_wall_time_s']:.0f} s wall, "
                    f"{result.info.get('label_cpu_time_s', 0):.0f} s cpu"
                )
        self.failures.extend(failures)
        for failure in failures:
            self.log(f"FAILED {failure}")

    def collect_deferred(self) -> None:
        """Wait for the structures another process claimed; label any whose claim died with its process."""
        cache = LabelCache(self.cache_dir, self.spec)
        for name, position, atoms, done in self.deferred:
            path = cache.path(atoms)
            while not path.exists() and _claim_alive(path):
                time.sleep(10)
            if not path.exists() and time.time() > self.deadline:
                self.stopped_early = True
                continue
            labelled, failures = label([atoms], self.spec, self.cache_dir, workers=1, progress=False)
            self.record(name, position, 0, atoms, labelled, failures, done, log=False)
        self.deferred = []

    # -- stages ------------------------------------------------------------------------------------------------------
    def convergence_check(self, dry_run: bool) -> dict:
        """Energy per atom (eV) and pressure of 1-atom fcc Ni at 3.52 Å vs cutoff and vs k-point density."""
        atoms = generate.bulk_prototype("fcc", "Ni", 3.52)
        rows = {"structure": "fcc Ni, 1 atom, a = 3.52 Å, spin-polarised", "cutoff": [], "kpoint_density": []}
        if dry_run:
            return rows
        base = self.spec.resolved_kwargs()
        for key, values, fixed in (
            ("cutoff", CONVERGENCE_CUTOFFS, {"kpoint_density": base["kpoint_density"]}),
            ("kpoint_density", CONVERGENCE_DENSITIES, {"cutoff": base["cutoff"]}),
        ):
            for value in values:
                spec = CalculatorSpec("gpaw", {**base, **fixed, key: value})
                data, failures = label([atoms.copy()], spec, self.cache_dir, progress=False)
                if failures:
                    self.log(f"convergence check {key}={value} failed: {failures[0]}")
                    continue
                result = data[0]
                stress = result.get_stress()
                rows[key].append(
                    {
                        key: value,
                        "kpts": kpoint_mesh(atoms, fixed.get("kpoint_density", value)),
                        "energy_per_atom": result.get_potential_energy() / len(result),
                        "pressure_gpa": float(-stress[:3].mean() * 160.21766),
                        "magnetic_moment": result.info.get("magnetic_moment"),
                        "wall_time_s": result.info.get("label_wall_time_s"),
                        "cpu_time_s": result.info.get("label_cpu_time_s"),
                    }
                )
            reference = rows[key][-1]["energy_per_atom"] if rows[key] else 0.0
            for row in rows[key]:
                row["delta_mev_per_atom"] = round(1000 * (row["energy_per_atom"] - reference), 2)
            deltas = ", ".join(f"{row[key]}: {row['delta_mev_per_atom']} meV" for row in rows[key])
            self.log(f"convergence vs {key}: {deltas}")
        return rows

    def equations_of_state(self, dry_run: bool) -> dict[str, Atoms]:
        """Seven-point isotropic scans around literature lattice constants; a Birch–Murnaghan fit gives the equilibrium,
        which is labelled as the reference structure. Scan points join the dataset as ``eos``."""
        from ase.eos import EquationOfState

        prototypes = {
            "Ni": ("fcc", ["Ni"]), "NiAl": ("B2", ["Ni", "Al"]), "Ni3Al": ("L12", ["Ni", "Al"]),
            "Cu": ("fcc", ["Cu"]), "Al": ("fcc", ["Al"]),
        }
        if self.quick:
            prototypes = {"Ni": prototypes["Ni"], "NiAl": prototypes["NiAl"]}
        scans, equilibria = [], {}
        for name, (prototype, elements) in prototypes.items():
            guess = generate.bulk_prototype(prototype, elements, GUESS_LATTICE[name])
            mesh = kpoint_mesh(guess, self.spec.resolved_kwargs()["kpoint_density"])
            points = generate.isotropic_strains(guess, EOS_STRAINS if not self.quick else [-0.02, 0.0, 0.01, 0.02])
            for atoms in points:
                atoms.info["kpts"] = mesh
                atoms.info["system"] = name
            scans.append((name, prototype, elements, points, mesh, guess.get_volume()))
        if dry_run:
            return {name: generate.bulk_prototype(p, e, GUESS_LATTICE[name]) for name, p, e, *_ in scans}
        every_point = [atoms for scan in scans for atoms in scan[3]]
        labelled = self.label_stage("eos", every_point)
        energies = {atoms.info["id"]: atoms.get_potential_energy() for atoms in labelled}
        references = []
        for name, prototype, elements, points, mesh, guess_volume in scans:
            volumes = [a.get_volume() for a in points if a.info["id"] in energies]
            values = [energies[a.info["id"]] for a in points if a.info["id"] in energies]
            if len(values) < 4:  # Birch–Murnaghan has four parameters
                self.log(f"EOS of {name}: only {len(values)} points labelled; using the starting lattice constant")
                lattice = GUESS_LATTICE[name]
            else:
                eos = EquationOfState(volumes, values, eos="birchmurnaghan")
                v0, e0, bulk_modulus = eos.fit()
                lattice = round(GUESS_LATTICE[name] * (v0 / guess_volume) ** (1 / 3), 4)
                self.log(f"EOS of {name}: a0 = {lattice:.4f} Å, B = {bulk_modulus * 160.21766:.0f} GPa")
            equilibrium = generate.bulk_prototype(prototype, elements, lattice)
            equilibrium.info["kpts"] = mesh
            equilibrium.info["system"] = name
            equilibria[name] = equilibrium
            references.append(equilibrium)
        self.references = self.label_stage("reference", references)
        for atoms in self.references:
            atoms.info["lattice_constant"] = float(atoms.info["lattice_constant"])
        return equilibria

    def plan(self, equilibria: dict[str, Atoms]) -> list[tuple[str, list[Atoms]]]:
        """Everything after the equations of state, most important first; each frame's k-mesh is its parent's."""
        density = self.spec.resolved_kwargs()["kpoint_density"]

        def family(parent: Atoms, frames: list[Atoms]) -> list[Atoms]:
            mesh = kpoint_mesh(parent, density)
            for atoms in frames:
                atoms.info["kpts"] = mesh
                atoms.info["system"] = parent.info.get("system", parent.get_chemical_formula())
            return frames

        def cubic(name: str) -> Atoms:
            """The 4-atom cubic cell of an fcc element or Ni₃Al, or a 4-atom NiAl B2 (2×1×1)."""
            atoms = equilibria[name]
            if name in ("Ni", "Cu", "Al"):
                atoms = generate.bulk_prototype("fcc", name, atoms.info["lattice_constant"], cubic=True)
            elif name == "NiAl":
                atoms = generate.supercell(atoms, [2, 1, 1])
            atoms.info["system"] = name
            return atoms

        def strained_rattles(parent: Atoms, count: int, stdev: float, max_strain: float, seed: int) -> list[Atoms]:
            strained = generate.random_strains(parent, count, max_strain, seed=seed)
            return [generate.rattle(atoms, stdev, seed=seed + i) for i, atoms in enumerate(strained)]

        if self.quick:
            return [("random_strain", family(equilibria["NiAl"], generate.random_strains(equilibria["NiAl"], 1, 0.02)))]

        names = [n for n in ("Ni", "NiAl", "Ni3Al", "Cu", "Al") if n in equilibria]
        counts = {"Ni": 5, "NiAl": 5, "Ni3Al": 4, "Cu": 3, "Al": 3}
        random_strain = [
            family(equilibria[n], generate.random_strains(equilibria[n], counts[n], 0.03, seed=10 + i))
            for i, n in enumerate(names)
        ]
        rattle_counts = {"Ni": 8, "Ni3Al": 8, "NiAl": 6, "Cu": 3, "Al": 3}
        rattled = [
            family(cubic(n), strained_rattles(cubic(n), rattle_counts[n], 0.06, 0.015, seed=100 + 10 * i))
            for i, n in enumerate(rattle_counts)
        ]

        # Ni–Cu solid solutions: every Ni/Cu arrangement of the 4-atom cubic cell at x(Cu) = ¼, ½, ¾ (Vegard a).
        a_ni, a_cu = equilibria["Ni"].info["lattice_constant"], equilibria["Cu"].info["lattice_constant"]
        solid_solutions = []
        for j, x_cu in enumerate((0.25, 0.5, 0.75)):
            host = generate.bulk_prototype("fcc", "Ni", (1 - x_cu) * a_ni + x_cu * a_cu, cubic=True)
            alloy = generate.substitute(host, {"Ni": 1 - x_cu, "Cu": x_cu}, seed=j)
            alloy.info["system"] = "NiCu"
            frames = [alloy] + generate.isotropic_strains(alloy, [-0.02, 0.02])
            frames += strained_rattles(alloy, 3, 0.06, 0.015, seed=200 + 10 * j)
            solid_solutions.append(family(alloy, frames))

        # Ni-rich B2: one Al site of the 4-atom NiAl cell taken by Ni (an antisite defect at 75 % Ni).
        b2 = cubic("NiAl")
        al_site = b2.get_chemical_symbols().index("Al")
        ni_rich = generate.substitute(b2, {"Ni": 1.0}, sublattice=[al_site])
        off_stoichiometry = family(b2, [ni_rich] + strained_rattles(ni_rich, 2, 0.06, 0.015, seed=300))

        a_ni_prim = equilibria["Ni"]
        ni_slab = generate.slab(a_ni_prim, (1, 1, 1), layers=4, vacuum=10.0)
        ni_slab.info["system"] = "Ni(111)"
        slabs = family(ni_slab, [ni_slab] + generate.rattles(ni_slab, 2, 0.05, seed=400))

        perfect = generate.supercell(a_ni_prim, [2, 2, 2])
        perfect.info["system"] = "Ni"
        with_vacancy = generate.vacancy(perfect, 0)
        vacancies = family(perfect, [perfect, with_vacancy, generate.rattle(with_vacancy, 0.05, seed=500)])

        faults = []
        for fraction in (0.0, 1.0, 0.5):
            fault = generate.stacking_fault("Ni", a_ni, layers=6, fraction=fraction)
            fault.info["system"] = "Ni(111) stacking"
            faults.append(fault)
        faults = family(faults[0], faults)

        # While time remains: more, larger rattles of the 4-atom cells (most force information per CPU second).
        extra = [
            frame for i, n in enumerate(("Ni", "Ni3Al", "NiAl"))
            for frame in family(cubic(n), strained_rattles(cubic(n), 6, 0.12, 0.02, seed=600 + 10 * i))
        ]

        # Last: small cells under larger strains (stress and energy–volume information at ~30 s each): the primitive
        # 1-atom fcc cells and the 2-atom B2 cell (rattled, so it carries forces too).
        small_strains = [
            frame for i, n in enumerate(("Ni", "Cu", "Al"))
            for frame in family(equilibria[n], generate.random_strains(equilibria[n], 6, 0.05, seed=700 + 10 * i))
        ] + family(equilibria["NiAl"], strained_rattles(equilibria["NiAl"], 8, 0.08, 0.04, seed=750))

        def first(groups: list[list[Atoms]], count: int) -> list[Atoms]:
            return [atoms for group in groups for atoms in group[:count]]

        def rest(groups: list[list[Atoms]], count: int) -> list[Atoms]:
            return [atoms for group in groups for atoms in group[count:]]

        # Two passes over the bulk families: a few of each system first, then the slab, vacancy and stacking fault
        # (the property tasks need them), then the rest, so an interrupted run still covers every kind of structure.
        return [
            ("random_strain", first(random_strain, 1)),
            ("rattle", first(rattled, 2)),
            ("solid_solution", first(solid_solutions, 1)),
            ("slab", slabs),
            ("vacancy", vacancies),
            ("stacking_fault", faults),
            ("off_stoichiometry", off_stoichiometry),
            ("random_strain", rest(random_strain, 1)),
            ("rattle", rest(rattled, 2)),
            ("solid_solution", rest(solid_solutions, 1)),
            ("extra_rattle", extra),
            ("small_strain", small_strains),
        ]

    # -- outputs -----------------------------------------------------------------------------------------------------
    def write_outputs(self, final: bool = False) -> None:
        if self.helper:
            return
        labelled = [frames[position] for _, frames in self.stages for position in sorted(frames)]
        if labelled:
            Dataset(labelled, name="ni_alloy_pbe").write(self.output / "ni_alloy_pbe.extxyz")
        if self.references:
            Dataset(self.references, name="ni_alloy_reference").write(self.output / "ni_alloy_reference.extxyz")
        self.write_provenance(labelled, final)

    def write_provenance(self, labelled: list[Atoms], final: bool) -> None:
        import ase
        import gpaw

        path = self.output / "provenance.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        sessions = [s for s in previous.get("sessions", []) if s.get("started") != self.started]
        sessions.append({"started": self.started, "wall_time_s": round(time.time() - self.started, 1), "final": final})
        timings = [
            {
                "id": atoms.info["id"], "config_type": atoms.info.get("config_type"),
                "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms), "kpts": list(atoms.info.get("kpts", [])),
                "wall_time_s": atoms.info.get("label_wall_time_s"),
                "cpu_time_s": atoms.info.get("label_cpu_time_s"),
            }
            for atoms in labelled
        ]
        cache_records = LabelCache(self.cache_dir, self.spec).records()
        provenance = {
            "description": "Ni / Ni–Al / Ni–Cu PBE dataset for atomtune demos and tests (scripts/make_ni_dataset.py)",
            "calculator": "GPAW plane-wave PBE",
            "settings": self.spec.resolved_kwargs(),
            "settings_notes": (
                "cutoff in eV; kpoint_density in k-points per Å⁻¹ (ASE convention), Γ-centred, each strained/rattled "
                "family uses its parent cell's mesh (info kpts); Fermi–Dirac smearing width in eV; spin-polarised for "
                "structures with Ni (initial moment 0.6 μB per Ni); energy is the force-consistent free energy."
            ),
            "versions": {
                "gpaw": gpaw.__version__, "ase": ase.__version__, "numpy": np.__version__,
                "python": platform.python_version(), "gpaw_setups": "gpaw-data (PyPI)",
            },
            "threads": "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; one process, or two sharing the plan (--helper)",
            "convergence_check": self.convergence or previous.get("convergence_check", {}),
            "n_structures": len(labelled),
            "n_reference_structures": len(self.references),
            "config_types": _count_by_name(self.stages),
            "total_label_wall_time_s": round(sum(r.get("wall_time_s", 0.0) for r in cache_records), 1),
            "total_label_cpu_time_s": round(sum(r.get("cpu_time_s", 0.0) for r in cache_records), 1),
            "timing_note": (
                "wall times were measured on a 2-core machine shared with other jobs; cpu_time_s (one process, one "
                "thread) is what a structure costs on a dedicated core (records written before it was kept lack it)."
            ),
            "sessions": sessions,
            "complete": final and not self.stopped_early,
            "failures": [str(f) for f in self.failures],
            "timings": timings,
        }
        self.output.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(provenance, indent=1, default=str))
        tmp.replace(path)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _claim(result_path: Path) -> Path | None:
    """Create ``<result>.claim`` holding our pid, or return None when a live process holds it (a dead one's is taken)."""
    claim = _claim_path(result_path)
    for _ in range(2):
        try:
            with open(claim, "x") as handle:
                handle.write(str(os.getpid()))
            return claim
        except FileExistsError:
            if _claim_alive(result_path):
                return None
            claim.unlink(missing_ok=True)  # left by a killed process
    return None


def _claim_alive(result_path: Path) -> bool:
    try:
        pid = int(_claim_path(result_path).read_text() or 0)
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _claim_path(result_path: Path) -> Path:
    return result_path.with_name(result_path.name + ".claim")


def _count_by_name(stages: list[tuple[str, dict[int, Atoms]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, frames in stages:
        counts[name] = counts.get(name, 0) + len(frames)
    return counts


if __name__ == "__main__":
    main()
