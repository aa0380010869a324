"""CHGNet backbone (Deng et al., Nat. Mach. Intell. 2023): the ``chgnet-*`` checkpoints behind the Potential protocol.

Sits in ``models/``: the registry resolves ``chgnet-0.3.0`` (default), ``chgnet-0.2.0`` and ``chgnet-r2scan`` to a
:class:`ChgnetPotential`, whose weights ship inside the chgnet wheel. ``featurize`` builds CHGNet's own ``CrystalGraph``
(atom graph within 6 Å, bond graph within 3 Å); ``compute`` runs CHGNet's own layers on a batch of them.

CHGNet quirks handled here so the rest of atomtune sees ASE units:

- the network predicts energy *per atom*; ``compute`` returns the total (sum of site energies plus the per-element
  composition reference, ``AtomRef``), in eV;
- ``CHGNet.predict_graph`` returns stress in GPa as ``(160.2/V) dE/dε`` and its ASE calculator multiplies by ``units.GPa``
  (no sign change), so ASE stress is ``(1/V) dE/dε`` with CHGNet's strain ``lattice @ (1 + ε)``; computed here directly;
- magnetic moments (CHGNet's ``site_wise`` head) are not part of the protocol and are not computed.

Compared with CHGNet's own calculator, ``compute`` takes forces and stress in one backward pass without ``create_graph``
(CHGNet takes two, each keeping a double-backward graph) and skips magmoms and crystal features; this is where the
inference speed-up measured in ``benchmarks/bench_predict_chgnet.py`` comes from.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models import chunking
from atomtune.models.base import Potential, TrunkPass

#: Checkpoints that ``chgnet.model.CHGNet.load(model_name=...)`` reads from the chgnet wheel.
CHECKPOINTS = ("0.3.0", "0.2.0", "r2scan")
#: CHGNet embeds atomic numbers 1..94 (``AtomEmbedding(max_num_elements=94)``) for every released checkpoint.
CHECKPOINT_ELEMENTS = frozenset(chemical_symbols[1:95])
#: File name of the saved model; CHGNet's own trainer format, so ``CHGNet.from_file(path)`` reads it too.
WEIGHTS_FILE = "chgnet.pth.tar"
#: Edge or angle rows per slice when a convolution's activations are recomputed (~5 kB of activations per angle row in
#: float32: ~170 MB per slice).
ROWS_PER_SLICE = 32_768


@dataclass
class ChgnetGraphBatch:
    """CHGNet crystal graphs of several structures concatenated, with indices offset into the batch.

    Geometry is kept as fractional coordinates and lattices (CHGNet's parametrisation), so that strain and positions can be
    made differentiable inside :meth:`ChgnetPotential.compute`.
    """

    atomic_numbers: torch.Tensor  # (N,) long
    frac_coords: torch.Tensor  # (N, 3)
    lattices: torch.Tensor  # (B, 3, 3) Å, lattice vectors as rows
    atom_owner: torch.Tensor  # (N,) structure of each atom
    atom_graph: torch.Tensor  # (E, 2) directed bonds (center, neighbor) within the atom-graph cutoff
    neighbor_image: torch.Tensor  # (E, 3) periodic image of the neighbor, in lattice vectors
    bond_owner: torch.Tensor  # (E,) structure of each directed bond
    directed2undirected: torch.Tensor  # (E,)
    undirected2directed: torch.Tensor  # (U,)
    bond_graph: torch.Tensor  # (A, 3) angles: (center atom, undirected bond 1, undirected bond 2)
    angle_directed_bonds: torch.Tensor  # (A, 2) the two directed bonds of each angle
    n_atoms: torch.Tensor  # (B,)

    @property
    def num_structures(self) -> int:
        return int(self.n_atoms.shape[0])


class ChgnetPotential(Potential):
    """A pretrained or fine-tuned CHGNet behind the batched Potential interface.

    Build it with :meth:`from_checkpoint` (``"0.3.0"``, ``"0.2.0"``, ``"r2scan"``) or ``load_potential("chgnet-0.3.0")``.
    The wrapped ``chgnet.model.CHGNet`` is ``self.model``.
    """

    backbone = "chgnet"
    #: One structure per forward pass on CPU: batches of 1, 2 and 4 ran equally fast with one thread, 8 and 16 slower
    #: (benchmarks/bench_predict_chgnet.py); one keeps memory flat for large cells.
    cpu_batch_size = 1
    #: Freeze trains the last two interactions and the readout: the last interaction holds only an atom convolution, so
    #: at depth 2 no bond or angle update trains. On the shipped GPAW set (lr 1e-2, 3 splits × N = 10 / 25 / 50) depth 3
    #: was never worse than E0-aligned zero-shot on held-out forces, depth 2 was worse in 2 of 9 runs (up to +17 %), and
    #: depth 3 averaged 0.104 vs 0.125 eV/Å at N = 10 (docs/finetuning.md, "Freeze depth").
    default_freeze_depth = 3
    #: Recompute the convolutions' activations in the backward pass instead of keeping them (inference only; the same
    #: numbers to float32 round-off; at 864 Cu atoms 1/5 of the memory at 2.4× the time, docs/performance.md "Scale"):
    #: None decides per pass by the memory estimate (:func:`atomtune.models.chunking.recompute_wanted`), True / False
    #: force it.
    recompute_activations: bool | None = None

    def __init__(self, model, checkpoint: str):
        super().__init__(checkpoint)
        self.model = model
        # Isolated atoms (no neighbour within 6 Å) are reported by featurize with the structure's name instead of
        # CHGNet's converter raising a bare ValueError.
        self.model.graph_converter.set_isolated_atom_response("ignore")

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str = "0.3.0", trust: bool = False) -> ChgnetPotential:
        """Load a released CHGNet checkpoint from the chgnet wheel (offline) onto CPU (wheel files need no ``trust``)."""
        cls._check_checkpoint(checkpoint)
        from chgnet.model import CHGNet

        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count on construction
            model = CHGNet.load(model_name=checkpoint, use_device="cpu", verbose=False)
        return cls(model, checkpoint)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """Whether the chgnet wheel holds this checkpoint's weights (looked up without importing chgnet)."""
        cls._check_checkpoint(checkpoint)
        spec = importlib.util.find_spec("chgnet")
        if spec is None or not spec.submodule_search_locations:
            return False
        pretrained = Path(next(iter(spec.submodule_search_locations))) / "pretrained" / checkpoint
        return any(pretrained.glob("*.pth.tar"))

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        """Chemical symbols a checkpoint embeds (H to Pu for every released CHGNet)."""
        cls._check_checkpoint(checkpoint)
        return CHECKPOINT_ELEMENTS

    @staticmethod
    def _check_checkpoint(checkpoint: str) -> None:
        if checkpoint not in CHECKPOINTS:
            raise ModelNotFoundError(
                f"unknown CHGNet checkpoint {checkpoint!r}; the chgnet wheel ships {', '.join(CHECKPOINTS)} "
                f"(`atomtune models` lists them as chgnet-<checkpoint>)."
            )

    # -- protocol --------------------------------------------------------------------------------------------------
    def featurize(self, atoms: Atoms):
        """CHGNet's ``CrystalGraph`` of one structure (atom graph within ``cutoff``, bond graph within 3 Å).

        Built from the pymatgen ``Structure``'s neighbour list exactly as ``CrystalGraphConverter`` builds it (same edges,
        same order; tested against it) but with array operations instead of CHGNet's per-edge Python loops, which made
        graph construction ~10 % of a CHGNet evaluation. Cacheable. The graph's fractional coordinates and lattice are
        kept in float64 (CHGNet stores float32) so a float64 model sees exact geometry; ``collate`` casts them.
        """
        from pymatgen.io.ase import AseAtomsAdaptor

        if atoms.cell.rank < 3:
            raise AtomtuneError(
                f"structure {_structure_name(atoms)} has no 3D cell; CHGNet is a crystal model: give molecules and "
                f"clusters a box (e.g. atoms.center(vacuum=10)) before evaluating them."
            )
        structure = AseAtomsAdaptor.get_structure(atoms)
        converter = self.model.graph_converter
        graph = _crystal_graph(structure, converter.atom_graph_cutoff, converter.bond_graph_cutoff)
        if graph is None:  # a neighbour list CHGNet's own converter must judge (it raises on asymmetric ones)
            graph = converter(structure)
            if graph.atom_graph.dim() == 1:  # no bond at all: CHGNet's converter returns a flat empty tensor
                graph.atom_graph = graph.atom_graph.reshape(0, 2)
            if graph.bond_graph.dim() == 1:
                graph.bond_graph = graph.bond_graph.reshape(0, 5)
            graph.atom_frac_coord = torch.tensor(structure.frac_coords, dtype=torch.float64)
            graph.lattice = torch.tensor(structure.lattice.matrix, dtype=torch.float64)
        isolated = len(atoms) - int(torch.unique(graph.atom_graph[:, 0]).numel())
        if isolated:
            warnings.warn(
                f"structure {_structure_name(atoms)}: {isolated} atom(s) have no neighbour within "
                f"{self.cutoff:g} Å; CHGNet gives them no interaction energy and zero force.",
                stacklevel=2,
            )
        return graph

    def collate(self, graphs: Sequence) -> ChgnetGraphBatch:
        """Concatenate CrystalGraphs into one :class:`ChgnetGraphBatch` on ``self.device`` in the model's dtype."""
        dtype = self._dtype
        n_atoms = [len(graph.atomic_number) for graph in graphs]
        n_directed = [len(graph.atom_graph) for graph in graphs]
        n_undirected = [len(graph.undirected2directed) for graph in graphs]
        atom_offset = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        directed_offset = np.concatenate([[0], np.cumsum(n_directed)[:-1]])
        undirected_offset = np.concatenate([[0], np.cumsum(n_undirected)[:-1]])
        index_offset = torch.as_tensor(np.stack([atom_offset, undirected_offset, directed_offset]), dtype=torch.long)

        bond_graphs, angle_bonds = [], []
        for k, graph in enumerate(graphs):
            atom, undirected, directed = index_offset[:, k]
            angles = graph.bond_graph.long()
            # CHGNet's bond_graph columns: atom, undirected bond 1, directed bond 1, undirected bond 2, directed bond 2
            bond_graphs.append(torch.stack([angles[:, 0] + atom, angles[:, 1] + undirected, angles[:, 3] + undirected], 1))
            angle_bonds.append(torch.stack([angles[:, 2] + directed, angles[:, 4] + directed], 1))

        def repeat(counts):
            return torch.repeat_interleave(torch.arange(len(graphs)), torch.as_tensor(counts, dtype=torch.long))

        batch = ChgnetGraphBatch(
            atomic_numbers=torch.cat([graph.atomic_number for graph in graphs]).long(),
            frac_coords=torch.cat([graph.atom_frac_coord for graph in graphs]).to(dtype),
            lattices=torch.stack([graph.lattice for graph in graphs]).to(dtype),
            atom_owner=repeat(n_atoms),
            atom_graph=torch.cat([graph.atom_graph.long() + index_offset[0, k] for k, graph in enumerate(graphs)]),
            neighbor_image=torch.cat([graph.neighbor_image for graph in graphs]).to(dtype),
            bond_owner=repeat(n_directed),
            directed2undirected=torch.cat(
                [graph.directed2undirected.long() + index_offset[1, k] for k, graph in enumerate(graphs)]
            ),
            undirected2directed=torch.cat(
                [graph.undirected2directed.long() + index_offset[2, k] for k, graph in enumerate(graphs)]
            ),
            bond_graph=torch.cat(bond_graphs),
            angle_directed_bonds=torch.cat(angle_bonds),
            n_atoms=torch.as_tensor(n_atoms, dtype=torch.long),
        )
        device = self.device
        if device.type != "cpu":
            batch = ChgnetGraphBatch(**{name: value.to(device) for name, value in vars(batch).items()})
        return batch

    @property
    def receptive_field(self) -> float:
        """Atom-graph cutoff × atom convolutions (Å): every layer (atom, bond and angle updates, all within the
        atom-graph cutoff of the atom they update) moves information by at most the atom-graph cutoff."""
        return self.cutoff * len(self.model.atom_conv_layers)

    def compute_atoms(
        self, data: ChgnetGraphBatch, weights: torch.Tensor | None = None, forces: bool = True
    ) -> dict[str, torch.Tensor]:
        """Site energies (readout of each atom plus its AtomRef energy, what :meth:`compute` sums) and the forces of
        their ``weights``-weighted sum. Only for the released ``mlp_first`` readout (a pooled readout has no per-atom
        decomposition)."""
        model = self.model
        if not model.mlp_first:
            raise NotImplementedError("a CHGNet with a pooled readout (mlp_first=False) gives no per-atom energies")
        positions, _, strained_positions, lattices = self._differentiable_geometry(data, forces, False)
        atom_features = self._atom_features(data, strained_positions, lattices)
        if model.readout_norm is not None:
            atom_features = model.readout_norm(atom_features)
        energies = model.mlp(atom_features).view(-1)
        if model.composition_model is not None:
            energies = energies + model.composition_model.fc.weight.view(-1)[data.atomic_numbers - 1].to(energies.dtype)
        return self.atom_energies_result(energies, positions, weights, forces)

    def run_trunk(self, data: ChgnetGraphBatch, forces: bool = True, stress: bool = True) -> TrunkPass:
        """:meth:`compute` up to the readout block: atom features after the last interaction (features are
        ``(data, atom_features)``), the AtomRef energy (outside the readout block), gradients with respect to positions
        and strain."""
        positions, strain, strained_positions, lattices = self._differentiable_geometry(data, forces, stress)
        atom_features = self._atom_features(data, strained_positions, lattices)
        dtype = atom_features.dtype
        if self.model.composition_model is not None:
            energy = self._reference_energy(data, dtype)
        else:
            energy = torch.zeros(data.num_structures, dtype=dtype, device=atom_features.device)
        volumes = torch.linalg.det(data.lattices).abs()

        def forces_and_stress(gradients):
            output = {}
            if forces:
                output["forces"] = -gradients[0]
            if stress:
                output["stress"] = gradients[-1] / volumes[:, None, None]
            return output

        inputs = tuple(tensor for tensor, wanted in ((positions, forces), (strain, stress)) if wanted)
        return TrunkPass(features=(data, atom_features), energy=energy, inputs=inputs,
                         forces_and_stress=forces_and_stress)

    def run_readout(self, trunk: TrunkPass, head: torch.nn.Module) -> torch.Tensor:
        """Energies ``(B,)`` of a readout block shaped as ``blocks()[-1]`` (``mlp``, ``pooling``, ``readout_norm``) on
        the trunk's atom features (the block's magmom head does not feed the energy)."""
        data, atom_features = trunk.features
        readout_norm = head["readout_norm"] if "readout_norm" in head else None  # noqa: SIM401 (a ModuleDict)
        return self._readout_energy(data, atom_features, head["mlp"], head["pooling"], readout_norm)

    def _differentiable_geometry(self, data: ChgnetGraphBatch, forces: bool, stress: bool):
        """Cartesian positions and a zero strain as autograd leaves (when wanted), and the strained positions and
        lattices the network reads (CHGNet's strain convention: lattice @ (1 + ε))."""
        positions = torch.einsum("ni,nij->nj", data.frac_coords, data.lattices[data.atom_owner])
        lattices = data.lattices
        if forces:
            positions.requires_grad_(True)
        strain = None
        if stress:
            strain = torch.zeros_like(lattices, requires_grad=True)
            deformation = torch.eye(3, dtype=lattices.dtype, device=lattices.device) + strain
            lattices = lattices @ deformation
            strained_positions = torch.einsum("ni,nij->nj", positions, deformation[data.atom_owner])
        else:
            strained_positions = positions
        return positions, strain, strained_positions, lattices

    def compute(self, data: ChgnetGraphBatch, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Total energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å and stress ``(B, 3, 3)`` eV/Å³ (ASE sign) of a batch."""
        # Forces are -dE/d(positions) and stress (1/V) dE/dε with CHGNet's strain convention lattice @ (1 + ε); both
        # gradients come from one backward pass. The double-backward graph is only kept while training.
        positions, strain, strained_positions, lattices = self._differentiable_geometry(data, forces, stress)
        atom_features = self._atom_features(data, strained_positions, lattices)
        energy = self._energy(data, atom_features)
        return self.energy_derivatives(energy, positions, strain, data.lattices, forces, stress)

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """Named blocks from the composition reference and embeddings to the readout (magmom head included there)."""
        model = self.model
        blocks: list[tuple[str, torch.nn.Module]] = []
        if model.composition_model is not None:
            # Per-element reference energies (a fixed linear fit in CHGNet, requires_grad=False): input side, so
            # freezing by depth never reaches it before the embeddings.
            blocks.append(("atom_reference", model.composition_model))
        blocks.append(
            (
                "embedding",
                torch.nn.ModuleDict(
                    {
                        "atom_embedding": model.atom_embedding,
                        "bond_basis_expansion": model.bond_basis_expansion,
                        "bond_embedding": model.bond_embedding,
                        "bond_weights_ag": model.bond_weights_ag,
                        "bond_weights_bg": model.bond_weights_bg,
                        "angle_basis_expansion": model.angle_basis_expansion,
                        "angle_embedding": model.angle_embedding,
                    }
                ),
            )
        )
        for index, atom_conv in enumerate(model.atom_conv_layers):
            layer = torch.nn.ModuleDict({"atom_conv": atom_conv})
            if index < model.n_conv - 1:
                for name, layers in (("bond_conv", model.bond_conv_layers), ("angle_update", model.angle_layers)):
                    if layers[index] is not None:
                        layer[name] = layers[index]
            blocks.append((f"interaction_{index}", layer))
        readout = torch.nn.ModuleDict({"mlp": model.mlp, "pooling": model.pooling})
        if model.readout_norm is not None:
            readout["readout_norm"] = model.readout_norm
        # The magmom head reads the features before the last interaction but never feeds the energy; it is grouped
        # with the readout so that every parameter has a block without adding a block that energy training cannot move.
        readout["magmom_head"] = model.site_wise
        blocks.append(("readout", readout))
        return blocks

    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset(chemical_symbols[1 : 1 + self.model.atom_embedding.embedding.num_embeddings])

    @property
    def cutoff(self) -> float:
        """Atom-graph cutoff in Å (the bond graph, for angles, uses ``bond_graph_cutoff`` = 3 Å)."""
        return float(self.model.graph_converter.atom_graph_cutoff)

    @property
    def bond_graph_cutoff(self) -> float:
        """Bond length in Å below which a bond takes part in CHGNet's angle (bond-graph) messages."""
        return float(self.model.graph_converter.bond_graph_cutoff)

    def atom_features(self, data: ChgnetGraphBatch) -> torch.Tensor:
        """Per-atom features ``(N, 64)`` after the last interaction layer, before the readout norm and MLP."""
        positions = torch.einsum("ni,nij->nj", data.frac_coords, data.lattices[data.atom_owner])
        return self._atom_features(data, positions, data.lattices)

    def save_weights(self, directory: Path) -> dict:
        """Write ``chgnet.pth.tar`` in CHGNet's own format, with the element energy shift folded into ``AtomRef``.

        ``CHGNet.from_file(directory / "chgnet.pth.tar")`` therefore reproduces atomtune's energies natively. The
        unshifted reference energies go into the metadata so :meth:`load_weights` restores the weights bit for bit.
        """
        state = {key: value.detach().cpu() for key, value in self.model.state_dict().items()}
        metadata: dict = {"file": WEIGHTS_FILE, "model_args": _json_model_args(self.model.model_args)}
        key = "composition_model.fc.weight"
        if key in state:
            reference = state[key]
            metadata["atom_reference_energy"] = reference.double().flatten().tolist()  # eV/atom, Z = 1, 2, ...
            shift = self.element_energy_shift.detach().cpu()[1 : 1 + reference.shape[1]]
            state[key] = (reference.double() + shift.double()).to(reference.dtype)
        torch.save({"model": {"state_dict": state, "model_args": self.model.model_args}}, directory / WEIGHTS_FILE)
        return metadata

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> ChgnetPotential:
        """Rebuild the potential saved by :meth:`save_weights` (CHGNet model, source checkpoint name).

        Read with ``weights_only=True`` (CHGNet's own ``from_file`` unpickles anything), then built by ``from_dict``.
        """
        from chgnet.model import CHGNet

        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        path = Path(directory) / weights.get("file", WEIGHTS_FILE)
        if not path.exists():
            raise ModelNotFoundError(f"{path}: CHGNet weights file missing from the saved model directory.")
        saved = load_tensors(path, "CHGNet weights file", own_file=True)
        if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict) or "state_dict" not in saved["model"]:
            raise ModelNotFoundError(f"{path}: not a CHGNet weights file (no model state dict); write the model again.")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model = CHGNet.from_dict(saved["model"])
        except (TypeError, KeyError, RuntimeError) as error:
            raise ModelNotFoundError(
                f"{path}: the CHGNet weights do not fit a CHGNet model ({type(error).__name__}: {str(error)[:200]})."
            ) from None
        state = saved["model"]["state_dict"]
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in state.values()):
            # from_dict builds in float32 and rounds a float64 fine-tune's weights: reload them exactly.
            model = model.double()
            model.load_state_dict(state)
        reference = weights.get("atom_reference_energy")
        if reference is not None and model.composition_model is not None:
            weight = model.composition_model.fc.weight
            weight.data.copy_(torch.tensor(reference, dtype=torch.float64).reshape(weight.shape))
        model.eval()
        return cls(model, metadata.get("checkpoint", model.version or "custom"))

    def backbone_version(self) -> str:
        return importlib.metadata.version("chgnet")

    # -- CHGNet's forward, batched -----------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return self.model.atom_embedding.embedding.weight.dtype

    def _atom_features(self, data: ChgnetGraphBatch, positions: torch.Tensor, lattices: torch.Tensor) -> torch.Tensor:
        """CHGNet's embeddings and interaction layers (as in ``CHGNet._compute``) → atom features after the last one."""
        model = self.model
        center, neighbor = data.atom_graph[:, 0], data.atom_graph[:, 1]
        image_shift = torch.einsum("ei,eij->ej", data.neighbor_image, lattices[data.bond_owner])
        bond_vectors = positions[center] - (positions[neighbor] + image_shift)  # CHGNet's sign: center − neighbor
        bond_lengths = torch.linalg.vector_norm(bond_vectors, dim=1)
        bond_vectors = bond_vectors / bond_lengths[:, None]
        undirected_lengths = bond_lengths[data.undirected2directed]
        bond_bases_ag = model.bond_basis_expansion.rbf_expansion_ag(undirected_lengths)
        bond_bases_bg = model.bond_basis_expansion.rbf_expansion_bg(undirected_lengths)
        has_angles = len(data.bond_graph) > 0

        atom_feas = model.atom_embedding(data.atomic_numbers - 1)  # row 0 is H
        bond_feas = model.bond_embedding(bond_bases_ag)
        bond_weights_ag = model.bond_weights_ag(bond_bases_ag)
        bond_weights_bg = model.bond_weights_bg(bond_bases_bg)
        if has_angles:
            angle_bases = model.angle_basis_expansion(
                bond_vectors[data.angle_directed_bonds[:, 0]], bond_vectors[data.angle_directed_bonds[:, 1]]
            )
            angle_feas = model.angle_embedding(angle_bases)
        # a cell too large for keeping every layer's edge and angle activations recomputes them, a slice of rows at a
        # time, in the backward pass (atomtune.models.chunking.recompute_wanted; the same numbers to round-off)
        recompute = chunking.recompute_wanted(self, len(data.atom_graph))

        for atom_layer, bond_layer, angle_layer in zip(
            model.atom_conv_layers[:-1], model.bond_conv_layers, model.angle_layers, strict=False
        ):
            atom_feas = chunking.run_block(
                _atom_conv, atom_layer, atom_feas, bond_feas, bond_weights_ag, data, recompute, recompute=recompute
            )
            if has_angles and bond_layer is not None:
                bond_feas = chunking.run_block(
                    _bond_conv, bond_layer, atom_feas, bond_feas, angle_feas, bond_weights_bg, data, recompute,
                    recompute=recompute,
                )
                if angle_layer is not None:
                    angle_feas = chunking.run_block(
                        _angle_update, angle_layer, atom_feas, bond_feas, angle_feas, data, recompute,
                        recompute=recompute,
                    )
        return chunking.run_block(
            _atom_conv, model.atom_conv_layers[-1], atom_feas, bond_feas, bond_weights_ag, data, recompute,
            recompute=recompute,
        )

    def _energy(self, data: ChgnetGraphBatch, atom_features: torch.Tensor) -> torch.Tensor:
        """Total energy per structure (eV): readout of the atom features plus the AtomRef composition energy."""
        model = self.model
        energy = self._readout_energy(data, atom_features, model.mlp, model.pooling, model.readout_norm)
        if model.composition_model is not None:
            energy = energy + self._reference_energy(data, energy.dtype)
        return energy

    def _readout_energy(self, data: ChgnetGraphBatch, atom_features, mlp, pooling, readout_norm) -> torch.Tensor:
        """Energy per structure (eV) of CHGNet's readout (``readout_norm``, ``mlp``, ``pooling``) on atom features."""
        model = self.model
        if readout_norm is not None:
            atom_features = readout_norm(atom_features)
        n_structures = data.num_structures
        if model.mlp_first:  # the released checkpoints: an energy per site, summed
            site_energy = mlp(atom_features).view(-1)
            return site_energy.new_zeros(n_structures).index_add(0, data.atom_owner, site_energy)
        # pooled crystal feature → energy per atom (intensive) or per structure
        energy = mlp(pooling(atom_features, data.atom_owner)).view(-1)
        if model.is_intensive:
            energy = energy * data.n_atoms.to(energy.dtype)
        return energy

    def _reference_energy(self, data: ChgnetGraphBatch, dtype: torch.dtype) -> torch.Tensor:
        """The AtomRef composition energy per structure (eV)."""
        # AtomRef is linear in the composition: its total is the sum of per-element references over the atoms
        # (CHGNet averages them per atom and its calculator multiplies back by the atom count).
        reference = self.model.composition_model.fc.weight.view(-1)[data.atomic_numbers - 1].to(dtype)
        return torch.zeros(data.num_structures, dtype=dtype, device=reference.device).index_add(
            0, data.atom_owner, reference
        )


