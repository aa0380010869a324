"""Options that several commands share, defined once (name, default, help)."""

from __future__ import annotations

import typer


def max_stress_option():
    """``--max-stress-gpa``: the bound above which stress labels are refused on read (:class:`~atomtune.data.Dataset`)."""
    from atomtune.data.dataset import MAX_STRESS_GPA

    return typer.Option(
        MAX_STRESS_GPA, "--max-stress-gpa",
        help="Refuse stress labels above this (GPa): a file in kBar read as eV/Å³ is 1602x too large. 'inf': any.",
    )


def trust_model_option():
    """``--trust-model``: allow model files that are pickles by design (see :mod:`atomtune.loading`)."""
    return typer.Option(
        False, "--trust-model",
        help="Allow a --model file that is a Python pickle by design (a MACE *.model); loading it can run code, so "
        "only for files you made or trust. Models saved by atomtune and named checkpoints never need it.",
    )
