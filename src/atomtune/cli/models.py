"""``atomtune models``: every backbone family and named checkpoint with an honest status — usable offline now, downloaded
on first use, gated, or living in a family environment (built or not) — and the elements it covers."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def environment_family_rows() -> list[dict]:
    """Rows for the checkpoints of families that live in their own environment (:mod:`atomtune.envs.specs`): whether
    the environment is built, and whether the weights are a local file, already in the family's download cache
    (:mod:`atomtune.envs.caches`) or downloaded on first use."""
    from atomtune.envs.build import is_ready
    from atomtune.envs.caches import weights_status
    from atomtune.envs.specs import SPECS

    rows = []
    for spec in SPECS.values():
        if spec.unbuildable_reason:
            environment = f"environment cannot be built here: {spec.unbuildable_reason}"
        elif is_ready(spec.family):
            environment = "environment ready"
        else:
            environment = f"environment not built (atomtune env build {spec.family})"
        adapter = "" if spec.adapter else "; no atomtune adapter yet, not usable with --model"
        for checkpoint in spec.checkpoints:
            # from the family's own download cache, checked by path (the family's packages are not imported here)
            weights = weights_status(spec.family, checkpoint.name)
            gated = f"; gated: {checkpoint.gated}" if checkpoint.gated and weights.state != "cached" else ""
            rows.append(
                {
                    "name": checkpoint.name,
                    "backbone": spec.family,
                    "status": f"{environment}{adapter}; {weights.text}{gated}",
                    "weights": weights.state,
                    "description": checkpoint.source,
                    "usable": bool(spec.adapter) and is_ready(spec.family),
                }
            )
    return rows


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_command() -> None:
        """List every backbone family and checkpoint: offline (weights in a wheel), downloaded on first use, gated, or in
        a family environment (ready / not built, with the command that builds it).

        Example: atomtune models

        Any usable name works after --model; so do a path to a MACE .model file (with --trust-model) and a directory
        written by `atomtune finetune --out DIR`.
        """
        from atomtune.models.registry import available_models

        table = Table(title="atomtune models")
        for column in ("name", "backbone", "status", "description"):
            table.add_column(column)
        for row in available_models():
            style = "green" if row["status"] == "offline" else ("yellow" if "download" in row["status"] else "red")
            table.add_row(row["name"], row["backbone"], f"[{style}]{row['status']}[/{style}]", row["description"])
        for row in environment_family_rows():
            style = "yellow" if row["usable"] else "red"
            table.add_row(row["name"], row["backbone"], f"[{style}]{row['status']}[/{style}]", row["description"])
        Console(width=200).print(table)
