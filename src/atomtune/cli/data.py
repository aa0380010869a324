"""``atomtune data``: curate, select, show and convert datasets (the data box of the flow, from the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atomtune.cli.options import trust_model_option

SOURCE_HELP = (
    "'lematerial' (LeMat-Bulk streamed from the Hugging Face Hub), LeMat-Bulk parquet file(s) or a quoted glob, "
    "an MPtrj .json, vasprun.xml / OUTCAR / a folder of VASP runs, an OC22 or plain ASE .db, or extxyz."
)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Read, curate, select and look at datasets.\n\nExample: atomtune data curate --source lematerial "
        "--config compatible_pbe --preset heo --out heo.extxyz",
        no_args_is_help=True,
    )
    app.add_typer(data_app, name="data")

    @data_app.command("curate")
    def curate_command(
        source: str = typer.Option(..., "--source", help=SOURCE_HELP),
        more_sources: list[str] = typer.Argument(None, hidden=True, help="Files a shell-expanded --source glob adds."),
        out: Path = typer.Option(
            ..., "--out", help="Curated structures (.extxyz or .db); a .curation.json goes beside."
        ),
        config: str = typer.Option("compatible_pbe", "--config", help="LeMat-Bulk config (Hub only)."),
        preset: str = typer.Option(None, "--preset", help="Named filter set: heo (high-entropy oxides)."),
        min_cation_entropy: float = typer.Option(
            None, "--min-cation-entropy", help="Keep ideal cation-sublattice entropy ≥ this, in R (e.g. 1.5)."
        ),
        equimolar_tolerance: float = typer.Option(
            None, "--equimolar-tolerance", help="Keep cations within ± this mole fraction of equimolar (e.g. 0.05)."
        ),
        exclude_noble_metals: bool = typer.Option(
            False, "--exclude-noble-metals", help="Drop structures with Ru Rh Pd Ag Os Ir Pt Au."
        ),
        exclude: str = typer.Option(None, "--exclude", help="Drop structures with any of these elements: 'Pb,Cd'."),
        include: str = typer.Option(None, "--include", help="Keep structures containing all of these: 'O,Li'."),
        only: str = typer.Option(None, "--only", help="Keep structures made only of these elements: 'Cu,Ni,Al'."),
        min_elements: int = typer.Option(None, "--min-elements", help="At least this many elements."),
        max_elements: int = typer.Option(None, "--max-elements", help="At most this many elements."),
        max_atoms: int = typer.Option(None, "--max-atoms", help="At most this many atoms per structure."),
        max_force: float = typer.Option(None, "--max-force", help="Drop structures with any |F| above this (eV/Å)."),
        functional: str = typer.Option(None, "--functional", help="Keep these functionals: 'pbe' or 'pbe,pbesol'."),
        require_forces: bool = typer.Option(False, "--require-forces", help="Drop structures without forces."),
        max_rows: int = typer.Option(None, "--max-rows", help="Stop after reading this many rows (a quick look)."),
        format: str = typer.Option(
            None, "--format", help="Force a reader: lematerial, mptrj, vasp, oc22, extxyz, ase-db."
        ),
    ) -> None:
        """Filter a source down to the system you care about; every filter reports how many structures it removed.

        Example: atomtune data curate --source lematerial --config compatible_pbe --preset heo --out heo.extxyz

        Offline: atomtune data curate --source 'LeMat-Bulk/compatible_pbe/*.parquet' --preset heo --out heo.extxyz
        """
        from atomtune.data.curate import NOBLE_METALS, build_filters, curate
        from atomtune.exceptions import AtomtuneError

        filters = build_filters(
            preset=preset,
            only=_elements(only),
            include=_elements(include),
            exclude=_elements(exclude) + (list(NOBLE_METALS) if exclude_noble_metals else []),
            min_elements=min_elements,
            max_elements=max_elements,
            min_cation_entropy=min_cation_entropy,
            equimolar_tolerance=equimolar_tolerance,
            max_atoms=max_atoms,
            functional=_elements(functional, normalise=False),
            require_forces=require_forces,
            max_force=max_force,
        )
        sources = [source, *(more_sources or [])]
        with Console(stderr=True).status("reading …") as status:
            dataset, report = curate(
                sources[0] if len(sources) == 1 else sources,
                filters,
                max_rows=max_rows,
                progress=lambda read, passed: status.update(
                    f"read {read.read:,} rows; {passed:,} structures passed the composition filters"
                ),
                format=format,
                config=config,
            )
        _print_curation(report)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = out.with_name(out.stem + ".curation.json")
        report.write(record)
        if not len(dataset):
            raise AtomtuneError(f"no structure passed the filters; see the table above (also in {record}).")
        dataset.write(out)
        Console().print(f"wrote {len(dataset):,} structures to {out} and the curation record to {record}")

    @data_app.command("select")
    def select_command(
        data: str = typer.Option(..., "--data", help="Structures to choose from (extxyz, .db or any source)."),
        n: int = typer.Option(..., "--n", help="How many structures to select (DIRECT: clusters × per-cluster)."),
        out: Path = typer.Option(..., "--out", help="Selected structures (.extxyz or .db); a .selection.json beside."),
        method: str = typer.Option("direct", "--method", help="direct, random or farthest-point."),
        per_cluster: int = typer.Option(1, "--per-cluster", help="DIRECT: structures per cluster."),
        choose: str = typer.Option("centre", "--choose", help="DIRECT: centre or random within each cluster."),
        model: str = typer.Option(
            "chgnet-0.3.0", "--model", help="Foundation model whose embeddings describe structures."
        ),
        rest: Path = typer.Option(None, "--rest", help="Also write the structures not selected here."),
        seed: int = typer.Option(0, "--seed", help="Random seed (random picks, farthest-point start)."),
        batch_size: int = typer.Option(16, "--batch-size", help="Structures per embedding forward pass."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
        trust_model: bool = trust_model_option(),
    ) -> None:
        """Pick an informative subset: DIRECT sampling on a foundation model's embeddings, with random and
        farthest-point baselines scored for coverage side by side.

        Example: atomtune data select --data heo.extxyz --n 200 --model chgnet-0.3.0 --out heo_train.extxyz
        """
        import numpy as np

        from atomtune.data.readers import read_any
        from atomtune.data.select import compare_samplers, structure_features
        from atomtune.exceptions import AtomtuneError
        from atomtune.models import load_potential
        from atomtune.runtime import configure_threads

        if method not in ("direct", "random", "farthest-point"):
            raise AtomtuneError(f"unknown method {method!r}: use direct, random or farthest-point.")
        if n < 1 or per_cluster < 1:  # refused before the model is loaded and the embeddings computed
            raise AtomtuneError(
                f"--n {n} --per-cluster {per_cluster}: both must be at least 1 (--n is how many structures to select)."
            )
        configure_threads(threads)
        console = Console()
        dataset = read_any(data, require=())  # unlabelled pools are fine: selection often decides what to label
        potential = load_potential(model, device=device, trust=trust_model)
        features = structure_features(potential, list(dataset), batch_size=batch_size, progress=True)
        selections, rows = compare_samplers(features, n, per_cluster=per_cluster, choose=choose, seed=seed)
        table = Table(
            title=f"coverage of {len(dataset):,} structures ({model} embeddings, {rows[0]['n_components']} PCs)"
        )
        for column in ("method", "selected", "clusters covered", "feature coverage"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for row in rows:
            style = "bold" if row["method"] == method else ""
            table.add_row(
                f"[{style}]{row['method']}[/{style}]" if style else row["method"],
                str(row["n_selected"]),
                f"{row['cluster_coverage']:.1%} of {row['n_clusters']}",
                f"{row['feature_coverage']:.1%}",
            )
        console.print(table)
        chosen = selections[method]
        if n >= len(dataset):
            console.print(f"--n {n} ≥ {len(dataset)} structures in {data}: every structure is selected.")
        selected = dataset[list(chosen)]
        out.parent.mkdir(parents=True, exist_ok=True)
        selected.write(out)
        if rest is not None:
            dataset[[i for i in range(len(dataset)) if i not in set(chosen.tolist())]].write(rest)
        record = {
            "data": str(data),
            "model": model,
            "method": method,
            "per_cluster": per_cluster,
            "seed": seed,
            "selected_ids": [str(dataset[int(i)].info.get("id", int(i))) for i in chosen],
            "selected_indices": np.asarray(chosen).tolist(),
            "coverage": rows,
        }
        record_path = out.with_name(out.stem + ".selection.json")
        record_path.write_text(json.dumps(record, indent=2))
        console.print(f"wrote {len(selected)} structures ({method}) to {out} and {record_path}")

    @data_app.command("show")
    def show_command(
        data: str = typer.Option(..., "--data", help="Structures to look at (extxyz, .db or any source)."),
        out: Path = typer.Option(Path("views"), "--out", help="Folder for the PNGs and summary.md."),
        model: str = typer.Option(None, "--model", help="Model for the UMAP of embeddings (e.g. chgnet-0.3.0)."),
        selected: Path = typer.Option(None, "--selected", help="A selection (extxyz) to highlight on the UMAP."),
        examples: int = typer.Option(4, "--examples", help="How many example structures to draw."),
        seed: int = typer.Option(0, "--seed", help="UMAP random seed."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
        trust_model: bool = trust_model_option(),
    ) -> None:
        """Element counts (bar and periodic table), distributions of elements, sizes, energies and forces, example
        structures and, with --model, a UMAP of the model's embeddings; PNGs plus summary.md.

        Example: atomtune data show --data heo.extxyz --model chgnet-0.3.0 --selected heo_train.extxyz --out views/
        """
        from atomtune.data.readers import read_any
        from atomtune.data.show import show
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        dataset = read_any(data, require=())
        features = None
        if model is not None:
            from atomtune.data.select import structure_features
            from atomtune.models import load_potential

            features = structure_features(load_potential(model, device=device, trust=trust_model), list(dataset),
                                          progress=True)
        selected_ids = read_any(selected, require=()).ids() if selected is not None else None
        summary = show(dataset, out, features=features, selected_ids=selected_ids, n_examples=examples, seed=seed)
        Console().print(f"wrote {summary} and the PNGs beside it")

    @data_app.command("read")
    def read_command(
        files: list[str] = typer.Argument(..., help="CIF / POSCAR / any file ASE reads (globs allowed)."),
        out: Path = typer.Option(..., "--out", help="Output: .extxyz / .db, or .data (LAMMPS data, atom_style atomic)."),
        supercell: str = typer.Option(None, "--supercell", help="Repeat the cell: 2x2x1."),
        partial_occupancy: str = typer.Option(
            "error", "--partial-occupancy", help="error (default) or majority (each site takes its main species)."
        ),
        min_distance: float = typer.Option(0.7, "--min-distance", help="Closer atoms (Å) are overlapping sites."),
        allow_missing_hydrogens: bool = typer.Option(
            False, "--allow-missing-hydrogens", help="Accept a CIF whose formula has H its sites lack."
        ),
        format: str = typer.Option(None, "--format", help="ase.io format when the suffix does not say (vasp, …)."),
    ) -> None:
        """Read crystal-structure files with checks (partial occupancy, overlapping sites, missing H) and build
        supercells; write extxyz, ASE db or a LAMMPS data file (its type → element order is printed for pair_coeff).

        Example: atomtune data read tobermorite.cif --supercell 2x2x1 --out tob.extxyz
        """
        from atomtune.data.readers.structure_files import ReadSettings, parse_supercell, read_structures

        settings = ReadSettings(
            supercell=parse_supercell(supercell),
            partial_occupancy=partial_occupancy,
            min_distance=min_distance,
            allow_missing_hydrogens=allow_missing_hydrogens,
            format=format,
        )
        dataset = read_structures(files, settings)
        console = Console()
        for atoms in dataset:
            note = f"; {atoms.info['occupancy_resolved']}" if "occupancy_resolved" in atoms.info else ""
            console.print(f"{atoms.info['id']}: {atoms.get_chemical_formula()}, {len(atoms)} atoms{note}", highlight=False)
        if out.suffix.lower() in (".data", ".lmp"):
            from atomtune.lammps.inputs import write_lammps_data

            for line in write_lammps_data(out, list(dataset)):
                console.print(line, highlight=False)
        else:
            dataset.write(out)
        console.print(f"wrote {len(dataset):,} structure(s) to {out}")

    @data_app.command("convert")
    def convert_command(
        source: str = typer.Option(..., "--source", help=SOURCE_HELP),
        more_sources: list[str] = typer.Argument(None, hidden=True, help="Files a shell-expanded --source glob adds."),
        out: Path = typer.Option(
            ..., "--out", help="Output file: .extxyz or .db (labels as REF_energy/forces/stress)."
        ),
        format: str = typer.Option(
            None, "--format", help="Force a reader: lematerial, mptrj, vasp, oc22, extxyz, ase-db."
        ),
        config: str = typer.Option("compatible_pbe", "--config", help="LeMat-Bulk config (Hub only)."),
        steps: str = typer.Option("all", "--steps", help="VASP: all ionic steps or last."),
        energy: str = typer.Option("energy", "--energy", help="VASP: energy (sigma→0) or free_energy."),
        max_rows: int = typer.Option(None, "--max-rows", help="Stop after reading this many rows."),
    ) -> None:
        """Convert any supported source to extxyz / ASE db with labels in eV, eV/Å and eV/Å³ (ASE sign).

        Example: atomtune data convert --source runs/ --steps last --out relaxed.extxyz
        """
        from atomtune.data.readers import ReadReport, read_any

        report = ReadReport()
        sources = [source, *(more_sources or [])]
        dataset = read_any(
            sources[0] if len(sources) == 1 else sources,
            report=report,
            format=format,
            config=config,
            steps=steps,
            energy=energy,
            max_rows=max_rows,
        )
        console = Console()
        for line in report.lines():
            console.print(line, highlight=False)
        dataset.write(out)
        console.print(f"wrote {len(dataset):,} structures to {out}")


def _elements(text: str | None, normalise: bool = True) -> list[str]:
    if not text:
        return []
    items = [item.strip() for item in text.replace(" ", ",").split(",") if item.strip()]
    return [item[:1].upper() + item[1:].lower() for item in items] if normalise else items


def _print_curation(report) -> None:
    console = Console()
    for line in report.reader.lines():
        console.print(line, highlight=False)
    table = Table(title="curation")
    table.add_column("filter")
    table.add_column("removed", justify="right")
    table.add_column("remaining", justify="right")
    for row in report.rows():
        table.add_row(row["filter"], f"{row['removed']:,}", f"{row['remaining']:,}")
    console.print(table)
    console.print(f"kept {report.kept:,} structures")
