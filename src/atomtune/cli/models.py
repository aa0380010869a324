"""``atomtune models``: the backbones and named checkpoints, and whether each is usable offline now."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_command() -> None:
        """List backbones and checkpoints available offline / online.

        Example: atomtune models

        Any of the names works after --model; so do a path to a MACE .model file and a directory written by
        `atomtune finetune --out DIR`.
        """
        from atomtune.models.registry import available_models

        table = Table(title="atomtune models")
        for column in ("name", "backbone", "status", "description"):
            table.add_column(column)
        for row in available_models():
            style = "green" if row["status"] == "offline" else ("yellow" if "download" in row["status"] else "red")
            table.add_row(row["name"], row["backbone"], f"[{style}]{row['status']}[/{style}]", row["description"])
        Console().print(table)
