"""``atomtune report``: re-render the HTML report from a campaign's results.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        results: Path = typer.Argument(..., help="results.json written by `atomtune run`."),
        out: Path = typer.Option(None, "--out", help="HTML file (default: report.html beside results.json)."),
    ) -> None:
        """Render the self-contained HTML report of a campaign.

        Example: atomtune report campaign-ni-alloy/results.json --out report.html
        """
        from atomtune.exceptions import AtomtuneError
        from atomtune.report import render_report

        if not results.exists():
            raise AtomtuneError(f"{results}: not found; `atomtune run campaign.yaml` writes results.json.")
        path = render_report(json.loads(results.read_text()), out or results.with_name("report.html"))
        typer.echo(f"report: {path}")
