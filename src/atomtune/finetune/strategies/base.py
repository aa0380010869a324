"""What a fine-tuning strategy is: a wrapper that decides which parameters of a Potential train (and may add parameters
or extra data), applied before :class:`atomtune.finetune.Trainer` runs and merged away before the model is saved.

``strategy.apply(potential)`` → potential ready to train; ``strategy.merge(potential)`` → a plain backbone Potential again
(adapters folded into the weights, every parameter trainable), so a fine-tuned model saves and loads like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms

from atomtune.models.base import Potential


class Strategy:
    """Base class: every parameter trains (the ``full`` strategy). Subclasses override what they change."""

    name = "full"

    def apply(self, potential: Potential) -> Potential:
        """Prepare ``potential`` for training in place (freeze / add adapters) and return it."""
        for parameter in potential.parameters():
            parameter.requires_grad_(True)
        return potential

    def merge(self, potential: Potential) -> Potential:
        """Undo :meth:`apply` keeping what was learnt: a plain Potential whose parameters all have ``requires_grad``."""
        for parameter in potential.parameters():
            parameter.requires_grad_(True)
        return potential

    def replay_sets(self, potential: Potential, train: Sequence[Atoms]) -> list:
        """Extra :class:`~atomtune.finetune.featurized.FeaturizedSet` s mixed into every epoch (replay); none here."""
        return []

    def settings(self) -> dict:
        """The constructor's settings, for the saved model's metadata and for ``--resume`` checks."""
        return {"strategy": self.name}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "strategy")
        return f"{type(self).__name__}({arguments})"


def count_parameters(potential: Potential) -> dict[str, int]:
    """``{"trainable": …, "total": …}`` parameter counts (adapters included in both)."""
    trainable = sum(p.numel() for p in potential.parameters() if p.requires_grad)
    total = sum(p.numel() for p in potential.parameters())
    return {"trainable": int(trainable), "total": int(total)}
