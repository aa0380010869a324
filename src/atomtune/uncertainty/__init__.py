"""Uncertainty: committees of potentials (full or shallow), their calibrated spread, and how to train them.

``CommitteePotential`` is a Potential like any other (mean prediction plus ``energy_std`` / ``forces_std`` /
``stress_std``); ``train_committee`` makes one through the fine-tuning loop; ``calibration`` fits and scores α per
quantity. The active-learning loop (:mod:`atomtune.learn`) is built on these.
"""

from atomtune.uncertainty.committee import (
    CommitteeCalculator,
    CommitteeError,
    CommitteePotential,
)
from atomtune.uncertainty.train import (
    CommitteeSpec,
    finetune_committee,
    train_committee,
)

__all__ = [
    "CommitteeCalculator",
    "CommitteeError",
    "CommitteePotential",
    "CommitteeSpec",
    "finetune_committee",
    "train_committee",
]
