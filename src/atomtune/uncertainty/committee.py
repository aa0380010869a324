"""Committees: K potentials behind one Potential, whose spread is the model's uncertainty.

A committee is "a model like any other" (``--model committee/`` everywhere): ``predict`` and the ASE calculator give the
members' mean energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign), plus ``energy_std`` (eV, per structure),
``forces_std`` (eV/Å, per atom: the root mean over x, y, z of the members' force variance) and ``stress_std`` (eV/Å³,
per component), scaled by the calibration factors α fitted on a validation set (:mod:`atomtune.uncertainty.calibration`)
when the committee has them. Sits in the ``models`` box; :mod:`atomtune.uncertainty.train` makes committees through the
fine-tuning loop, :mod:`atomtune.learn` drives MD with them.

Two kinds:

- ``full``: K members fine-tuned from one foundation model with different seeds and bootstrap resamples, sharing one E0
  re-estimation (a spread of absolute energies is only meaningful when every member sits on the same E0 scale);
- ``shallow``: the members share every weight except the readout block (``Potential.blocks()[-1]``): one trunk, K heads.
  On disk that is one model plus K small head files. For a backbone that splits its compute at the readout
  (:meth:`Potential.run_trunk` / :meth:`Potential.run_readout`: CHGNet, SevenNet, MACE) inference runs the trunk once,
  the K heads on its output, and the K heads' forces and stress in one backward vmapped over the heads; other backbones
  run K forwards. ``benchmarks/bench_active_learning.py`` (``cost``) measures both against a single model.

Saved layout (no pickles: ``atomtune.json`` plus each member's own atomtune save, heads as plain tensor files loaded with
``torch.load(weights_only=True)``)::

    committee/atomtune.json            backbone "committee"; weights: {kind, members | trunk + heads, calibration}
    committee/member-0/ …              full: one saved Potential per member
    committee/trunk/, committee/heads/head-0.pt …   shallow
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from atomtune.exceptions import AtomtuneError
from atomtune.models.base import Batch, Potential, PotentialCalculator

logger = logging.getLogger(__name__)

KINDS = ("full", "shallow")
#: The quantities a committee reports a spread for (and calibrates α for).
QUANTITIES = ("energy", "forces", "stress")


class CommitteeError(AtomtuneError):
    """A committee that cannot be built or loaded (too few members, members that disagree on backbone or E0s)."""


class CommitteePotential(Potential):
    """K member Potentials behind the Potential protocol: mean prediction plus calibrated spreads.

    ``CommitteePotential([member_a, member_b, member_c], kind="full", calibration={"forces": 1.7})``. Members must share
    backbone, checkpoint, cutoff and per-element E0s (checked here). ``calibration`` maps quantity → α (missing: 1).
    """

    backbone = "committee"

    def __init__(
        self,
        members: Sequence[Potential],
        kind: str = "full",
        calibration: dict[str, float] | None = None,
        checkpoint: str = "",
    ):
        members = list(members)
        check_members(members)
        if kind not in KINDS:
            raise CommitteeError(f"committee kind {kind!r}: use {' or '.join(KINDS)}.")
        super().__init__(checkpoint or f"{members[0].checkpoint}-x{len(members)}")
        self.members = torch.nn.ModuleList(members)
        self.kind = kind
        self.calibration = {q: float(a) for q, a in (calibration or {}).items()}
        unknown = set(self.calibration) - set(QUANTITIES)
        if unknown:
            raise CommitteeError(f"calibration for unknown quantities {sorted(unknown)}; use {', '.join(QUANTITIES)}.")
        self.cpu_batch_size = members[0].cpu_batch_size
        self.gpu_batch_size = members[0].gpu_batch_size

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def name(self) -> str:
        return f"committee[{self.kind}x{self.size}]:{self.members[0].name}"

    def alpha(self, quantity: str) -> float:
        """Calibration factor α of ``quantity`` (1 when the committee is not calibrated)."""
        return self.calibration.get(quantity, 1.0)

    # -- protocol: every member sees the same graph -----------------------------------------------------------------
    def featurize(self, atoms: Atoms) -> Any:
        return self.members[0].featurize(atoms)

    def collate(self, graphs: Sequence[Any]) -> Any:
        return self.members[0].collate(graphs)

    def compute(self, data: Any, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        raise NotImplementedError("a committee runs through forward(batch), which adds each member's own E0s")

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        return [(f"member_{k}", member) for k, member in enumerate(self.members)]

    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset.intersection(*(frozenset(m.supported_elements) for m in self.members))

    @property
    def cutoff(self) -> float:
        return self.members[0].cutoff

    def atom_features(self, data: Any) -> torch.Tensor:
        """The members' embeddings averaged (for DIRECT / FPS selection in the committee's view); one member's when
        they share a trunk (shallow: the embeddings come before the readout)."""
        if self.kind == "shallow" and self._members_share_trunk():
            return self.members[0].atom_features(data)
        return torch.stack([member.atom_features(data) for member in self.members]).mean(dim=0)

    def backbone_version(self) -> str:
        return self.members[0].backbone_version()

    # -- the committee forward ----------------------------------------------------------------------------------------
    def forward(self, batch: Batch, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Mean ``energy`` (B,), ``forces`` (N, 3), ``stress`` (B, 3, 3) and raw spreads ``energy_std`` (B,) eV,
        ``forces_std`` (N,) eV/Å, ``stress_std`` (B, 3, 3) eV/Å³ (sample std, K − 1), plus the members' own
        ``energy_members`` (K, B) and ``forces_members`` (K, N, 3). Spreads here are *not* calibrated; predict is.

        A shallow committee in eval mode whose members do share one trunk runs it once (:meth:`Potential.run_trunk`) and
        its K heads on the trunk's output; otherwise (full committees, training mode, a backbone without the split)
        every member runs its own forward. Both give the same numbers (tests/uncertainty/test_shallow_trunk.py)."""
        outputs = self._heads_on_one_trunk(batch, forces, stress) if self._runs_trunk_once() else None
        if outputs is None:
            per_member = [member.forward(_fresh(batch), forces=forces, stress=stress) for member in self.members]
            outputs = {key: torch.stack([o[key] for o in per_member]) for key in per_member[0]}
        result: dict[str, torch.Tensor] = {}
        energies = outputs["energy"]
        result["energy"] = energies.mean(dim=0)
        result["energy_std"] = energies.std(dim=0, unbiased=True)
        result["energy_members"] = energies
        if forces:
            member_forces = outputs["forces"]
            result["forces"] = member_forces.mean(dim=0)
            result["forces_std"] = member_forces.var(dim=0, unbiased=True).mean(dim=-1).sqrt()
            result["forces_members"] = member_forces
        if stress:
            stresses = outputs["stress"]
            result["stress"] = stresses.mean(dim=0)
            result["stress_std"] = stresses.std(dim=0, unbiased=True)
        return result

    #: How a shallow committee takes its K heads' forces and stress from the one trunk: ``"batched"`` (one vmapped
    #: backward over the K head energies, ``autograd.grad(is_grads_batched=True)``) or ``"loop"`` (K backwards through
    #: the kept graph). Batched falls back to the loop, for this committee, where a backbone's backward cannot be
    #: vmapped. Measured in benchmarks/bench_active_learning.py (cost).
    head_gradients: str = "batched"

    def _runs_trunk_once(self) -> bool:
        return self.kind == "shallow" and not self.training and self._members_share_trunk()

    def _heads_on_one_trunk(self, batch: Batch, forces: bool, stress: bool) -> dict[str, torch.Tensor] | None:
        """The members' energies (K, B), forces (K, N, 3), stress (K, B, 3, 3) from one trunk pass and K readout heads;
        None where the backbone has no trunk / readout split."""
        first = self.members[0]
        trunk = first.run_trunk(_fresh(batch).data, forces=forces, stress=stress)
        if trunk is None:
            return None
        energies = torch.stack(
            [trunk.energy + first.run_readout(trunk, head) + _shift(member, batch, trunk.energy.dtype)
             for member, head in zip(self.members, self._heads)]
        )
        outputs = {"energy": energies}
        if trunk.inputs:
            outputs.update(trunk.forces_and_stress(self._gradients_per_head(energies, trunk.inputs)))
        return outputs

    def _gradients_per_head(self, energies: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """d(Σ_b energies[k, b]) / d input for every head k: a list over inputs of ``(K, *input.shape)``. Inference
        only (no graph is kept for a second derivative: the trunk-once path runs in eval mode)."""
        size = energies.shape[0]
        gradients = None
        if self.head_gradients == "batched":
            # One backward vmapped over the K cotangents e_k ⊗ 1_B (row k of the identity, over all structures).
            cotangents = torch.eye(size, dtype=energies.dtype, device=energies.device)[:, :, None]
            try:
                gradients = torch.autograd.grad(
                    energies, list(inputs), grad_outputs=cotangents.expand(size, *energies.shape),
                    is_grads_batched=True, retain_graph=True, allow_unused=True,
                )
            except RuntimeError as error:  # an op of this backbone's backward without a vmap rule
                logger.info("%s: batched head gradients failed (%s); one backward per head from now on",
                            self.name, str(error).splitlines()[0][:200])
                self.head_gradients = "loop"
        if gradients is None:
            per_head = [
                torch.autograd.grad(energies[k].sum(), list(inputs), retain_graph=k < size - 1, allow_unused=True)
                for k in range(size)
            ]
            gradients = [
                None if per_head[0][i] is None else torch.stack([g[i] for g in per_head]) for i in range(len(inputs))
            ]
        return [
            torch.zeros(size, *tensor.shape, dtype=tensor.dtype, device=tensor.device) if gradient is None else gradient
            for gradient, tensor in zip(gradients, inputs)
        ]

    def _apply(self, fn, *args, **kwargs):
        self._trunk_tensors = None  # .to() / .double() replace buffers: list the trunk's tensors again
        return super()._apply(fn, *args, **kwargs)

    def _members_share_trunk(self) -> bool:
        """Whether every member's weights outside its readout block equal member 0's (what makes one trunk pass
        exact). The tensors are listed once; they are compared again only after one of them changed (data pointer or
        in-place version counter: an optimiser step, ``load_state_dict``), so a forward pays ~nothing. Swapping a
        member's modules after the committee is built (wrapping layers) is not seen: build the committee after."""
        if getattr(self, "_trunk_tensors", None) is None:
            self._trunk_tensors = [_trunk_tensors(member) for member in self.members]
            self._heads = [readout_block(member) for member in self.members]
            self._trunk_check = (None, False)
        trunks = self._trunk_tensors
        key = tuple((t.data_ptr(), t._version) for tensors in trunks for t in tensors)
        if self._trunk_check[0] != key:
            shared = all(
                len(tensors) == len(trunks[0]) and all(
                    a.shape == b.shape and torch.equal(a, b) for a, b in zip(tensors, trunks[0])
                )
                for tensors in trunks[1:]
            )
            if not shared:
                logger.info("%s: members differ outside their readout blocks; running K forwards", self.name)
            self._trunk_check = (key, shared)
        return self._trunk_check[1]

    def predict(
        self,
        structures: Sequence[Atoms],
        batch_size: int | None = None,
        forces: bool = True,
        stress: bool = True,
        progress: bool = False,
        members: bool = False,
    ) -> list[dict[str, np.ndarray | float]]:
        """Per structure: mean ``energy`` eV, ``forces`` (n, 3) eV/Å, ``stress`` (3, 3) eV/Å³ and calibrated
        ``energy_std`` eV, ``forces_std`` (n,) eV/Å, ``stress_std`` (3, 3) eV/Å³; with ``members`` also
        ``energy_members`` (K,) and ``forces_members`` (K, n, 3) (uncalibrated, as each member predicts)."""
        structures = list(structures)
        self.check_elements(structures)
        if batch_size is None:
            batch_size = self.gpu_batch_size if self.device.type == "cuda" else self.cpu_batch_size
        was_training = self.training
        self.eval()
        results: list[dict] = [None] * len(structures)  # type: ignore[list-item]
        order = sorted(range(len(structures)), key=lambda i: len(structures[i]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"{self.name} predict", unit="batch")
        try:
            for chunk in chunks:
                chunk_structures = [structures[i] for i in chunk]
                batch = self.make_batch(chunk_structures, [self.featurize(atoms) for atoms in chunk_structures])
                output = {k: v.detach().double().cpu().numpy() for k, v in self.forward(batch, forces, stress).items()}
                offsets = np.concatenate([[0], np.cumsum([len(structures[i]) for i in chunk])])
                for k, i in enumerate(chunk):
                    atoms_slice = slice(offsets[k], offsets[k + 1])
                    record: dict = {
                        "energy": float(output["energy"][k]),
                        "energy_std": float(output["energy_std"][k] * self.alpha("energy")),
                    }
                    if forces:
                        record["forces"] = output["forces"][atoms_slice]
                        record["forces_std"] = output["forces_std"][atoms_slice] * self.alpha("forces")
                    if stress:
                        record["stress"] = output["stress"][k]
                        record["stress_std"] = output["stress_std"][k] * self.alpha("stress")
                    if members:
                        record["energy_members"] = output["energy_members"][:, k]
                        if forces:
                            record["forces_members"] = output["forces_members"][:, atoms_slice]
                    results[i] = record
        finally:
            self.train(was_training)
        return results

    def calculator(self, bias_tau: float = 0.0, **kwargs) -> CommitteeCalculator:
        """ASE calculator: mean energy / forces / stress plus ``energy_std``, ``forces_std``, ``stress_std`` results.
        ``bias_tau`` > 0 (eV per eV of σ_E) runs the biased surface E − τ·σ_E of hyperactive learning."""
        return CommitteeCalculator(self, bias_tau=bias_tau, **kwargs)

    # -- persistence ------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        directory = Path(directory)
        record: dict = {"kind": self.kind, "size": self.size, "calibration": self.calibration}
        if self.kind == "full":
            names = []
            for k, member in enumerate(self.members):
                member.save(directory / f"member-{k}")
                names.append(f"member-{k}")
            record["members"] = names
            return record
        trunk = self.members[0]
        trunk.save(directory / "trunk")
        (directory / "heads").mkdir(exist_ok=True)
        heads = []
        for k, member in enumerate(self.members):
            state = {key: value.detach().cpu().clone() for key, value in readout_block(member).state_dict().items()}
            torch.save(state, directory / "heads" / f"head-{k}.pt")
            heads.append(f"heads/head-{k}.pt")
        record["trunk"] = "trunk"
        record["heads"] = heads
        return record

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> CommitteePotential:
        """Members load through :func:`load_potential` (atomtune directories: tensors and plain data); ``trust`` is
        passed on only when set, for a member whose backbone saves pickles by design."""
        from atomtune.models import registry

        def load_potential(path: str):
            # float64 loses nothing of a member saved in either precision; the committee is then cast once to the
            # dtype the caller asked for (registry.load_potential). Loading in float32 here rounded float64 members.
            return registry.load_potential(path, dtype="float64", **({"trust": True} if trust else {}))

        directory = Path(directory)
        weights = metadata.get("weights") or {}
        kind = weights.get("kind")
        if kind not in KINDS:
            raise CommitteeError(f"{directory}: committee kind {kind!r} in atomtune.json is not one of {KINDS}.")
        if kind == "full":
            names = weights.get("members") or []
            if len(names) < 2:
                raise CommitteeError(f"{directory}: a committee needs ≥ 2 members, atomtune.json lists {len(names)}.")
            members = [load_potential(str(directory / name)) for name in names]
        else:
            trunk = load_potential(str(directory / weights["trunk"]))
            members = []
            for head in weights.get("heads") or []:
                member = copy.deepcopy(trunk)
                # Plain tensors only: loading a committee never runs code from its files.
                state = torch.load(directory / head, map_location="cpu", weights_only=True)
                readout_block(member).load_state_dict(state)
                members.append(member)
        return cls(members, kind=kind, calibration=weights.get("calibration") or {}, checkpoint=metadata.get("checkpoint", ""))

    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> CommitteePotential:
        raise CommitteeError(
            f"{checkpoint!r}: a committee has no released checkpoint; it is a directory written by "
            f"`atomtune finetune --committee K --out DIR` (then --model DIR)."
        )

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        return False

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        return frozenset()

    def set_calibration(self, calibration: dict[str, float]) -> None:
        """Replace the α factors (quantity → α); :func:`atomtune.uncertainty.calibration.calibrate` fits them."""
        self.calibration = {q: float(a) for q, a in calibration.items() if q in QUANTITIES}


class CommitteeCalculator(PotentialCalculator):
    """ASE calculator over a committee: mean energy / forces / stress plus ``energy_std`` (eV), ``forces_std`` (n,) eV/Å,
    ``stress_std`` (Voigt 6, eV/Å³), calibrated. With ``bias_tau`` τ > 0 energy and forces are those of E − τ·σ_E
    (hyperactive learning, van der Oord et al., npj Comput. Mater. 9, 168 (2023)); ``unbiased_energy`` and
    ``unbiased_forces`` keep the committee mean."""

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std", "stress_std"]

    def __init__(self, potential: CommitteePotential, bias_tau: float = 0.0, **kwargs):
        super().__init__(potential, **kwargs)
        self.bias_tau = float(bias_tau)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super(PotentialCalculator, self).calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties and bool(self.atoms.pbc.all())
        (record,) = self.potential.predict([self.atoms], batch_size=1, stress=want_stress, members=self.bias_tau > 0)
        energy, forces = record["energy"], record["forces"]
        self.results.update(
            energy_std=record["energy_std"], forces_std=record["forces_std"], unbiased_energy=energy,
            unbiased_forces=forces,
        )
        if self.bias_tau > 0:
            gradient = sigma_energy_gradient(record["energy_members"], record["forces_members"])
            energy = energy - self.bias_tau * record["energy_std"]
            forces = forces + self.bias_tau * gradient * self.potential.alpha("energy")
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = forces
        if want_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(record["stress"])
            self.results["stress_std"] = full_3x3_to_voigt_6_stress(record["stress_std"])


def sigma_energy_gradient(energies: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """∂σ_E/∂r (n, 3) in eV/Å from the members' energies (K,) and forces (K, n, 3): with Ē, F̄ the means,
    ∂σ_E/∂r = Σ_k (E_k − Ē)(F̄ − F_k) / ((K − 1) σ_E) (zero where σ_E = 0)."""
    energies = np.asarray(energies, dtype=float)
    forces = np.asarray(forces, dtype=float)
    deviation = energies - energies.mean()
    sigma = float(np.sqrt((deviation**2).sum() / (len(energies) - 1)))
    if sigma == 0.0:
        return np.zeros(forces.shape[1:])
    return np.einsum("k,kij->ij", deviation, forces.mean(axis=0) - forces) / ((len(energies) - 1) * sigma)


def readout_block(potential: Potential) -> torch.nn.Module:
    """The block a shallow committee gives each member its own copy of: the last of ``potential.blocks()``."""
    return potential.blocks()[-1][1]


def check_members(members: Sequence[Potential]) -> None:
    """Raise :class:`CommitteeError` unless there are ≥ 2 members of one backbone, checkpoint and cutoff, on one E0 scale."""
    if len(members) < 2:
        raise CommitteeError(
            f"a committee needs at least 2 members to have a spread, got {len(members)} (--committee K with K ≥ 2)."
        )
    first = members[0]
    for k, member in enumerate(members[1:], start=1):
        if isinstance(member, CommitteePotential):
            raise CommitteeError(f"member {k} is itself a committee; give plain potentials.")
        if (member.backbone, member.checkpoint) != (first.backbone, first.checkpoint):
            raise CommitteeError(
                f"committee members differ in backbone: member 0 is {first.name}, member {k} is {member.name}. All "
                f"members must be fine-tuned from the same foundation model."
            )
        if abs(member.cutoff - first.cutoff) > 1e-9:
            raise CommitteeError(f"committee members differ in cutoff: {first.cutoff} Å vs {member.cutoff} Å (member {k}).")
        difference = _e0_difference(first, member)
        if difference:
            raise CommitteeError(
                f"committee members 0 and {k} have different per-element E0s ({difference}): their energy spread "
                f"would measure the E0 fit, not the model. Train them from one shared E0 re-estimation "
                f"(atomtune.uncertainty.train_committee does)."
            )


def _e0_difference(first: Potential, other: Potential, tolerance: float = 1e-6) -> str:
    for attribute in ("get_element_energy_shift", "native_element_shift"):
        a = getattr(first, attribute, None)
        b = getattr(other, attribute, None)
        a = a() if callable(a) else (a or {})
        b = b() if callable(b) else (b or {})
        for symbol in sorted(set(a) | set(b)):
            if abs(a.get(symbol, 0.0) - b.get(symbol, 0.0)) > tolerance:
                return f"{symbol}: {a.get(symbol, 0.0):+.6f} vs {b.get(symbol, 0.0):+.6f} eV/atom"
    return ""


def _trunk_tensors(member: Potential) -> list[torch.Tensor]:
    """A member's parameters and buffers outside its readout block, in state-dict order; atomtune's own
    ``element_energy_shift`` is left out (each member's is added to its own energy, on either path)."""
    readout = {id(t) for t in readout_block(member).state_dict(keep_vars=True).values()}
    return [
        tensor for name, tensor in member.state_dict(keep_vars=True).items()
        if id(tensor) not in readout and name != "element_energy_shift"
    ]


def _shift(member: Potential, batch: Batch, dtype: torch.dtype) -> torch.Tensor:
    """A member's ``element_energy_shift`` summed per structure ``(B,)`` eV, as :meth:`Potential.forward` adds it."""
    shift = member.element_energy_shift[batch.numbers]
    per_structure = torch.zeros(batch.num_structures, dtype=shift.dtype, device=shift.device)
    return per_structure.index_add(0, batch.structure_index, shift).to(dtype)


def _fresh(batch: Batch) -> Batch:
    """A shallow copy of the batch whose collated data is a fresh container, so a backbone that sets fields on its input
    (``requires_grad`` positions, cached edge vectors) cannot leak one member's graph into the next member's pass."""
    data = batch.data
    if isinstance(data, dict):
        data = dict(data)
    else:
        data = copy.copy(data)
    return Batch(data=data, numbers=batch.numbers, structure_index=batch.structure_index, n_atoms=batch.n_atoms)


def is_committee(potential: Any) -> bool:
    """True for a :class:`CommitteePotential` (what tasks check before asking for ``*_std``)."""
    return isinstance(potential, CommitteePotential)
