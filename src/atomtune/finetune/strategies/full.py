"""Naive fine-tuning: every parameter of the foundation model trains (the baseline the other strategies are judged by)."""

from __future__ import annotations

from atomtune.finetune.strategies.base import Strategy


class Full(Strategy):
    """All parameters train. ``Full().apply(potential)``."""

    name = "full"
