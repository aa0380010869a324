"""What a fine-tuning strategy is: a wrapper that decides which parameters of a Potential train (and may add parameters
or extra data), applied before :class:`atomtune.finetune.Trainer` runs and merged away before the model is saved.

``strategy.apply(potential)`` → potential ready to train; ``strategy.merge(potential)`` → a plain backbone Potential again
(adapters folded into the weights, ``requires_grad`` flags as the backbone had them), so a fine-tuned model saves and loads
like any other. Parameters a backbone keeps fixed on purpose (CHGNet's ``AtomRef`` composition energies) stay fixed under
every strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms

from atomtune.models.base import Potential


class Strategy:
    """Base class: every parameter the backbone trains, trains (the ``full`` strategy). Subclasses override ``select``."""

    name = "full"

    def apply(self, potential: Potential) -> Potential:
        """Prepare ``potential`` for training in place (freeze / add adapters) and return it."""
        self.backbone_trainable = {name: p.requires_grad for name, p in potential.named_parameters()}
        self.select(potential)
        return potential

    def select(self, potential: Potential) -> None:
        """Set ``requires_grad`` (and add parameters) for training; here: what the backbone trains, trains."""

    def merge(self, potential: Potential) -> Potential:
        """Undo :meth:`apply` keeping what was learnt: the backbone's modules and ``requires_grad`` flags are back."""
        flags = getattr(self, "backbone_trainable", {})
        for name, parameter in potential.named_parameters():
            parameter.requires_grad_(flags.get(name, True))
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