# -- CHGNet's convolutions with the first layer of each gated MLP split by input block ----------------------------------
# CHGNet's AtomConv / BondConv / AngleUpdate gather per-atom and per-bond features onto every edge or angle, concatenate
# them and apply a gated MLP whose first layer is one Linear on the concatenation. That Linear is a sum of one Linear per
# input block, so each block is projected where it lives (N atoms, U bonds) and the projections are gathered onto the
# E edges / A angles (E ≈ 50 N and A ≈ 130 N for fcc metals): the same function with ~4× fewer multiply-adds in the
# first layer, forward and in both backward passes of force training. Core and gate share one matrix product. The
# layers' own weights are used (LoRA parametrizations included), so saving and native loading are unaffected; anything
# the split does not cover (dropout during training) falls back to CHGNet's own module.


def _first_linear(mlp) -> tuple[torch.nn.Linear | None, list[torch.nn.Module]]:
    """An MLP's first Linear and the modules after it, or ``(None, [])`` when the split cannot stand in for the MLP:
    an active dropout anywhere in it, or a module other than a dropout before its first Linear."""
    layers = list(mlp.layers)
    dropouts = [layer for layer in layers if isinstance(layer, torch.nn.Dropout)]
    if any(layer.p > 0 and layer.training for layer in dropouts):
        return None, []
    for position, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            return layer, layers[position + 1 :]
        if not isinstance(layer, torch.nn.Dropout):
            return None, []
    return None, []


