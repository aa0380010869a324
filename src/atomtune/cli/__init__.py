"""The ``atomtune`` command line: one typer app; each box registers its commands from its own module in this folder.

Bad input raises :class:`atomtune.AtomtuneError`; here it becomes one red message and exit code 2, no traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from atomtune.exceptions import AtomtuneError

app = typer.Typer(
    name="atomtune",
    help=(
        "Fine-tune universal ML interatomic potentials on your system and benchmark zero-shot vs fine-tuned.\n\n"
        "Example: atomtune errors --data test.extxyz --model chgnet-0.3.0 --model sevennet-0 --out results/"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Modules in atomtune.cli that define ``register(app)``; a module that is not there yet is skipped.
COMMAND_MODULES = ("models", "errors", "data", "generate", "label", "finetune", "bench", "run", "report", "env", "learn", "baseline", "export", "md")

console = Console(stderr=True)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"atomtune.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"atomtune.cli.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except AtomtuneError as error:
        console.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
