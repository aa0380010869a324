"""Replay against forgetting: mix a second, "general" set into every epoch with its own loss weight.

The replay set is either the user's own labelled structures (e.g. a slice of the foundation model's training data) or
structures generated around the target system (strained and rattled copies of the training cells) pseudo-labelled by the
frozen foundation model before training starts — the model is asked to stay what it was where the target data says nothing
(as in MACE's multihead fine-tuning, which replays pseudo-labelled MPtrj structures). Which parameters train is the
``base`` strategy's choice (``Full`` by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from atomtune.data.dataset import attach_labels, labels_of
from atomtune.exceptions import AtomtuneError
from atomtune.finetune.featurized import FeaturizedSet
from atomtune.finetune.strategies.base import Strategy
from atomtune.finetune.strategies.full import Full
from atomtune.models.base import Potential
from atomtune.models.element_energies import apply_element_energies, fit_element_energies


class Replay(Strategy):
    """Replay ``data`` (or ``generate`` pseudo-labelled structures) with loss weight ``weight`` in every epoch.

    - ``data``: labelled structures to replay (energies on any DFT setup: with ``align_e0`` a per-element offset between the
      model and these labels is fitted once before training, so only energy differences are replayed);
    - ``generate``: number of structures to generate around the training cells (±2 % random strains and 0.05 Å rattles)
      and label with the frozen model (after E0 re-estimation) — used when ``data`` is None, or added to it;
    - ``per_epoch``: replay structures drawn (without replacement) each epoch; default as many as training structures;
    - ``base``: the strategy that decides which parameters train (``Full()``, ``Freeze(2)``, ``LoRA(8)``…).

    Example: ``Replay(Dataset.read("general.extxyz"), weight=0.5, base=LoRA(rank=8))``.
    """

    name = "replay"

    def __init__(
        self,
        data: Sequence[Atoms] | None = None,
        weight: float = 0.5,
        generate: int = 0,
        per_epoch: int | None = None,
        align_e0: bool = True,
        base: Strategy | None = None,
        seed: int = 0,
    ):
        self.data = data
        self.weight = weight
        self.generate = generate
        self.per_epoch = per_epoch
        self.align_e0 = align_e0
        self.base = base
        self.seed = seed

    @property
    def _base(self) -> Strategy:
        return self.base if self.base is not None else Full()

    def apply(self, potential: Potential) -> Potential:
        # Which parameters train is the base strategy's business (its apply also records the backbone's flags).
        return self._base.apply(potential)

    def merge(self, potential: Potential) -> Potential:
        return self._base.merge(potential)

    def replay_sets(self, potential: Potential, train: Sequence[Atoms]) -> list[FeaturizedSet]:
        """Featurise (and pseudo-label / align) the replay structures with the not-yet-trained ``potential``."""
        if not self.weight >= 0:
            raise AtomtuneError(f"replay weight must be ≥ 0, got {self.weight}.")
        if not self.data and self.generate <= 0:
            raise AtomtuneError("replay needs structures: give --replay-data FILE or --replay-generate N (or both).")
        sets = []
        if self.data:
            structures = list(self.data)
            potential.check_elements(structures, where="the replay set")
            for k, atoms in enumerate(structures):
                label = labels_of(atoms)
                if label.energy is None or label.forces is None:
                    raise AtomtuneError(
                        f"replay structure {k} ({atoms.info.get('id', k)}) has no energy/forces labels; label it or use "
                        f"--replay-generate to pseudo-label structures with the foundation model."
                    )
            replay = FeaturizedSet.build("replay", structures, potential, self.weight, self.per_epoch)
            if self.align_e0:
                replay.add_energy_offsets(_offsets_to_model(potential, replay))
            sets.append(replay)
        if self.generate > 0:
            generated = pseudo_label(potential, generate_around(train, self.generate, self.seed))
            sets.append(FeaturizedSet.build("replay-generated", generated, potential, self.weight, self.per_epoch))
        return sets

    def settings(self) -> dict:
        return {
            "strategy": self.name,
            "replay_weight": self.weight,
            "replay_structures": len(self.data) if self.data else 0,
            "replay_generate": self.generate,
            "replay_per_epoch": self.per_epoch,
            "replay_align_e0": self.align_e0,
            "replay_base": self._base.settings(),
        }


def generate_around(structures: Sequence[Atoms], count: int, seed: int = 0, max_strain: float = 0.02,
                    rattle_stdev: float = 0.05) -> list[Atoms]:
    """``count`` structures near the training cells: a random strain (≤ ``max_strain``) then a rattle (Å) of each."""
    from atomtune.data import generate

    rng = np.random.default_rng(seed)
    structures = list(structures)
    result = []
    for k in range(count):
        parent = structures[int(rng.integers(len(structures)))]
        plain = Atoms(numbers=parent.numbers, positions=parent.positions, cell=parent.cell, pbc=parent.pbc)
        plain.info["id"] = parent.info.get("id", "structure")
        (strained,) = generate.random_strains(plain, 1, max_strain=max_strain, seed=int(rng.integers(1 << 30)))
        atoms = generate.rattle(strained, rattle_stdev, seed=int(rng.integers(1 << 30)))
        atoms.info["id"] = f"replay-{k}"
        atoms.info["parent"] = str(plain.info["id"])  # the training structure, not the intermediate strained copy
        result.append(atoms)
    return result


def pseudo_label(potential: Potential, structures: Sequence[Atoms]) -> list[Atoms]:
    """Copies of ``structures`` labelled with ``potential``'s energy, forces and (periodic cells) stress."""
    structures = list(structures)
    periodic = [bool(atoms.pbc.all()) for atoms in structures]
    labelled = []
    for want_stress in (True, False):
        chosen = [k for k, p in enumerate(periodic) if p == want_stress]
        if not chosen:
            continue
        records = potential.predict([structures[k] for k in chosen], stress=want_stress)
        for k, record in zip(chosen, records):
            atoms = structures[k].copy()
            atoms.info.update(structures[k].info)
            attach_labels(atoms, record["energy"], record["forces"], record.get("stress"))
            atoms.info["source"] = f"pseudo-label:{potential.name}"
            labelled.append((k, atoms))
    return [atoms for _, atoms in sorted(labelled, key=lambda pair: pair[0])]


def _offsets_to_model(potential: Potential, replay: FeaturizedSet) -> np.ndarray:
    """Per-structure energy offsets (eV) bringing the replay labels onto the model's per-element energy scale."""
    from atomtune.finetune.metrics import predict_set

    predicted = predict_set(potential, replay, batch_size=8, stress=False)["energy"]
    reference = replay.energies.numpy()
    offsets = fit_element_energies(replay.structures, predicted, reference)
    return apply_element_energies(replay.structures, np.zeros(len(replay)), offsets)