def _gated_mlp(gated, parts: list[tuple[torch.Tensor, torch.Tensor | None]]):
    """CHGNet's ``GatedMLP`` applied to ``cat([features[index] for features, index in parts], 1)`` without building it,
    as ``(output_rows, projections)``: ``output_rows(rows, *projections)`` is the output of ``rows`` (a slice;
    ``slice(None)`` for all).

    ``index`` None means the features are already one row per output row. The first layer's projections of per-node
    features (``index`` given) are computed once here, so that evaluating the rows in slices repeats none of them; they
    are passed explicitly rather than read from the closure so that a checkpoint around the whole convolution can drop
    them after its forward pass and recompute them.
    """
    core_first, core_rest = _first_linear(gated.mlp_core)
    gate_first, gate_rest = _first_linear(gated.mlp_gate)
    if core_first is None or gate_first is None:

        def unsplit(rows: slice) -> torch.Tensor:
            return gated(torch.cat([f[rows] if i is None else f.index_select(0, i[rows]) for f, i in parts], dim=1))

        return unsplit, []
    weight = torch.cat([core_first.weight, gate_first.weight], dim=0)
    plan, projections, start = [], [], 0
    for features, index in parts:
        width = features.shape[1]
        block = weight[:, start : start + width].T
        start += width
        if index is None:
            plan.append((features, block, None))
        else:
            plan.append((None, None, index))
            projections.append(features @ block)
    firsts = (core_first, gate_first)
    bias = None
    if any(layer.bias is not None for layer in firsts):  # a side without bias adds zeros
        bias = torch.cat([layer.bias if layer.bias is not None else weight.new_zeros(layer.out_features) for layer in firsts])

    def output_rows(rows: slice, *projections: torch.Tensor) -> torch.Tensor:
        projected_nodes = iter(projections)
        hidden = None
        for features, block, index in plan:
            if index is None:
                projected = features[rows] @ block
            else:
                projected = next(projected_nodes).index_select(0, index[rows])
            hidden = projected if hidden is None else hidden + projected
        if bias is not None:
            hidden = hidden + bias
        core, gate = hidden.split([core_first.out_features, gate_first.out_features], dim=1)
        for module in core_rest:
            core = module(core)
        for module in gate_rest:
            gate = module(gate)
        if gated.norm is not None:
            core, gate = gated.bn1(core), gated.bn2(gate)
        return gated.activation(core) * gated.sigmoid(gate)

    return output_rows, projections


