"""``atomtune run`` (a campaign file) and ``atomtune demo`` (the shipped Ni-alloy campaign, offline)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

DEMO_CAMPAIGN = "campaigns/ni_alloy_demo.yaml"


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        campaign_file: Path = typer.Argument(..., help="Campaign YAML file."),
        out: Path = typer.Option(None, "--out", help="Work folder (default: campaign-<name>/ beside the file)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (steps, cached or not) and stop."),
        scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address, e.g. tcp://head:8786."),
    ) -> None:
        """Run a campaign: data → label → split → zero-shot errors → fine-tune → tasks → HTML report.

        Example: atomtune run campaign.yaml            (again: finished steps come from the cache)

        Example: atomtune run campaign.yaml --dry-run

        Example: atomtune run campaign.yaml --scheduler tcp://head:8786
        """
        from atomtune.campaign.config import load_campaign

        campaign = load_campaign(campaign_file)
        workdir = out or campaign_file.resolve().parent / f"campaign-{campaign.name}"
        _run(campaign, workdir, dry_run, scheduler)

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("atomtune-demo"), "--out", help="Work folder for the demo's results."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
        print_campaign: bool = typer.Option(False, "--print", help="Print the demo's campaign file and stop."),
    ) -> None:
        """The embedded default campaign: shipped GPAW Ni / Ni–Al / Ni–Cu data, CHGNet and SevenNet zero-shot vs
        fine-tuned (full, freeze, LoRA), errors and property tasks; offline, about 15 min on 2 CPU cores.

        Example: atomtune demo --out demo/
        """
        from importlib.resources import files

        from atomtune.campaign.config import load_campaign

        path = Path(str(files("atomtune") / "resources" / DEMO_CAMPAIGN))
        if print_campaign:
            typer.echo(path.read_text())
            return
        campaign = load_campaign(path)
        _run(campaign, out, dry_run, None)


def _run(campaign, workdir: Path, dry_run: bool, scheduler: str | None) -> None:
    from atomtune.campaign.runner import describe, plan, run_campaign

    console = Console()
    workdir = Path(workdir).resolve()
    if dry_run:
        steps, _ = plan(campaign, workdir)
        table = Table(title=f"campaign {campaign.name}: {len(steps)} steps in {workdir}")
        for column in ("step", "state", "depends"):
            table.add_column(column)
        for row in describe(steps):
            colour = "green" if row["state"] == "cached" else "yellow"
            table.add_row(row["step"], f"[{colour}]{row['state']}[/{colour}]", row["depends"])
        console.print(table)
        return
    report = run_campaign(campaign, workdir, scheduler=scheduler)
    console.print(f"[bold green]report:[/bold green] {report}")
