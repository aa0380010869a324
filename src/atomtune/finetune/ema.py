"""Exponential moving average of the trainable weights, used for validation and for the saved model.

Averaging the last updates smooths the noise of small-batch AdamW steps; MACE trains with an EMA (decay 0.99) for the same
reason. The averaging, its warm-up (decay min(d, (1 + n)/(10 + n)) after n updates, so short runs are not dominated by the
starting weights) and its state are torch_ema's; this wrapper only keeps the parameter names. Part of
:class:`atomtune.finetune.Trainer`.
"""

from __future__ import annotations

import torch
from torch_ema import ExponentialMovingAverage


class WeightAverage:
    """torch_ema's average over named parameters; :meth:`swapped` evaluates with the averaged values."""

    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float):
        self.names = list(parameters)
        self.average = ExponentialMovingAverage(list(parameters.values()), decay=decay, use_num_updates=True)

    def update(self) -> None:
        self.average.update()

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """Name → averaged value (the tensors themselves; clone before keeping them)."""
        return dict(zip(self.names, self.average.shadow_params))

    def swapped(self):
        """Inside the ``with`` block the parameters hold the averaged values; outside, the raw training values."""
        return self.average.average_parameters()

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state)
