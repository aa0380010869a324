"""Compute the GPAW PBE reference column of the ni_alloy demo's property tasks (one core, resumable).

The demo campaign (``resources/campaigns/ni_alloy_demo.yaml``) runs property tasks on CHGNet and SevenNet and compares
them with ``package:ni_alloy/reference_tasks.json``. This script writes that file by running the very same task
functions (``atomtune.tasks.eos.run``, ``atomtune.tasks.vacancy.run``) with GPAW as the calculator, the GPAW settings of
the shipped dataset (``ni_alloy/provenance.json``: 450 eV, k-point density 2.5 Å⁻¹, Fermi–Dirac 0.1 eV, spin-polarised
Ni) and the task settings read from the campaign file itself, so models and reference cannot drift apart.

The energy the tasks see is GPAW's force-consistent (Mermin free) energy, the one the dataset's labels hold and the
fine-tuned models learn, and the one whose derivatives are GPAW's forces and stress. GPAW's ``get_potential_energy()``
returns the σ → 0 extrapolation instead (26 meV/atom higher for fcc Ni at 0.1 eV Fermi–Dirac width); on that surface
the reference would differ from a perfect fine-tuned model by up to 2 GPa in B, 0.002 Å in a and 16 meV in the Ni
vacancy formation energy (measured): differences a fine-tuned model would be blamed for.

Inputs, in ``--dataset`` (the shipped ``ni_alloy/`` by default, written by ``scripts/make_ni_dataset.py``):
``ni_alloy_reference.extxyz`` (the GPAW equilibria of fcc Ni, Al, Cu, B2 NiAl, L1₂ Ni₃Al) or, while the dataset run has
not written that file yet, the ``config_type=reference`` frames of ``ni_alloy_pbe.extxyz`` (the same labelled frames
that file will hold, with the same ids), and ``provenance.json`` (the GPAW settings).

Outputs, in ``--output`` (the shipped ``ni_alloy/`` by default): ``ni_fcc.extxyz`` (1-atom fcc Ni at the GPAW lattice
constant, the vacancy task's input), ``reference_tasks.json`` (``{task: [records exactly as run() returns]}``),
``reference_tasks_provenance.json`` (settings, versions, structure sources, wall and CPU time per task and structure)
and ``reference_cache/`` (one JSON per finished task and structure, written atomically: a rerun skips finished work).

The ``relax`` task gets no GPAW column: its records already measure a model against the reference (RMSD to the
GPAW-relaxed input structure, energy against the GPAW label the structure carries), and ``relax.compare`` would set
GPAW's own rattle-and-relax (its steps, its RMSD) beside the models' — tens of GPAW force and stress calls per structure
for numbers that say nothing about the models. Worse, with the cell filter GPAW would relax to zero stress, which the
Pulay stress of a 450 eV basis (Cu: 4.8 GPa) moves away from the E–V minimum the reference structures sit at.

Run (single-threaded BLAS; the outputs are rewritten after every finished structure)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/make_ni_reference_tasks.py
    # smoke test with tiny GPAW settings into a scratch folder:
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/make_ni_reference_tasks.py --output /tmp/ni_reference \\
        --gpaw-settings '{"cutoff": 250, "kpoint_density": 1.5}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.campaign.config import load_campaign
from atomtune.data.dataset import Dataset, structure_id
from atomtune.data.label import CalculatorSpec, ForceConsistentEnergy, kpoint_mesh
from atomtune.exceptions import AtomtuneError
from atomtune.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "src" / "atomtune" / "resources"
CAMPAIGN = RESOURCES / "campaigns" / "ni_alloy_demo.yaml"
DATASET = RESOURCES / "ni_alloy"

#: The campaign's tasks that get a GPAW column (see the module docstring for relax).
REFERENCE_TASKS = ("eos", "vacancy")

#: Bump when the meaning of a cache file changes, so old files are not reused (2: force-consistent energies).
CACHE_VERSION = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DATASET, help="output folder (default: the shipped ni_alloy/)")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="folder with the dataset's reference structures "
                        "and provenance.json (default: the shipped ni_alloy/)")
    parser.add_argument("--campaign", type=Path, default=CAMPAIGN, help="campaign whose task settings to use")
    parser.add_argument("--gpaw-settings", default="{}", help="JSON overriding the GPAW settings (smoke test)")
    parser.add_argument("--tasks", nargs="+", default=list(REFERENCE_TASKS), choices=REFERENCE_TASKS)
    parser.add_argument("--limit", type=int, default=None, help="first N structures per task (to measure cost)")
    args = parser.parse_args()

    dataset_provenance = args.dataset / "provenance.json"
    settings = json.loads(dataset_provenance.read_text())["settings"]
    spec = CalculatorSpec.parse("gpaw", {**settings, **json.loads(args.gpaw_settings)})
    references, source = reference_structures(args.dataset)
    args.output.mkdir(parents=True, exist_ok=True)
    ni_fcc_path = write_ni_fcc(references, args.output / "ni_fcc.extxyz")
    inputs = {
        "ni_alloy_reference.extxyz": (references, source),
        "ni_fcc.extxyz": (read(ni_fcc_path), shown(ni_fcc_path)),
    }

    run = ReferenceRun(args.output, spec, shown(dataset_provenance), args.campaign)
    log(f"GPAW settings {spec.resolved_kwargs()}; reference structures from {source}")
    for entry in load_campaign(args.campaign, check_files=False).tasks:
        if entry.task not in args.tasks:
            continue
        name = Path(entry.structures or "").name
        if name not in inputs:
            raise AtomtuneError(f"{args.campaign}: task {entry.task} reads {entry.structures}; this script supplies "
                                f"only {', '.join(inputs)}.")
        structures, structures_source = inputs[name]
        run.task(entry.task, entry.settings, structures[: entry.limit or args.limit], structures_source)
    # a run restricted to some tasks or structures measures cost; only the full set is the shipped reference
    run.write(complete=args.limit is None and set(args.tasks) == set(REFERENCE_TASKS))
    log(f"done: {run.output / 'reference_tasks.json'}")


class ReferenceRun:
    """The tasks of one (possibly resumed) run: per-structure cache, records in order, provenance."""

    def __init__(self, output: Path, spec: CalculatorSpec, settings_source: str, campaign: Path):
        self.output = output
        self.spec = spec
        self.settings_source = settings_source
        self.campaign = campaign
        self.cache_dir = output / "reference_cache"
        self.results: dict[str, list[dict]] = {}
        self.task_settings: dict[str, dict] = {}
        self.timings: list[dict] = []
        self.sources: dict[str, str] = {}

    def task(self, task: str, settings: dict, structures: list[Atoms], source: str) -> None:
        """Run ``task`` on each structure with GPAW (cached per structure); outputs rewritten after each one."""
        module = load_task(task)
        task_settings = module.Settings(**settings)
        if task in self.results:
            raise AtomtuneError(f"{self.campaign}: task {task} appears twice; reference_tasks.json keys by task name.")
        self.results[task] = []
        self.task_settings[task] = asdict(task_settings)
        self.sources[task] = source
        for atoms in structures:
            path = self.cache_path(task, atoms, task_settings)
            if path.exists():
                entry = json.loads(path.read_text())
                log(f"{task} {atoms.info['id']} ({atoms.get_chemical_formula()}): cached")
            else:
                log(f"{task} {atoms.info['id']} ({atoms.get_chemical_formula()}): running")
                entry = self.compute(module, task, atoms, task_settings)
                write_atomically(path, entry)
                log(f"{task} {atoms.info['id']}: {summary(task, entry['records'])} "
                    f"[wall {entry['wall_time_s']:.0f} s, CPU {entry['cpu_time_s']:.0f} s]")
            self.results[task].extend(entry["records"])
            timing_keys = ("task", "id", "formula", "n_atoms_cell", "kpts", "wall_time_s", "cpu_time_s")
            self.timings.append({key: entry[key] for key in timing_keys})
            self.write(complete=False)

    def compute(self, module, task: str, atoms: Atoms, task_settings) -> dict:
        """One structure through ``module.run`` with a GPAW calculator built for it; records and cost."""
        atoms = atoms.copy()
        calculator, cell = reference_calculator(self.spec, task, atoms, task_settings)
        wall, cpu = time.perf_counter(), time.process_time()
        records = module.run([atoms], calculator, task_settings, progress=False)
        return {
            "task": task,
            "id": str(atoms.info["id"]),
            "formula": atoms.get_chemical_formula(),
            "n_atoms_cell": len(cell),
            "kpts": kpoint_mesh_of(cell, self.spec),
            "records": records,
            # CPU time of this one-thread process: what the work costs on a dedicated core on a shared machine.
            "wall_time_s": round(time.perf_counter() - wall, 1),
            "cpu_time_s": round(time.process_time() - cpu, 1),
        }

    def cache_path(self, task: str, atoms: Atoms, task_settings) -> Path:
        """``reference_cache/<task>-<id>-<hash of structure, moments, k-mesh, task and GPAW settings>.json``."""
        key = {
            "structure": structure_id(atoms),
            "initial_magmoms": np.round(atoms.get_initial_magnetic_moments(), 3).tolist(),
            "kpts": atoms.info.get("kpts"),
            "task": task,
            "task_settings": asdict(task_settings),
            "gpaw": self.spec.resolved_kwargs(),
            "version": CACHE_VERSION,
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.cache_dir / f"{task}-{atoms.info['id']}-{digest}.json"

    def write(self, complete: bool) -> None:
        """``reference_tasks.json`` (records in structure order) and ``reference_tasks_provenance.json``."""
        import ase
        import gpaw

        import atomtune

        write_atomically(self.output / "reference_tasks.json", self.results)
        errors = [f"{task} {r['id']}: {r['error']}" for task, records in self.results.items() for r in records
                  if r.get("error")]
        provenance = {
            "description": "GPAW PBE reference column of the ni_alloy demo's property tasks "
                           "(scripts/make_ni_reference_tasks.py), computed through atomtune's own task functions",
            "calculator": "GPAW plane-wave PBE, atomtune.data.label.CalculatorSpec('gpaw', settings).build(atoms)",
            "energy": "force-consistent (Mermin free) energy, as the dataset's labels, not GPAW's sigma -> 0 "
                      "extrapolation; see the script's docstring",
            "settings": self.spec.resolved_kwargs(),
            "settings_source": f"{self.settings_source} (the dataset's, scripts/make_ni_dataset.py)",
            "k_mesh_note": (
                "each calculator is built for the cell the task computes: eos uses the structure's pinned mesh (the "
                "dataset's equation-of-state mesh, the same at every volume); vacancy uses the supercell's own mesh at "
                "the dataset's k-point density (4×4×4 for the 2×2×2 supercell of primitive fcc Ni, as the dataset's "
                "vacancy labels), since GPAW fixes the mesh when the calculator is built"
            ),
            "task_settings": self.task_settings,
            "task_settings_source": shown(self.campaign),
            "structures": self.sources,
            "tasks_without_reference": {"relax": "its records measure a model against the reference structure and "
                                                 "label directly; see the script's docstring"},
            "versions": {
                "atomtune": getattr(atomtune, "__version__", None), "gpaw": gpaw.__version__, "ase": ase.__version__,
                "numpy": np.__version__, "python": platform.python_version(),
            },
            "threads": "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1, one process",
            "total_wall_time_s": round(sum(t["wall_time_s"] for t in self.timings), 1),
            "total_cpu_time_s": round(sum(t["cpu_time_s"] for t in self.timings), 1),
            "timing_note": (
                "wall times on a 2-core machine shared with other jobs; CPU time (one process, one thread) is the cost "
                "on a dedicated core. Cached entries keep the times of the run that computed them."
            ),
            "timings": self.timings,
            "errors": errors,
            "complete": complete,
        }
        write_atomically(self.output / "reference_tasks_provenance.json", provenance)


def reference_calculator(spec: CalculatorSpec, task: str, atoms: Atoms, task_settings):
    """GPAW for ``task`` on ``atoms`` (reporting its force-consistent energy) and the cell it will compute (the k-mesh
    is fixed when GPAW is built).

    ``spec.build(atoms)`` also gives ``atoms`` its initial moments (spin-polarised Ni), which the task's copies keep, as
    in the campaign's own reference step. The vacancy task computes only its supercell, so its calculator is built for
    the supercell: the dataset's k-point density then gives the supercell's own mesh, not the primitive cell's.
    """
    calculator = spec.build(atoms)
    if task != "vacancy":
        return ForceConsistentEnergy(calculator), atoms
    if task_settings.supercell is None:
        raise AtomtuneError("the vacancy reference needs an explicit supercell in the campaign's task settings.")
    supercell = atoms.repeat(tuple(task_settings.supercell))
    supercell.info.pop("kpts", None)
    return ForceConsistentEnergy(spec.build(supercell)), supercell


def kpoint_mesh_of(atoms: Atoms, spec: CalculatorSpec) -> list[int]:
    """The mesh GPAW uses for ``atoms``: the pinned ``info["kpts"]``, else the density's."""
    pinned = atoms.info.get("kpts")
    if pinned is not None:
        return [int(n) for n in np.ravel(pinned)]
    return kpoint_mesh(atoms, spec.resolved_kwargs()["kpoint_density"])


