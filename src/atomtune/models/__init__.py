"""Backbones behind one protocol (:class:`Potential`); :func:`load_potential` resolves what users type after --model."""

from atomtune.models.base import Batch, Potential, PotentialCalculator
from atomtune.models.registry import load_potential

__all__ = ["Batch", "Potential", "PotentialCalculator", "load_potential"]
