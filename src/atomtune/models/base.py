"""The Potential protocol: one interface every backbone (CHGNet, SevenNet, MACE, …) implements.

Batched by construction (as in torch-sim): ``forward(batch)`` returns energies, forces (−dE/dr by autograd) and stresses
(strain derivative) for all structures of a batch in one pass, differentiable with respect to the parameters, so training,
batched inference (``predict``) and the ASE calculator (``calculator()``) all go through the same call. A single structure is
the batch of one.

Units and signs are ASE's everywhere: energy eV (total per structure), forces eV/Å, stress eV/Å³ as a 3×3 tensor with ASE's
sign (``atoms.get_stress()`` convention: negative under compression). Each backbone converts from its native units inside
``compute``.

A backbone subclass implements:

- ``featurize(atoms)`` → the backbone's graph for one structure (cacheable: the fine-tuning loop builds it once per
  structure and reuses it every epoch);
- ``collate(graphs)`` → the backbone's batched input;
- ``compute(data, forces, stress)`` → ``{"energy": (B,), "forces": (N, 3), "stress": (B, 3, 3)}`` in ASE units;
- ``blocks()`` → named parameter blocks, input embedding first, readout last (freezing by depth counts from the end);
- ``supported_elements``, ``cutoff``; ``atom_features(data)`` for embeddings (DIRECT sampling, UMAP);
- ``save_weights(directory)`` and classmethod ``load_weights(directory, metadata)``;
- optionally ``run_trunk(data)`` and ``run_readout(trunk, head)``: ``compute`` split at the readout block, so that a
  shallow committee (one trunk, K readout heads) runs the trunk once (:class:`TrunkPass`; without: K forwards).

On top of the backbone's energy the base class adds a fixed per-element energy shift (``element_energy_shift``, eV per atom of
each element): this is how E0 re-estimation moves a foundation model onto another DFT code's or functional's absolute energy
scale without touching its weights.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from atomtune.exceptions import UnsupportedElementsError
from atomtune.files import atomic_write_json, json_default  # noqa: F401  (json_default: re-exported for old imports)
from atomtune.models.registry import METADATA_FILE, backbones_covering
UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å³ (ASE sign)", "element_energy_shift": "eV/atom"}


@dataclass
class Batch:
    """Input of one forward pass: the backbone's collated graph plus the per-atom bookkeeping every backbone shares."""

    data: Any
    numbers: torch.Tensor  # (N,) atomic numbers, all structures concatenated
    structure_index: torch.Tensor  # (N,) index of the structure each atom belongs to
    n_atoms: torch.Tensor  # (B,) atoms per structure

    @property
    def num_structures(self) -> int:
        return int(self.n_atoms.shape[0])


@dataclass
class TrunkPass:
    """One pass of a potential's trunk (every block but the readout, ``blocks()[-1]``) over a collated batch.

    What :meth:`Potential.run_trunk` returns and :meth:`Potential.run_readout` reads: a shallow committee runs the trunk
    once, each of its K readout heads on ``features``, and takes forces and stress of all heads from one set of
    gradients.
    """

    #: What the readout block reads (backbone-specific: per-atom features, the backbone's graph dict, …).
    features: Any
    #: ``(B,)`` eV: the part of the energy outside the readout block (a composition reference, earlier layers'
    #: readouts), without atomtune's ``element_energy_shift``; zeros when the readout produces all of it.
    energy: torch.Tensor
    #: The differentiable leaves forces and stress are gradients with respect to (empty without forces and stress).
    inputs: tuple[torch.Tensor, ...]
    #: Gradients of energies with respect to ``inputs``, each with a leading head dimension ``(K, *input.shape)`` →
    #: ``{"forces": (K, N, 3) eV/Å, "stress": (K, B, 3, 3) eV/Å³ ASE sign}`` (those asked of ``run_trunk``).
    forces_and_stress: Callable[[Sequence[torch.Tensor]], dict[str, torch.Tensor]]


