"""Exponential moving average of the trainable weights, used for validation and for the saved model.

Averaging the last updates smooths the noise of small-batch AdamW steps; MACE trains with an EMA (decay 0.99) for the same
reason. Part of :class:`atomtune.finetune.Trainer`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class ExponentialMovingAverage:
    """Shadow copies ``s ← decay·s + (1 − decay)·p`` of named parameters; :meth:`swapped` evaluates with them."""

    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float):
        self.parameters = parameters
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, parameter in self.parameters.items():
            self.shadow[name].lerp_(parameter.detach(), 1.0 - self.decay)

    @contextmanager
    def swapped(self):
        """Inside the block the parameters hold the averaged values; outside, the raw training values."""
        saved = {name: p.detach().clone() for name, p in self.parameters.items()}
        self.copy_to_parameters()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in self.parameters.items():
                    parameter.copy_(saved[name])

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        for name, parameter in self.parameters.items():
            parameter.copy_(self.shadow[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
