"""Structures featurised once, with their labels as tensors: what the training loop iterates over every epoch.

Native trainers rebuild each structure's graph (neighbour list, basis) every epoch; here ``potential.featurize(atoms)`` runs
once per structure and the graphs are reused, which is where most of the per-epoch speed-up comes from. It sits between a
:class:`~atomtune.data.dataset.Dataset` and :meth:`Potential.make_batch` inside :class:`atomtune.finetune.Trainer`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from atomtune.data.dataset import labels_of
from atomtune.models.base import Batch, Potential


@dataclass
class LabelledBatch:
    """One training batch: the potential's input plus reference labels (eV, eV/Å, eV/Å³ 3×3 ASE sign)."""

    batch: Batch
    target: dict[str, torch.Tensor]
    ids: list[str]


class FeaturizedSet:
    """Structures of one dataset with their cached graphs and label tensors.

    ``weight`` scales this set's loss and ``per_epoch`` is how many of its structures an epoch draws (replay sets mix in
    with their own weight and count; None: all of the training set, as many as training structures for a replay set).
    """

    def __init__(
        self, name: str, structures: Sequence[Atoms], graphs: Sequence, weight: float = 1.0, per_epoch: int | None = None
    ):
        self.name = name
        self.structures = list(structures)
        self.graphs = list(graphs)
        self.weight = weight
        self.per_epoch = per_epoch
        self.ids = [str(atoms.info.get("id", k)) for k, atoms in enumerate(self.structures)]
        labels = [labels_of(atoms) for atoms in self.structures]
        self.energies = torch.tensor([label.energy for label in labels], dtype=torch.float64)
        self.forces = [torch.as_tensor(label.forces, dtype=torch.float64) for label in labels]
        self.stress = [
            torch.as_tensor(voigt_6_to_full_3x3_stress(label.stress), dtype=torch.float64)
            if label.stress is not None
            else torch.zeros(3, 3, dtype=torch.float64)
            for label in labels
        ]
        self.has_stress = torch.tensor([label.stress is not None for label in labels], dtype=torch.bool)

    @classmethod
    def build(
        cls, name: str, structures: Sequence[Atoms], potential: Potential, weight: float = 1.0, per_epoch: int | None = None
    ) -> FeaturizedSet:
        """Featurise every structure once with ``potential`` (the expensive step; done before the first epoch)."""
        structures = list(structures)
        return cls(name, structures, [potential.featurize(atoms) for atoms in structures], weight, per_epoch)

    def __len__(self) -> int:
        return len(self.structures)

    def batch(self, indices: Sequence[int], potential: Potential) -> LabelledBatch:
        """The labelled batch of the structures at ``indices`` (collated on the potential's device)."""
        indices = list(indices)
        batch = potential.make_batch([self.structures[i] for i in indices], [self.graphs[i] for i in indices])
        device = batch.n_atoms.device
        target = {
            "energy": self.energies[indices].to(device),
            "forces": torch.cat([self.forces[i] for i in indices]).to(device),
            "stress": torch.stack([self.stress[i] for i in indices]).to(device),
            "stress_mask": self.has_stress[indices].to(device),
        }
        return LabelledBatch(batch, target, [self.ids[i] for i in indices])

    def batches(
        self, batch_size: int, potential: Potential, order: np.ndarray | None = None
    ) -> Iterator[LabelledBatch]:
        """Batches in ``order`` (all structures in file order when None)."""
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size], potential)

    def add_energy_offsets(self, offsets: np.ndarray) -> None:
        """Add per-structure offsets (eV) to the reference energies (used to align a replay set's energy scale)."""
        self.energies = self.energies + torch.as_tensor(offsets, dtype=torch.float64)