def reference_structures(dataset: Path) -> tuple[list[Atoms], str]:
    """The dataset's GPAW equilibria: ``ni_alloy_reference.extxyz``, else the ``reference`` frames of the dataset."""
    path = dataset / "ni_alloy_reference.extxyz"
    if path.exists():
        return read(path), shown(path)
    frames = [atoms for atoms in read(dataset / "ni_alloy_pbe.extxyz") if atoms.info.get("config_type") == "reference"]
    if not frames:
        raise AtomtuneError(
            f"{dataset}: neither ni_alloy_reference.extxyz nor reference frames in ni_alloy_pbe.extxyz; run "
            "scripts/make_ni_dataset.py through its equation-of-state stage first."
        )
    source = (
        f"{shown(dataset / 'ni_alloy_pbe.extxyz')} (its config_type=reference frames, which the dataset run writes to "
        "ni_alloy_reference.extxyz; that file did not exist yet)"
    )
    return frames, source


def write_ni_fcc(references: list[Atoms], path: Path) -> Path:
    """The vacancy task's input: the GPAW fcc Ni equilibrium (1-atom primitive cell, with its GPAW labels)."""
    candidates = [a for a in references if a.info.get("system") == "Ni" and len(a) == 1]
    if len(candidates) != 1:
        raise AtomtuneError(f"expected one 1-atom fcc Ni among the reference structures, found {len(candidates)}.")
    ni = candidates[0].copy()
    ni.calc = candidates[0].calc
    ni.info["parent"] = ni.info["id"]
    ni.info["id"] = "Ni-fcc"
    # The mesh must follow the cell a calculator is built for (a supercell here), not the primitive cell's pinned one.
    ni.info.pop("kpts", None)
    Dataset([ni], name="ni_fcc").write(path)
    return path


def read(path: Path) -> list[Atoms]:
    """Structures as the campaign's task step reads them (labels optional)."""
    return list(Dataset.read(path, require=()))


def summary(task: str, records: list[dict]) -> str:
    """One log line of the headline numbers."""
    parts = []
    for record in records:
        if record.get("error"):
            parts.append(f"{record['id']} ERROR {record['error']}")
        elif task == "eos":
            parts.append(f"a0 {record['lattice_constant']:.4f} Å, B {record['bulk_modulus_gpa']:.1f} GPa, "
                         f"B' {record.get('bulk_modulus_derivative', float('nan')):.2f}, "
                         f"fit rmse {record['fit_rmse_mev_per_atom']:.2f} meV/atom")
        elif task == "vacancy":
            parts.append(f"{record['id']} E_f {record['vacancy_formation_energy']:.3f} eV (unrelaxed "
                         f"{record['vacancy_formation_energy_unrelaxed']:.3f} eV, {record['relaxation_steps']} steps)")
    return "; ".join(parts)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (provenance must not carry this machine's folders)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_atomically(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


if __name__ == "__main__":
    main()
