"""``atomtune export``: hand a model (foundation or fine-tuned) to LAMMPS in its backbone's own format."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        model: str = typer.Option(..., "--model", help="model name, .model file or fine-tuned dir"),
        out: Path = typer.Option(..., "--out", help="output folder (model file(s), in.<format>.lammps, export.json)"),
        format: list[str] = typer.Option(
            ["lammps"],
            "--format",
            help="lammps (the backbone's single-rank LAMMPS format) or a named one: e3gnn, e3gnn-parallel, mliap "
            "(SevenNet); mace-libtorch, mliap (MACE); repeat for several",
        ),
        elements: str = typer.Option(
            None, "--elements", help="element of each LAMMPS atom type, in type order, for the input snippet: Ni,Al"
        ),
        dtype: str = typer.Option("float32", "--dtype", help="precision to export: float32 or float64 (MACE)"),
        trust_model: bool = typer.Option(False, "--trust-model", help="allow pickled model files (MACE .model)"),
    ) -> None:
        """Export a model to a LAMMPS pair style and write an input snippet; says which pair_style and LAMMPS build.

        SevenNet → pair_style e3gnn (also e3gnn/parallel, mliap); MACE → pair_style mace (also mliap with
        cuequivariance); CHGNet has no LAMMPS pair style (use `atomtune md --engine lammps`). A fine-tuned model exports
        with its LoRA adapters merged and its E0 shift inside the exported weights.

        Example: atomtune export --model ft/ --format lammps --elements Ni,Al --out ft-lammps/
        """
        from rich.console import Console

        from atomtune.export import export, formats_by_backbone
        from atomtune.lammps.inputs import input_snippet
        from atomtune.models import load_potential

        potential = load_potential(model, dtype=dtype, trust=trust_model)
        available = formats_by_backbone().get(potential.backbone, ())
        formats = [available[0] if name == "lammps" and available else name for name in format]
        records = export(potential, out, [] if not available else formats)
        console = Console()
        type_elements = [e.strip() for e in elements.split(",")] if elements else None
        for record in records:
            if type_elements is not None:
                (out / f"in.{record.format}.lammps").write_text(input_snippet(record, type_elements))
            console.print(
                f"{record.format}: {record.path} → pair_style {record.pair_style}; needs {record.lammps_build}",
                highlight=False,
            )
        console.print(f"wrote {len(records)} export(s), their in.<format>.lammps snippets and export.json in {out}")
