"""``atomtune report``: re-render the HTML report from a campaign's results.json."""

from __future__ import annotations

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
        from atomtune.report import read_results, render_report

        path = render_report(read_results(results), out or results.with_name("report.html"))
        typer.echo(f"report: {path}")
