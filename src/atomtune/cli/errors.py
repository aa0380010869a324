"""``atomtune errors``: energy / force / stress errors of one or more models on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atomtune.cli.options import max_stress_option, trust_model_option


def register(app: typer.Typer) -> None:
    @app.command("errors")
    def errors_command(
        data: Path = typer.Option(..., "--data", help="Labelled structures (extxyz or ASE db)."),
        model: list[str] = typer.Option(..., "--model", help="Model name, .model file or fine-tuned dir; repeat."),
        trust_model: bool = trust_model_option(),
        out: Path = typer.Option(Path("results/errors"), "--out", help="Output folder (JSON, parity PNGs)."),
        align_e0: bool = typer.Option(False, "--align-e0", help="Also report errors after a per-element E0 refit."),
        energy_key: str = typer.Option(None, "--energy-key", help="Energy key in the file (default: auto)."),
        forces_key: str = typer.Option(None, "--forces-key", help="Forces key in the file (default: auto)."),
        stress_key: str = typer.Option(None, "--stress-key", help="Stress key in the file (default: auto)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Structures per forward pass (default: measured)."),
        max_stress_gpa: float = max_stress_option(),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
    ) -> None:
        """Energy-per-atom, force and stress MAE/RMSE (overall and per element), parity plots and a JSON record.

        Example: atomtune errors --data test.extxyz --model chgnet-0.3.0 --model sevennet-0 --out results/ --align-e0
        """
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        from atomtune.data.dataset import Dataset
        from atomtune.models import load_potential
        from atomtune.tasks import errors

        console = Console()
        settings = errors.Settings(batch_size=batch_size, align_e0=align_e0)  # checked before any reading or loading
        dataset = Dataset.read(
            data, energy_key=energy_key, forces_key=forces_key, stress_key=stress_key, max_stress_gpa=max_stress_gpa
        )
        console.print(f"{data}: {len(dataset)} structures, {dataset.n_atoms} atoms, elements {' '.join(dataset.elements)}")
        potentials = {spec: load_potential(spec, device=device, trust=trust_model) for spec in model}
        for spec, potential in potentials.items():  # every model checked before any compute
            potential.check_elements(list(dataset), where="")
        results = {}
        for spec, potential in potentials.items():
            results[spec] = errors.run(list(dataset), potential, settings)
        out.mkdir(parents=True, exist_ok=True)
        summary = {spec: errors.metrics(records, align_e0=align_e0) for spec, records in results.items()}
        record = {"data": str(data), "data_fingerprint": dataset.fingerprint(), "models": summary}
        (out / "errors.json").write_text(json.dumps(record, indent=2))
        for spec, records in results.items():
            (out / f"records_{errors._safe(spec)}.json").write_text(json.dumps(records))
        plots = errors.plot(results, out)
        table = Table(title=f"errors on {data.name} ({len(dataset)} structures)")
        table.add_column("metric")
        for spec in results:
            table.add_column(spec, justify="right")
        for row in errors.metric_rows(summary):
            values = [row[spec] for spec in results]
            finite = [v for v in values if v is not None]
            best = min(finite) if finite else None
            cells = [
                "–" if v is None else (f"[bold green]{v:.3g}[/bold green]" if v == best and len(finite) > 1 else f"{v:.3g}")
                for v in values
            ]
            table.add_row(row["metric"], *cells)
        console.print(table)
        for note in dict.fromkeys(m["stress_note"] for m in summary.values() if m.get("stress_note")):
            console.print(f"[yellow]{note}[/yellow]", highlight=False)
        if align_e0:
            console.print(f"[dim]E0-aligned rows: {errors.ALIGN_E0_NOTE}.[/dim]")
        console.print(f"wrote {out / 'errors.json'} and {len(plots)} parity plot(s) in {out}")