def _sum_into(rows: torch.Tensor, owners: torch.Tensor, count: int) -> torch.Tensor:
    """CHGNet's ``aggregate(..., average=False)``: the sum of ``rows`` per owner, ``count`` owners."""
    return rows.new_zeros(count, rows.shape[1]).index_add(0, owners, rows)


# With ``recompute`` (atomtune.models.chunking.recompute_wanted) each convolution runs over its edge or angle rows in
# slices whose activations are recomputed in the backward pass: only one slice's activations (A × 128 per update: A ≈
# 130 N angles for fcc metals) exist at a time. Without, one slice of all rows: the same operations as before. Each slice
# first hands freed heap pages back to the system (release_memory): the angle slices and bond-sized sums outlive the
# slices around them, and glibc otherwise kept the pages between them resident (past 13 GiB at 10,976 Cu atoms).


def _atom_conv(layer, atom_feas, bond_feas, bond_weights, data: ChgnetGraphBatch, recompute: bool = False):
    """``chgnet.model.layers.AtomConv.forward`` with the split first layer (same arguments, same result)."""
    center, neighbor = data.atom_graph[:, 0], data.atom_graph[:, 1]
    undirected = data.directed2undirected
    # CHGNet's order of the concatenation: center atom, bond, neighbour atom.
    messages, projections = _gated_mlp(
        layer.twoBody_atom, [(atom_feas, center), (bond_feas, undirected), (atom_feas, neighbor)]
    )

    def summed(rows: slice, *projections) -> torch.Tensor:
        weighted = messages(rows, *projections) * bond_weights.index_select(0, undirected[rows])
        return _sum_into(weighted, center[rows], len(atom_feas))

    update = chunking.over_row_slices(summed, projections, len(center), ROWS_PER_SLICE, "sum", recompute, release_memory=True)
    return _layer_output(layer, update, atom_feas, layer.atom_norm)


