"""``atomtune md``: molecular dynamics of a model on big cells, integrated by ASE or by LAMMPS (fix external).

A thin front end of the md task (``atomtune.tasks.md``): the same run, records and plots as ``atomtune bench --task
md``, with the engine chosen here and a memory estimate checked before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("md")
    def md_command(
        model: list[str] = typer.Option(..., "--model", help="model name, .model file or fine-tuned dir; repeat"),
        data: Path = typer.Option(
            ..., "--data", help="structures to run (extxyz, ASE db, or any file `data read` reads)"
        ),
        engine: str = typer.Option("ase", "--engine", help="ase (ASE's integrators) or lammps (fix external)"),
        settings: str = typer.Option(
            None, "--settings", help="md settings as JSON or a .json/.yaml file (fields of atomtune.tasks.md.Settings)"
        ),
        out: Path = typer.Option(Path("md"), "--out", help="output folder: records_<model>.json, compare.json, PNGs"),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
        dtype: str = typer.Option("float32", "--dtype", help="model precision: float32 or float64"),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)"),
        trust_model: bool = typer.Option(False, "--trust-model", help="allow pickled model files (MACE .model)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ) -> None:
        """Run NVT/NPT then NVE with each model; report temperature, density, NVE drift, RDF / ADF and stability.

        With --engine lammps, LAMMPS integrates (its fix nvt / npt / langevin / temp/csvr / press/berendsen) and the
        model computes energy, forces and virial each step through fix external: one rank, the model on one device.
        Each cell's memory need is estimated first and a cell that would not fit is refused with the estimate.

        Example: atomtune md --model ft/ --engine lammps --data big.extxyz --settings md.yaml --out md/
        """
        from rich.console import Console

        from atomtune.cli.bench import _settings_dict, comparison_table
        from atomtune.exceptions import AtomtuneError
        from atomtune.files import safe_file_name
        from atomtune.runtime import configure_threads
        from atomtune.tasks.spec import TaskRun

        configure_threads(threads)
        if engine not in ("ase", "lammps"):
            raise AtomtuneError(f"--engine {engine!r}: use ase or lammps.")
        values = _settings_dict(settings)
        if "engine" in values and values["engine"] != engine:
            raise AtomtuneError(f"--engine {engine} and the settings' engine {values['engine']!r} disagree; give one.")
        values["engine"] = engine
        run = TaskRun(task="md", settings=values)  # validated before any work
        module = run.module()
        structures = _read(data)
        console = Console()
        console.print(
            f"{data}: {len(structures)} structure(s), {sum(len(a) for a in structures):,} atoms; engine {engine}"
        )

        from atomtune.models import chunking, load_potential

        results: dict[str, list[dict]] = {}
        for name in model:
            potential = load_potential(name, device=device, dtype=dtype, trust=trust_model)
            if device == "cpu":
                for index, atoms in enumerate(structures):
                    # a cell over the memory budget runs in exact chunks (atomtune.models.chunking); one whose smallest
                    # chunk would not fit either is refused here, with the estimate, before anything runs
                    density = chunking.number_density(atoms)
                    whole = chunking.estimate_bytes(potential, len(atoms), density)
                    text = f"~{whole / 2**30:.2f} GiB per force evaluation (estimate)"
                    if chunking.recompute_for_inference(potential, chunking.estimate_edges(potential, len(atoms), density)):
                        text += ", activations recomputed in the backward pass (same numbers, more time)"
                    if chunking.needs_chunking(potential, atoms):
                        try:
                            summary = chunking.plan(potential, atoms).summary()
                        except chunking.CellTooLargeError as error:
                            raise chunking.CellTooLargeError(f"{data} structure {index}: {error}") from None
                        text += (
                            f", over the budget: {summary['n_chunks']} chunks of ≤ {summary['max_cluster_atoms']:,} "
                            f"atoms with their halo (~{summary['estimated_chunk_gib']:.2f} GiB each, "
                            f"{summary['work_overhead']:.1f}× the work)"
                        )
                    console.print(f"{name}: structure {index}: {text}")
            results[name] = run.run(structures, potential, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        for label, records in results.items():
            (out / f"records_{safe_file_name(label)}.json").write_text(json.dumps(records, indent=1))
        rows = module.compare(results)
        (out / "compare.json").write_text(json.dumps({"task": "md", "engine": engine, "rows": rows}, indent=1))
        plots = module.plot(results, out)
        console.print(comparison_table(rows, list(results), f"md ({engine}) on {data.name}"))
        console.print(f"wrote {len(results)} record file(s), compare.json and {len(plots)} plot(s) in {out}")


def _read(path: Path):
    """Structures from an extxyz / ASE db, or from any structure file (CIF, POSCAR, …) through ``data read``'s reader."""
    from atomtune.data.dataset import Dataset

    if path.suffix.lower() in (".xyz", ".extxyz", ".db"):
        return Dataset.read(path, require=())
    from atomtune.data.readers.structure_files import read_structures

    return read_structures(path)
