"""``atomtune env build|list|remove FAMILY``: the per-family environments of :mod:`atomtune.envs`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    env_app = typer.Typer(
        help=(
            "Build, list and remove the environments of backbone families that cannot share atomtune's main "
            "environment (NequIP/Allegro, PET, UMA, ORB, MatterSim).\n\nExample: atomtune env build nequip"
        ),
        no_args_is_help=True,
    )
    app.add_typer(env_app, name="env")

    @env_app.command("build")
    def build_command(
        family: str = typer.Argument(..., help="family: nequip, pet, uma, orb, mattersim"),
        force: bool = typer.Option(False, "--force", help="rebuild even if the environment of this spec is ready"),
    ) -> None:
        """Build FAMILY's environment from its pinned spec (idempotent; ~1–3 min and 1–3 GB each).

        Example: atomtune env build nequip

        Environments live under $ATOMTUNE_ENV_DIR (default ~/.cache/atomtune/envs), one directory per family and
        spec fingerprint; the pip log of the build is build.log inside it.
        """
        from atomtune.envs.build import build_environment

        status = build_environment(family, force=force, echo=lambda line: Console(stderr=True).print(line))
        Console().print(f"{family}: ready ({status.size_mb:.0f} MB) in {status.path}")

    @env_app.command("list")
    def list_command() -> None:
        """List every family environment: ready or not built, size, build time, and its directory.

        Example: atomtune env list
        """
        from atomtune.envs.build import list_environments
        from atomtune.envs.specs import SPECS

        table = Table(title="atomtune environments")
        for column in ("family", "status", "size", "build time", "spec", "path / what it holds"):
            table.add_column(column)
        for status in list_environments():
            if status.unbuildable_reason:
                state = f"[red]cannot build here[/red]: {status.unbuildable_reason}"
            elif status.ready:
                state = "[green]ready[/green]"
            else:
                state = f"[yellow]not built[/yellow] (atomtune env build {status.family})"
            if status.stale_directories:
                state += f"; {status.stale_directories} older build(s) (atomtune env remove {status.family})"
            table.add_row(
                status.family,
                state,
                f"{status.size_mb:.0f} MB" if status.size_mb else "",
                f"{status.build_seconds:.0f} s" if status.build_seconds else "",
                status.fingerprint,
                status.path if status.ready else SPECS[status.family].description,
            )
        Console().print(table)

    @env_app.command("remove")
    def remove_command(family: str = typer.Argument(..., help="family whose environments to delete")) -> None:
        """Delete FAMILY's environments (the current spec's and any older ones).

        Example: atomtune env remove nequip
        """
        from atomtune.envs.build import remove_environment

        removed = remove_environment(family)
        Console().print(f"removed {len(removed)} environment(s) of {family}" + "".join(f"\n  {p}" for p in removed))
