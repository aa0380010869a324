"""Fine-tuning: one training loop over the Potential protocol, and strategies that wrap a Potential.

Flow: Dataset (train / valid) + Potential → ``Trainer(TrainingSettings(...)).fit(potential, train, valid, strategy)`` →
a plain Potential saved with its metadata (``atomtune.models.load_potential("ft/")`` reloads it). Strategies live in
``strategies/``; E0 re-estimation in ``e0.py``; hyperparameter scans in ``scan.py``; mace's own multihead replay
fine-tuning, wrapped, in ``mace_multihead.py``.
"""

from atomtune.finetune.loop import FitResult, Trainer, TrainingDivergedError, TrainingSettings
from atomtune.finetune.loss import DEFAULT_LOSS_WEIGHTS, LossWeights, default_loss_weights
from atomtune.finetune.strategies import STRATEGIES, Freeze, Full, LoRA, Replay, Strategy, count_parameters

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "STRATEGIES",
    "FitResult",
    "Freeze",
    "Full",
    "LoRA",
    "LossWeights",
    "Replay",
    "Strategy",
    "Trainer",
    "TrainingDivergedError",
    "TrainingSettings",
    "count_parameters",
    "default_loss_weights",
]
