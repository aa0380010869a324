"""Partial freezing: only the last ``depth`` blocks of :meth:`Potential.blocks` (readout side) train.

Foundation-model fine-tuning studies (e.g. the MACE-MP-0 and CHGNet papers' transfer experiments) freeze the input embedding
and early message-passing layers and train the readout side; which depth is best depends on the data size, so the CLI can
scan it (``--scan freeze-depth=1,2,3,all``).
"""

from __future__ import annotations

from atomtune.exceptions import AtomtuneError
from atomtune.finetune.strategies.base import Strategy
from atomtune.models.base import Potential


class Freeze(Strategy):
    """Train only the last ``depth`` blocks (``depth="all"`` trains every block, i.e. full fine-tuning; None: the
    backbone's :attr:`~atomtune.models.base.Potential.default_freeze_depth`).

    Example: ``Freeze(depth=2).apply(potential)`` — for CHGNet the last two blocks are the last interaction layer and the
    readout (see ``potential.blocks()``).
    """

    name = "freeze"

    def __init__(self, depth: int | str | None = None):
        self.depth = depth

    def trained_blocks(self, potential: Potential) -> list[str]:
        """Names of the blocks that train at this depth (raises for a depth the backbone does not have)."""
        names = [name for name, _ in potential.blocks()]
        depth = potential.default_freeze_depth if self.depth is None else self.depth
        if isinstance(depth, str):
            if depth.strip().lower() == "all":
                return names
            try:
                depth = int(depth)
            except ValueError:
                raise AtomtuneError(f"freeze depth {self.depth!r}: give a number of blocks or 'all'.") from None
        if not 1 <= depth <= len(names):
            raise AtomtuneError(
                f"freeze depth {depth} is out of range for {potential.name}: it has {len(names)} blocks "
                f"({', '.join(names)}); use 1–{len(names)} or 'all'."
            )
        return names[len(names) - depth :]

    def select(self, potential: Potential) -> None:
        trained = set(self.trained_blocks(potential))
        keep = {id(p) for name, block in potential.blocks() if name in trained for p in block.parameters()}
        for parameter in potential.parameters():
            if id(parameter) not in keep:
                parameter.requires_grad_(False)

    def settings(self) -> dict:
        return {"strategy": self.name, "freeze_depth": self.depth}