class Potential(torch.nn.Module, ABC):
    """A machine-learning interatomic potential behind one batched, differentiable interface.

    Subclasses set ``backbone`` (family name, e.g. ``"chgnet"``) and implement the abstract methods. Construct them through
    :func:`atomtune.models.load_potential` (``"chgnet-0.3.0"``, ``"sevennet-0"``, ``"path/to/mace.model"``, ``"ft/"``).
    """

    backbone: ClassVar[str] = ""
    #: Structures per forward pass in ``predict`` on CPU / GPU; chosen per backbone by measurement (benchmarks/).
    cpu_batch_size: ClassVar[int] = 1
    gpu_batch_size: ClassVar[int] = 32
    #: Blocks (of :meth:`blocks`, from the readout) that ``--strategy freeze`` trains when no depth is given; chosen
    #: per backbone by measurement (docs/finetuning.md, "Freeze depth").
    default_freeze_depth: ClassVar[int] = 2

    def __init__(self, checkpoint: str):
        super().__init__()
        self.checkpoint = checkpoint
        # Per-element energy shift in eV/atom, indexed by atomic number (float64: shifts can be ~5 eV/atom and the
        # differences we care about are meV).
        self.register_buffer("element_energy_shift", torch.zeros(len(chemical_symbols), dtype=torch.float64))
        self.training_history: list[dict] = []  # provenance of fine-tunes applied to this potential

    # -- what each backbone implements ------------------------------------------------------------------------------
    @abstractmethod
    def featurize(self, atoms: Atoms) -> Any:
        """The backbone's input graph for one structure (CPU; cached by the fine-tuning loop)."""

    @abstractmethod
    def collate(self, graphs: Sequence[Any]) -> Any:
        """Batch graphs from :meth:`featurize` into the backbone's input, on ``self.device``."""

    @abstractmethod
    def compute(self, data: Any, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Backbone energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign), differentiable."""

    @abstractmethod
    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """Named blocks from input embedding to readout; every trainable parameter is in exactly one block."""

    @property
    @abstractmethod
    def supported_elements(self) -> frozenset[str]:
        """Chemical symbols the backbone was trained on."""

    @property
    @abstractmethod
    def cutoff(self) -> float:
        """Interaction cutoff radius in Å."""

    @abstractmethod
    def atom_features(self, data: Any) -> torch.Tensor:
        """Per-atom invariant embeddings ``(N, F)`` from the backbone's last message-passing layer (for DIRECT, UMAP)."""

    @abstractmethod
    def save_weights(self, directory: Path) -> dict:
        """Write the weights into ``directory``; return extra metadata needed by :meth:`load_weights`."""

    @classmethod
    @abstractmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> Potential:
        """Rebuild the potential saved by :meth:`save_weights` (tensors and plain data only; ``trust`` only matters
        for a backbone whose saved form must be unpickled, see :mod:`atomtune.loading`)."""

    # -- what each backbone's registry entry needs (called by atomtune.models.registry) ------------------------------
    @classmethod
    @abstractmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> Potential:
        """A released checkpoint by the backbone's own name, or a file in the backbone's native format; a native file
        that is a pickle by design loads only with ``trust``."""

    @classmethod
    @abstractmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """Whether ``checkpoint`` loads without network now (in the wheel, cached, or a local file)."""

    @classmethod
    @abstractmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        """Chemical symbols a named checkpoint covers (used to suggest alternatives for unsupported elements)."""

    def backbone_version(self) -> str:
        """Version of the backbone's package (recorded in the metadata)."""
        return ""

    # -- optional: compute split at the readout block (shallow committees run the trunk once) ------------------------
    def run_trunk(self, data: Any, forces: bool = True, stress: bool = True) -> TrunkPass | None:
        """Everything of :meth:`compute` before the readout block (``blocks()[-1]``), on a collated batch; ``None``
        (this default) where the backbone has no such split, and a shallow committee then runs K full forwards.

        A backbone that returns a :class:`TrunkPass` also implements :meth:`run_readout`, such that for its own
        readout block ``trunk.energy + run_readout(trunk, blocks()[-1][1])`` is ``compute``'s energy and the gradients
        of that sum with respect to ``trunk.inputs``, through ``trunk.forces_and_stress``, are its forces and stress.
        """
        return None

    def run_readout(self, trunk: TrunkPass, head: torch.nn.Module) -> torch.Tensor:
        """Energies ``(B,)`` eV of readout block ``head`` (this potential's ``blocks()[-1][1]`` or a module of the
        same structure, e.g. another committee member's) on ``trunk.features``, excluding ``trunk.energy``."""
        raise NotImplementedError(f"{type(self).__name__} has no trunk / readout split")

    # -- optional: per-atom energies (exact chunked evaluation of large cells, atomtune.models.chunking) -------------
    #: Memory (bytes) one evaluation in ``predict`` may use; None: a fraction of the available memory
    #: (:func:`atomtune.models.chunking.memory_budget_bytes`). A cell estimated above it is evaluated in chunks.
    memory_budget: float | None = None

    @property
    def receptive_field(self) -> float | None:
        """Distance (Å) beyond which no atom changes another's energy: interaction layers × cutoff for a
        message-passing backbone; None (this default) where unknown, and such a backbone is never split into chunks."""
        return None

    def compute_atoms(
        self, data: Any, weights: torch.Tensor | None = None, forces: bool = True
    ) -> dict[str, torch.Tensor]:
        """Per-atom energies of a collated batch and the forces of a weighted sum of them.

        Returns ``{"energies": (N,) eV, "forces": (N, 3) eV/Å}``: ``energies`` sum per structure to :meth:`compute`'s
        energy (the backbone's own per-atom decomposition, without ``element_energy_shift``), and ``forces`` are
        −∂(Σ_i w_i e_i)/∂r_k on every atom k (``weights`` ``(N,)``, all ones when None: then :meth:`compute`'s forces).
        Chunked evaluation weights a chunk's owned atoms 1 and its halo atoms 0. Backbones without a per-atom
        decomposition raise NotImplementedError (this default).
        """
        raise NotImplementedError(f"{type(self).__name__} gives no per-atom energies")

    def energy_derivatives(
        self, energy: torch.Tensor, positions: torch.Tensor, strain: torch.Tensor | None, cells: torch.Tensor,
        forces: bool, stress: bool,
    ) -> dict[str, torch.Tensor]:
        """:meth:`compute`'s result from a batch ``energy`` (B,) computed from the leaf ``positions`` (N, 3) and, for
        stress, a strain leaf ``strain`` (B, 3, 3) applied to ``cells`` (B, 3, 3): forces −∂E/∂r (eV/Å), stress
        (1/V) ∂E/∂ε (eV/Å³, ASE's sign), by one autograd call (a graph kept while training)."""
        output = {"energy": energy}
        inputs = [tensor for tensor, wanted in ((positions, forces), (strain, stress)) if wanted]
        if inputs:
            gradients = torch.autograd.grad(
                energy.sum(), inputs, create_graph=self.training, allow_unused=True, materialize_grads=True
            )
            if forces:
                output["forces"] = -gradients[0]
            if stress:
                volumes = torch.linalg.det(cells).abs()
                output["stress"] = gradients[-1] / volumes[:, None, None]
        return output

    @contextlib.contextmanager
    def weights_without_gradients(self):
        """Within: in eval mode (inference: :meth:`predict`, the ASE calculator), the weights stop requiring gradients
        and get them back after, so that autograd records only what forces and stress (derivatives with respect to
        positions and strain) need, as the families' own calculators run (fairchem's ``MLIPPredictUnit`` turns them off
        for good). Weight gradients cost a UMA-S-size model ~4 % and a MatterSim-1M-size one ~7 % of its CPU time on
        40-atom cells (benchmarks/bench_envs_*.py). In train mode it does nothing: fine-tuning needs them."""
        trainable = [] if self.training else [parameter for parameter in self.parameters() if parameter.requires_grad]
        for parameter in trainable:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in trainable:
                parameter.requires_grad_(True)

    def atom_energies_result(
        self, energies: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor | None, forces: bool
    ) -> dict[str, torch.Tensor]:
        """:meth:`compute_atoms`' result from per-atom ``energies`` computed from the leaf ``positions``: the forces
        are −∂(Σ_i w_i e_i)/∂r by autograd (a graph kept while training)."""
        result = {"energies": energies}
        if forces:
            weighted = energies if weights is None else energies * weights.to(energies.dtype)
            (gradient,) = torch.autograd.grad(
                weighted.sum(), [positions], create_graph=self.training, allow_unused=True, materialize_grads=True
            )
            result["forces"] = -gradient
        return result

    # -- shared machinery ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return self.element_energy_shift.device

    def make_batch(self, structures_or_graphs: Sequence[Any], graphs: Sequence[Any] | None = None) -> Batch:
        """Build a :class:`Batch` from structures (featurised here) or from (structures, cached graphs)."""
        structures = list(structures_or_graphs)
        if graphs is None:
            self.check_elements(structures)
            graphs = [self.featurize(atoms) for atoms in structures]
        n_atoms = torch.tensor([len(atoms) for atoms in structures], dtype=torch.long)
        numbers = torch.as_tensor(np.concatenate([atoms.numbers for atoms in structures]), dtype=torch.long)
        structure_index = torch.repeat_interleave(torch.arange(len(structures)), n_atoms)
        device = self.device
        return Batch(
            data=self.collate(list(graphs)),
            numbers=numbers.to(device),
            structure_index=structure_index.to(device),
            n_atoms=n_atoms.to(device),
        )

    def forward(self, batch: Batch, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies (B,), forces (N, 3), stresses (B, 3, 3) for a batch, differentiable w.r.t. parameters."""
        output = self.compute(batch.data, forces=forces, stress=stress)
        shift = self.element_energy_shift[batch.numbers]
        energy = output["energy"]
        per_structure = torch.zeros(batch.num_structures, dtype=shift.dtype, device=shift.device)
        per_structure = per_structure.index_add(0, batch.structure_index, shift)
        output["energy"] = energy + per_structure.to(energy.dtype)
        return output

    def predict(
        self,
        structures: Sequence[Atoms],
        batch_size: int | None = None,
        forces: bool = True,
        stress: bool = True,
        progress: bool = False,
    ) -> list[dict[str, np.ndarray | float]]:
        """Batched inference: per structure ``{"energy": eV, "forces": (n, 3) eV/Å, "stress": (3, 3) eV/Å³}``."""
        structures = list(structures)
        self.check_elements(structures)
        if batch_size is None:
            batch_size = self.gpu_batch_size if self.device.type == "cuda" else self.cpu_batch_size
        was_training = self.training
        self.eval()
        results: list[dict] = [None] * len(structures)  # type: ignore[list-item]
        # A cell whose estimated memory exceeds the budget is evaluated alone, exactly, in spatial chunks with ghost
        # atoms (atomtune.models.chunking; refused there with the estimate when even one chunk cannot fit).
        from atomtune.models import chunking

        budget = chunking.memory_budget_bytes(self)
        large = [i for i in range(len(structures)) if chunking.needs_chunking(self, structures[i], budget)]
        # Group similar sizes together so padding-free backbones still see balanced batches; keep output order.
        order = sorted(set(range(len(structures))) - set(large), key=lambda i: len(structures[i]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        iterator = chunks
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(chunks, desc=f"{self.name} predict", unit="batch")
        try:
            for i in large:
                results[i] = chunking.predict_chunked(self, structures[i], forces=forces, stress=stress, budget=budget)
            for chunk in iterator:
                chunk_structures = [structures[i] for i in chunk]  # elements already checked above, once
                batch = self.make_batch(chunk_structures, [self.featurize(atoms) for atoms in chunk_structures])
                output = self.forward(batch, forces=forces, stress=stress)
                energies = output["energy"].detach().double().cpu().numpy()
                atom_forces = output["forces"].detach().double().cpu().numpy() if forces else None
                stresses = output["stress"].detach().double().cpu().numpy() if stress else None
                offsets = np.concatenate([[0], np.cumsum([len(structures[i]) for i in chunk])])
                for k, i in enumerate(chunk):
                    record: dict = {"energy": float(energies[k])}
                    if atom_forces is not None:
                        record["forces"] = atom_forces[offsets[k] : offsets[k + 1]]
                    if stresses is not None:
                        record["stress"] = stresses[k]
                    results[i] = record
        finally:
            self.train(was_training)
        return results

    def embed(self, structures: Sequence[Atoms], batch_size: int = 16) -> list[np.ndarray]:
        """Per-atom embeddings for each structure (list of ``(n_atoms, F)`` arrays)."""
        structures = list(structures)
        features = []
        with torch.no_grad():
            for start in range(0, len(structures), batch_size):
                chunk = structures[start : start + batch_size]
                batch = self.make_batch(chunk)
                per_atom = self.atom_features(batch.data).detach().double().cpu().numpy()
                offsets = np.concatenate([[0], np.cumsum([len(a) for a in chunk])])
                features.extend(per_atom[offsets[k] : offsets[k + 1]] for k in range(len(chunk)))
        return features

    def calculator(self, **kwargs) -> PotentialCalculator:
        """An ASE calculator on this potential's batched forward (a batch of one)."""
        return PotentialCalculator(self, **kwargs)

    def check_elements(self, structures: Sequence[Atoms], where: str = "") -> None:
        """Raise :class:`UnsupportedElementsError` before any compute if a structure has an element the backbone lacks."""
        present = {symbol for atoms in structures for symbol in atoms.get_chemical_symbols()}
        missing = present - set(self.supported_elements)
        if missing:
            if not where:
                first = next(
                    (i for i, atoms in enumerate(structures) if set(atoms.get_chemical_symbols()) & missing), None
                )
                if first is not None:
                    where = f"structure {first} ({structures[first].info.get('id', first)})"
            raise UnsupportedElementsError(missing, self.name, where, alternatives=backbones_covering(missing))

    @property
    def name(self) -> str:
        return f"{self.backbone}:{self.checkpoint}"

    # -- element energy shift (E0) ---------------------------------------------------------------------------------
    def set_element_energy_shift(self, shifts: dict[str, float]) -> None:
        """Set the fixed per-element energy shift (eV/atom) added to every energy (replaces the previous one)."""
        table = torch.zeros_like(self.element_energy_shift)
        for symbol, value in shifts.items():
            table[chemical_symbols.index(symbol)] = float(value)
        self.element_energy_shift.copy_(table)

    def get_element_energy_shift(self) -> dict[str, float]:
        values = self.element_energy_shift.detach().cpu().numpy()
        return {chemical_symbols[z]: float(v) for z, v in enumerate(values) if v != 0.0}

    # -- persistence -----------------------------------------------------------------------------------------------
    def metadata(self) -> dict:
        from atomtune import __version__

        return {
            "backbone": self.backbone,
            "checkpoint": self.checkpoint,
            "backbone_version": self.backbone_version(),
            "atomtune_version": __version__,
            "units": UNITS,
            "element_energy_shift": self.get_element_energy_shift(),
            "cutoff": self.cutoff,
            "supported_elements": sorted(self.supported_elements, key=chemical_symbols.index),
            "training_history": self.training_history,
        }

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Save weights plus ``atomtune.json`` (backbone, source checkpoint, versions, units, E0 shift) to a directory.

        Load it back with :func:`atomtune.models.load_potential` (``--model DIR``); the files hold tensors and plain data.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metadata = self.metadata()
        metadata["weights"] = self.save_weights(directory)
        if extra:
            metadata.update(extra)
        atomic_write_json(directory / METADATA_FILE, metadata)
        return directory


class PotentialCalculator(Calculator):
    """ASE calculator over :meth:`Potential.forward` (energy, free_energy, forces, stress)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        # Stress costs extra (a strain derivative), so it is computed only once something has asked for it; from then on
        # it comes with every evaluation. A cell filter asks forces and then stress for each new state: without this,
        # every relaxation step evaluated the model twice.
        self._stress_asked = False

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self._stress_asked = self._stress_asked or "stress" in properties
        want_stress = self._stress_asked and bool(self.atoms.pbc.all())
        (record,) = self.potential.predict([self.atoms], batch_size=1, forces=True, stress=want_stress)
        self.results["energy"] = record["energy"]
        self.results["free_energy"] = record["energy"]
        self.results["forces"] = record["forces"]
        if want_stress:
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(record["stress"])