def _bond_conv(layer, atom_feas, bond_feas, angle_feas, bond_weights, data: ChgnetGraphBatch, recompute: bool = False):
    """``chgnet.model.layers.BondConv.forward`` with the split first layer."""
    graph = data.bond_graph  # angle rows: center atom, undirected bond i, undirected bond j
    parts = [(bond_feas, graph[:, 1]), (bond_feas, graph[:, 2]), (angle_feas, None), (atom_feas, graph[:, 0])]
    updates, projections = _gated_mlp(layer.twoBody_bond, parts)

    def summed(rows: slice, *projections) -> torch.Tensor:
        first, second = graph[rows, 1], graph[rows, 2]
        update = updates(rows, *projections) * bond_weights.index_select(0, first) * bond_weights.index_select(0, second)
        return _sum_into(update, first, len(bond_feas))

    update = chunking.over_row_slices(summed, projections, len(graph), ROWS_PER_SLICE, "sum", recompute, release_memory=True)
    return _layer_output(layer, update, bond_feas, layer.bond_norm)


def _angle_update(layer, atom_feas, bond_feas, angle_feas, data: ChgnetGraphBatch, recompute: bool = False):
    """``chgnet.model.layers.AngleUpdate.forward`` with the split first layer."""
    graph = data.bond_graph
    parts = [(bond_feas, graph[:, 1]), (bond_feas, graph[:, 2]), (angle_feas, None), (atom_feas, graph[:, 0])]
    updates, projections = _gated_mlp(layer.twoBody_bond, parts)

    def updated(rows: slice, *projections) -> torch.Tensor:  # every row on its own (the norm too, in eval mode)
        return _layer_output(layer, updates(rows, *projections), angle_feas[rows], layer.angle_norm)

    return chunking.over_row_slices(updated, projections, len(graph), ROWS_PER_SLICE, "cat", recompute, release_memory=True)


