"""Fine-tuning strategies: wrappers around a Potential that choose what trains (and what data is replayed).

``Full()``, ``Freeze(depth=2)``, ``LoRA(rank=8, alpha=16)``, ``Replay(data, weight=0.5, base=…)``; each has ``apply`` (before
training) and ``merge`` (before saving). :func:`make_strategy` builds one from CLI-style names.
"""

from atomtune.finetune.strategies.base import Strategy, count_parameters
from atomtune.finetune.strategies.freeze import Freeze
from atomtune.finetune.strategies.full import Full
from atomtune.finetune.strategies.lora import LoRA
from atomtune.finetune.strategies.replay import Replay

STRATEGIES = ("full", "freeze", "lora", "replay")

__all__ = ["STRATEGIES", "Freeze", "Full", "LoRA", "Replay", "Strategy", "count_parameters"]