def _layer_output(layer, update: torch.Tensor, features: torch.Tensor, norm) -> torch.Tensor:
    """The common tail of CHGNet's three layers: output MLP (AtomConv and BondConv only), residual, normalisation."""
    if getattr(layer, "use_mlp_out", False):
        update = layer.mlp_out(update)
    if layer.resnet:
        update = update + features
    if norm is not None:
        update = norm(update)
    return update


def _crystal_graph(structure, atom_graph_cutoff: float, bond_graph_cutoff: float):
    """CHGNet's ``CrystalGraph`` of a pymatgen ``Structure``, identical to ``CrystalGraphConverter``'s, from arrays.

    CHGNet's converter pairs each directed bond (i → j, image n) with its reverse (j → i, image −n) into one undirected
    bond, numbered in order of first appearance, and forms an angle between every directed bond shorter than
    ``bond_graph_cutoff`` and each other short bond leaving the same atom (bonds grouped by neighbour in order of first
    appearance). Returns ``None`` when a bond has no reverse, leaving that case to CHGNet's converter.
    """
    from chgnet.graph import CrystalGraph

    n_atoms = len(structure)
    center, neighbor, image, distance = structure.get_neighbor_list(
        r=atom_graph_cutoff, sites=structure.sites, numerical_tol=1e-8
    )
    image = np.asarray(image, dtype=np.int64)
    n_directed = len(center)
    edge = np.arange(n_directed)

    forward = np.column_stack([center, neighbor, image])
    reverse = np.column_stack([neighbor, center, -image])
    forward_order = np.lexsort(forward.T[::-1])
    reverse_order = np.lexsort(reverse.T[::-1])
    sorted_forward = forward[forward_order]
    if not np.array_equal(sorted_forward, reverse[reverse_order]) or (
        n_directed > 1 and (np.diff(sorted_forward, axis=0) == 0).all(axis=1).any()
    ):
        return None
    partner = np.empty(n_directed, dtype=np.int64)
    partner[reverse_order] = forward_order
    is_first = edge < partner
    undirected_of = np.cumsum(is_first) - 1
    directed2undirected = undirected_of[np.minimum(edge, partner)]
    undirected2directed = edge[is_first]

    # Each atom's outgoing short bonds in CHGNet's order: grouped by neighbour (first appearance), then by bond index.
    _, first_of_pair, pair = np.unique(center * n_atoms + neighbor, return_index=True, return_inverse=True)
    node_order = np.lexsort((edge, first_of_pair[pair.reshape(-1)], center))
    node_order = node_order[distance[node_order] < bond_graph_cutoff]
    short_per_atom = np.bincount(center[node_order], minlength=n_atoms)
    start = np.cumsum(short_per_atom) - short_per_atom
    # Angles are anchored on each short undirected bond (its first directed bond, then the reverse one).
    anchored = undirected2directed[distance[undirected2directed] <= bond_graph_cutoff]
    anchor = np.column_stack([anchored, partner[anchored]]).reshape(-1)
    repeats = short_per_atom[center[anchor]]
    anchor = np.repeat(anchor, repeats)
    within = np.arange(len(anchor)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    other = node_order[start[center[anchor]] + within]
    keep = other != anchor
    anchor, other = anchor[keep], other[keep]
    bond_graph = np.column_stack(
        [center[anchor], directed2undirected[anchor], anchor, directed2undirected[other], other]
    ).reshape(-1, 5)

    return CrystalGraph(
        atomic_number=torch.tensor(structure.atomic_numbers, dtype=torch.int32),
        atom_frac_coord=torch.tensor(structure.frac_coords, dtype=torch.float64),
        atom_graph=torch.tensor(np.column_stack([center, neighbor]).reshape(-1, 2), dtype=torch.int32),
        neighbor_image=torch.tensor(image, dtype=torch.float32).reshape(-1, 3),
        directed2undirected=torch.tensor(directed2undirected, dtype=torch.int32),
        undirected2directed=torch.tensor(undirected2directed, dtype=torch.int32),
        bond_graph=torch.tensor(bond_graph, dtype=torch.int32),
        lattice=torch.tensor(structure.lattice.matrix, dtype=torch.float64),
        composition=structure.composition.formula,
        atom_graph_cutoff=atom_graph_cutoff,
        bond_graph_cutoff=bond_graph_cutoff,
    )


def _structure_name(atoms: Atoms) -> str:
    return str(atoms.info.get("id", atoms.get_chemical_formula()))


def _json_model_args(model_args: dict) -> dict:
    """CHGNet's constructor arguments, readable in atomtune.json (modules stand in by their class name)."""
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None), list, tuple)) else type(value).__name__
        for key, value in model_args.items()
    }
