"""SevenNet backbone (SevenNet-0 11Jul2024, SevenNet-l3i5) behind the Potential protocol.

Sits in ``models/``: the registry resolves ``sevennet-0`` / ``sevennet-l3i5`` (weights ship inside the sevenn wheel)
into a :class:`SevennetPotential` (``SevennetPotential.from_checkpoint`` also takes a SevenNet ``.pth`` file);
fine-tuning strategies, batched ``predict`` and the ASE calculator all go through :meth:`SevennetPotential.compute`.

SevenNet's model (``sevenn.nn.sequential.AtomGraphSequential``) is a sequence of named modules::

    edge_embedding, onehot_idx_to_onehot, onehot_to_feature_x            -> block "embedding"
    {i}_self_connection_intro … {i}_equivariant_gate  (i = 0 … L-1)      -> block "interaction_{i}"
    reduce_input_to_hidden, reduce_hidden_to_energy,
    rescale_atomic_energy, reduce_total_enegy, force_output              -> block "readout"

It reads edge vectors precomputed by its graph builder (matscipy/ASE neighbour list) and gets forces and the virial from
the gradient of the energy with respect to those edge vectors. We run the same modules but take that gradient ourselves
(skipping sevenn's ``force_output``) so that stress is computed only when asked and ``create_graph`` follows
``self.training``. SevenNet's native stress is ``-virial/V`` in eV/Å³ ordered ``[xx, yy, zz, xy, yz, zx]`` and its ASE
calculator flips the sign and reorders to ASE's Voigt order; here we return ``+virial/V`` as a 3×3 tensor, which is the
same ASE-sign stress.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.data.dataset import cell_problem
from atomtune.exceptions import AtomtuneError, ModelNotFoundError, UnsupportedElementsError
from atomtune.models import chunking
from atomtune.models.base import Potential, TrunkPass

#: Single-fidelity checkpoint names whose weights ship inside the sevenn wheel (offline).
SHIPPED_CHECKPOINTS = ("7net-0", "7net-l3i5")
#: sevenn's own path constant for each pretrained name atomtune registers: the file is in the wheel (7net-0, 7net-l3i5,
#: 7net-mf-0) or, once sevenn has downloaded it, at the same relative path under ~/.cache/sevennet — the two places
#: ``sevenn.util.pretrained_name_to_path`` looks before downloading.
PRETRAINED_FILES = {
    "7net-0": "SEVENNET_0_11Jul2024", "7net-l3i5": "SEVENNET_l3i5", "7net-mf-0": "SEVENNET_MF_0",
    "7net-mf-ompa": "SEVENNET_MF_ompa", "7net-omat": "SEVENNET_omat", "7net-omni": "SEVENNET_omni",
}
NATIVE_CHECKPOINT_FILE = "checkpoint_sevennet.pth"
#: Edges per slice when a convolution's activations are recomputed (~25 kB of activations per edge in SevenNet-0's
#: convolutions, float32: ~200 MB per slice).
EDGES_PER_SLICE = 8_192
#: SevenNet clamps the cell volume of non-periodic structures (volume 0) to this value, in Å³, before dividing the
#: virial; so do we.
MINIMUM_VOLUME = 1e-3


class SevennetPotential(Potential):
    """SevenNet behind the batched Potential protocol.

    Per-element shift and scale: SevenNet rescales each atom's energy as ``scale[Z] * e + shift[Z]`` in its module
    ``rescale_atomic_energy`` (a ``SpeciesWiseRescale``), which lives in the **"readout"** block. In the pretrained
    checkpoints its ``shift``/``scale`` are ``nn.Parameter`` s with ``requires_grad=False``; a strategy that switches on
    gradients for every parameter of the readout block would make them trainable too. Use
    :meth:`set_native_element_shift` to move E0 offsets into that shift, so a model saved here and loaded by sevenn's
    own ``SevenNetCalculator`` carries them (the base class's ``element_energy_shift`` is atomtune-only).
    """

    backbone = "sevennet"
    # benchmarks/bench_predict_sevennet.py, 1 CPU thread, 8–32-atom cells, per CPU-second: batch 2 ≈ 1.05–1.1× batch 1,
    # batch 3–4 no better (larger per-edge tensors fall out of cache); sevenn's own batched path was slower than 1-by-1.
    cpu_batch_size = 2
    gpu_batch_size = 32
    #: Recompute the convolutions' activations in the backward pass instead of keeping them (inference only; the same
    #: numbers to float32 round-off; at 864 Cu atoms 1/6 of the memory at 1.1–1.4× the time, docs/performance.md
    #: "Scale"): None decides per pass by the memory estimate (:func:`atomtune.models.chunking.recompute_wanted`),
    #: True / False force it.
    recompute_activations: bool | None = None

    def __init__(self, checkpoint: str, model: torch.nn.Module, config: dict, fast_convolution: bool = True):
        super().__init__(checkpoint)
        self.model = model
        self.config = config
        #: Evaluate SevenNet's convolutions with :class:`EdgeTensorProductConvolution` (same numbers, ~3× faster on
        #: CPU); False runs sevenn's own e3nn modules.
        self.fast_convolution = fast_convolution
        self._convolution_plans: dict[str, tuple[torch.nn.Module, EdgeTensorProductConvolution | None]] = {}
        # Per-element offsets (eV/atom) added to SevenNet's own shift, and the shift they are relative to (by type
        # index).
        self.native_element_shift: dict[str, float] = {}
        rescale = model._modules.get("rescale_atomic_energy")
        self._reference_native_shift = (
            rescale.shift.detach().to("cpu", torch.float64).clone() if _is_species_wise(rescale) else None
        )

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str = "7net-0", trust: bool = False) -> SevennetPotential:
        """A pretrained SevenNet (``"7net-0"``, ``"7net-l3i5"``, any name sevenn knows) or a ``.pth`` checkpoint.

        The file is read with ``weights_only=True`` (plus numpy arrays); one that holds other Python objects loads
        only with ``trust``.
        """
        try:
            native = _native_checkpoint(checkpoint, trust)
        except (ValueError, FileNotFoundError) as error:
            raise ModelNotFoundError(
                f"SevenNet checkpoint {checkpoint!r} not found: give a pretrained name "
                f"({', '.join(SHIPPED_CHECKPOINTS)}) or the path to a SevenNet .pth checkpoint. ({error})"
            ) from None
        model = _build_model(native)
        return cls._from_native(checkpoint, model, native.config)

    @classmethod
    def _from_native(cls, checkpoint: str, model: torch.nn.Module, config: dict) -> SevennetPotential:
        import sevenn._keys as KEY

        if getattr(model, "modal_map", None):
            raise AtomtuneError(
                f"SevenNet checkpoint {checkpoint!r} is multi-fidelity (modalities {list(model.modal_map)}); atomtune "
                f"supports single-fidelity SevenNet checkpoints (7net-0, 7net-l3i5)."
            )
        if model.key_grad != KEY.EDGE_VEC:
            raise AtomtuneError(
                f"SevenNet checkpoint {checkpoint!r} differentiates with respect to {model.key_grad!r}, not edge "
                f"vectors; only edge-vector models (7net-0, 7net-l3i5) are supported."
            )
        model.set_is_batch_data(True)
        return cls(checkpoint, model, config)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """True for an existing checkpoint file or a pretrained name whose weights are on disk (never downloads)."""
        return _local_checkpoint_path(checkpoint) is not None

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        """Chemical symbols a checkpoint covers (reads its config once per process)."""
        path = _local_checkpoint_path(checkpoint)
        if path is None:
            raise ModelNotFoundError(f"SevenNet checkpoint {checkpoint!r} is not on disk.")
        return _elements_of_checkpoint_file(path)

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset(chemical_symbols[z] for z in self.model.type_map)

    @property
    def cutoff(self) -> float:
        return float(self.config["cutoff"])

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def featurize(self, atoms: Atoms):
        """SevenNet's ``AtomGraphData`` for one structure from its own graph builder, in the model's float dtype."""
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        unknown = set(atoms.numbers.tolist()) - set(self.model.type_map)
        if unknown:
            raise UnsupportedElementsError({chemical_symbols[z] for z in unknown}, self.name, atoms.info.get("id", ""))
        problem = cell_problem(atoms)  # the graph builder inverts the cell: a LinAlgError otherwise
        if problem:
            name = atoms.info.get("id", atoms.get_chemical_formula())
            raise AtomtuneError(f"{self.name}: structure {name} ({atoms.get_chemical_formula()}): {problem}")
        arrays = unlabeled_atoms_to_graph(atoms, self.cutoff)
        # sevenn's AtomGraphData.from_numpy_dict always casts to float32; cast to the model's dtype instead so a float64
        # potential sees float64 edge vectors (float32 gives the same numbers as sevenn's calculator).
        dtype = self.dtype
        graph = {}
        for key, value in arrays.items():
            if isinstance(value, np.ndarray):
                tensor = torch.from_numpy(np.ascontiguousarray(value))
                graph[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor.to(torch.long)
            else:
                graph[key] = value
        return AtomGraphData(**graph)

    def collate(self, graphs: Sequence):
        """A torch_geometric ``Batch`` of graphs (as sevenn's DataLoader builds), on ``self.device`` and model dtype."""
        import sevenn._keys as KEY
        from torch_geometric.data import Batch

        batch = Batch.from_data_list(list(graphs))
        dtype = self.dtype
        for key in (KEY.POS, KEY.EDGE_VEC, KEY.CELL_VOLUME):
            if batch[key].dtype != dtype:
                batch[key] = batch[key].to(dtype)
        device = self.device
        if device.type != "cpu":
            batch = batch.to(device)
        return batch

    def compute(self, data, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) for a collated batch."""
        import sevenn._keys as KEY

        data = copy.copy(data)  # shallow: the modules write their outputs into it; a cached batch stays as it was
        edge_vector = data[KEY.EDGE_VEC]
        if forces or stress:
            edge_vector = edge_vector.detach().requires_grad_(True)
            data[KEY.EDGE_VEC] = edge_vector
        data = self._run_modules(data, until=None)
        energy = data[KEY.PRED_TOTAL_ENERGY]
        output = {"energy": energy}
        if not (forces or stress):
            return output

        (edge_gradient,) = torch.autograd.grad(energy.sum(), [edge_vector], create_graph=self.training)
        output.update(_forces_and_stress(data, edge_vector, edge_gradient, energy.shape[0], forces, stress))
        return output

    @property
    def receptive_field(self) -> float:
        """Cutoff × convolution layers (Å): how far an atom's energy reaches."""
        from sevenn.nn.convolution import IrrepsConvolution

        layers = sum(isinstance(module, IrrepsConvolution) for module in self.model._modules.values())
        return self.cutoff * (layers or int(self.config.get("num_convolution_layer", 0)))

    def compute_atoms(self, data, weights: torch.Tensor | None = None, forces: bool = True) -> dict[str, torch.Tensor]:
        """The per-atom energies sevenn's total-energy reduction sums (after its scale / shift) and the forces of their
        ``weights``-weighted sum, from the gradient with respect to the edge vectors."""
        import sevenn._keys as KEY

        data = copy.copy(data)
        edge_vector = data[KEY.EDGE_VEC]
        if forces:
            edge_vector = edge_vector.detach().requires_grad_(True)
            data[KEY.EDGE_VEC] = edge_vector
        data = self._run_modules(data, until=None)
        energies = data[self._atomic_energy_key()].reshape(-1)
        result = {"energies": energies}
        if forces:
            weighted = energies if weights is None else energies * weights.to(energies.dtype)
            (edge_gradient,) = torch.autograd.grad(weighted.sum(), [edge_vector], create_graph=self.training)
            n_structures = int(data[KEY.CELL_VOLUME].shape[0])
            result["forces"] = _forces_and_stress(data, edge_vector, edge_gradient, n_structures, True, False)["forces"]
        return result

    def _atomic_energy_key(self) -> str:
        """The per-atom key the model's total-energy reduction reads."""
        import sevenn._keys as KEY

        for module in self.model._modules.values():
            if getattr(module, "key_output", None) == KEY.PRED_TOTAL_ENERGY and hasattr(module, "key_input"):
                return module.key_input
        return KEY.ATOMIC_ENERGY

    def run_trunk(self, data, forces: bool = True, stress: bool = True) -> TrunkPass | None:
        """:meth:`compute` up to the readout block: the embedding and interaction modules once, on a shallow copy of
        the batch (the features: the batch as the readout's first module reads it); gradients with respect to the
        edge vectors. None for a model whose readout modules are not the tail of its module sequence."""
        import sevenn._keys as KEY

        last_trunk_module = self._last_trunk_module()
        if last_trunk_module is None:
            return None
        data = copy.copy(data)
        edge_vector = data[KEY.EDGE_VEC]
        if forces or stress:
            edge_vector = edge_vector.detach().requires_grad_(True)
            data[KEY.EDGE_VEC] = edge_vector
        data = self._run_modules(data, until=last_trunk_module)
        n_structures = int(data[KEY.CELL_VOLUME].shape[0])
        energy = torch.zeros(n_structures, dtype=self.dtype, device=edge_vector.device)

        def forces_and_stress(gradients):
            return _forces_and_stress(data, edge_vector, gradients[0], n_structures, forces, stress)

        inputs = (edge_vector,) if forces or stress else ()
        return TrunkPass(features=data, energy=energy, inputs=inputs, forces_and_stress=forces_and_stress)

    def run_readout(self, trunk: TrunkPass, head: torch.nn.Module) -> torch.Tensor:
        """Energies ``(B,)``: the modules of a readout block shaped as ``blocks()[-1]`` (its ModuleDict, in order;
        sevenn's force module skipped) on a shallow copy of the trunk's batch."""
        import sevenn._keys as KEY
        from sevenn.nn.force_output import ForceOutput, ForceStressOutput, ForceStressOutputFromEdge

        data = copy.copy(trunk.features)
        for module in head.values():
            if not isinstance(module, (ForceOutput, ForceStressOutput, ForceStressOutputFromEdge)):
                data = module(data)
        return data[KEY.PRED_TOTAL_ENERGY]

    def _last_trunk_module(self) -> str | None:
        """Name of the module after which the readout block starts, if the readout is the tail of the sequence."""
        names = list(self.model._modules)
        readout = set(self.blocks()[-1][1].keys())
        tail = names[len(names) - len(readout) :]
        if not readout or set(tail) != readout or len(names) == len(readout):
            return None
        return names[len(names) - len(readout) - 1]

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding``, ``interaction_0`` … ``interaction_{L-1}``, ``readout`` (holds ``rescale_atomic_energy``)."""
        groups: dict[str, dict[str, torch.nn.Module]] = {"embedding": {}}
        seen_interaction = False
        for name, module in self.model._modules.items():
            layer = _interaction_layer(name)
            if layer is not None:
                seen_interaction = True
                groups.setdefault(f"interaction_{layer}", {})[name] = module
            elif not seen_interaction:
                groups["embedding"][name] = module
            else:
                groups.setdefault("readout", {})[name] = module
        # Built on each call and never assigned to self, so the modules stay registered once (under self.model).
        return [(block, torch.nn.ModuleDict(modules)) for block, modules in groups.items()]

    def atom_features(self, data) -> torch.Tensor:
        """Scalar (0e) node features ``(N, F)`` after the last interaction layer (F = 128 for SevenNet-0)."""
        import sevenn._keys as KEY
        from e3nn import o3

        last_gate = max(
            (name for name in self.model._modules if name.endswith("_equivariant_gate")), key=_interaction_layer
        )
        data = self._run_modules(copy.copy(data), until=last_gate)
        irreps = o3.Irreps(self.model._modules[last_gate].gate.irreps_out)
        features = data[KEY.NODE_FEATURE]
        scalars = [features[:, span] for mul_ir, span in zip(irreps, irreps.slices()) if mul_ir.ir.l == 0]
        return torch.cat(scalars, dim=1)

    def backbone_version(self) -> str:
        import sevenn

        return sevenn.__version__

    # -- SevenNet's own per-element shift --------------------------------------------------------------------------
    def set_native_element_shift(self, shifts: dict[str, float]) -> None:
        """Set per-element energy offsets (eV/atom) added to SevenNet's own shift in ``rescale_atomic_energy``.

        Offsets are relative to the checkpoint's shift (calling twice with the same dict changes nothing; elements left
        out go back to the checkpoint's value). Unlike :meth:`set_element_energy_shift`, they live inside the SevenNet
        weights, so the checkpoint written by :meth:`save` gives the same energies in sevenn's ``SevenNetCalculator``.
        To move the atomtune E0 shift into the weights::

            potential.set_native_element_shift(potential.get_element_energy_shift())
            potential.set_element_energy_shift({})
        """
        rescale = self._rescale_module()
        unknown = set(shifts) - self.supported_elements
        if unknown:
            raise UnsupportedElementsError(unknown, self.name, "set_native_element_shift")
        table = self._reference_native_shift.clone()
        for symbol, offset in shifts.items():
            table[self.model.type_map[chemical_symbols.index(symbol)]] += float(offset)
        with torch.no_grad():
            rescale.shift.copy_(table.to(rescale.shift))
        self.native_element_shift = {symbol: float(offset) for symbol, offset in shifts.items()}

    def _rescale_module(self):
        rescale = self.model._modules.get("rescale_atomic_energy")
        if not _is_species_wise(rescale):
            # A plain Rescale has one shift for all elements and ModalWiseRescale one per fidelity: neither can hold E0.
            raise AtomtuneError(
                f"{self.name}: its energy rescaling is {type(rescale).__name__}, not a per-element shift; use "
                f"set_element_energy_shift (atomtune's own E0 shift) instead."
            )
        return rescale

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """Write a sevenn-native checkpoint (loadable by ``SevenNetCalculator(path)``) into ``directory``."""
        import sevenn
        from sevenn.nn.scale import get_resolved_shift_scale

        config = copy.deepcopy(self.config)
        # The weights are already in this sevenn's layout; an old version string would make sevenn re-sort the
        # convolution weights of pre-0.11 checkpoints when it loads them again.
        config["version"] = sevenn.__version__
        # sevenn rebuilds the rescale module from the config before loading the state dict: keep the two consistent
        rescale = self.model._modules["rescale_atomic_energy"]
        config["shift"], config["scale"] = get_resolved_shift_scale(rescale, self.model.type_map)
        state = {key: value.detach().cpu().clone() for key, value in self.model.state_dict().items()}
        torch.save(
            {
                "config": config,
                "epoch": None,
                "model_state_dict": state,
                "optimizer_state_dict": {},
                "scheduler_state_dict": {},
                "time": datetime.now().strftime("%Y-%m-%d %H:%M"),
                "hash": uuid.uuid4().hex,
            },
            directory / NATIVE_CHECKPOINT_FILE,
        )
        return {
            "file": NATIVE_CHECKPOINT_FILE,
            "dtype": str(self.dtype).removeprefix("torch."),
            "native_element_shift": self.native_element_shift,
        }

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> SevennetPotential:
        """Rebuild the potential written by :meth:`save_weights` (exact weights, dtype and native E0 offsets)."""
        weights = metadata["weights"]
        path = Path(directory) / weights["file"]
        if not path.exists():
            raise ModelNotFoundError(f"{path}: SevenNet weights missing from the saved model directory.")
        native = _native_checkpoint(str(path), trust=False, own_file=True)
        model = _build_model(native)
        if weights.get("dtype", "float32") == "float64":
            # build_model loads into float32; reload the float64 weights without rounding.
            model = model.double()
            model.load_state_dict(native.model_state_dict)
        potential = cls._from_native(metadata["checkpoint"], model, native.config)
        offsets = weights.get("native_element_shift", {})
        for symbol, offset in offsets.items():
            potential._reference_native_shift[model.type_map[chemical_symbols.index(symbol)]] -= float(offset)
        potential.native_element_shift = dict(offsets)
        return potential

    # -- internals ---------------------------------------------------------------------------------------------------
    def _run_modules(self, data, until: str | None):
        """SevenNet's forward without its force/stress module; stops after module ``until`` when given."""
        import sevenn._keys as KEY
        from sevenn.nn.force_output import ForceOutput, ForceStressOutput, ForceStressOutputFromEdge

        model = self.model
        dtype = self.dtype
        if model.eval_type_map:
            data[KEY.NODE_FEATURE] = model._atomic_numbers_to_onehot(data[KEY.ATOMIC_NUMBERS])
        # a cell too large for keeping every layer's edge activations recomputes them, a slice of edges at a time, in
        # the backward pass (atomtune.models.chunking.recompute_wanted; the same numbers to round-off)
        recompute = chunking.recompute_wanted(self, int(data[KEY.EDGE_IDX].shape[1]))
        for name, module in model._modules.items():
            if isinstance(module, (ForceOutput, ForceStressOutput, ForceStressOutputFromEdge)):
                continue
            data = self._run_module(name, module, data, dtype, recompute)
            if name == until:
                break
        return data

    def _run_module(self, name: str, module: torch.nn.Module, data, dtype: torch.dtype, recompute: bool = False):
        import sevenn._keys as KEY
        from sevenn.nn.node_embedding import OnehotEmbedding

        plan = self._convolution_plan(name, module) if self.fast_convolution else None
        if plan is not None:
            data = plan(module, data, recompute)
        elif recompute and _interaction_layer(name) is not None and "convolution" in name:
            # sevenn's own convolution module, recomputed whole: it reads the edge tensors and writes node features
            inputs = copy.copy(data)

            def convolution(node_features):
                layer_data = copy.copy(inputs)
                layer_data[KEY.NODE_FEATURE] = node_features
                return module(layer_data)[KEY.NODE_FEATURE]

            data[KEY.NODE_FEATURE] = chunking.run_block(convolution, data[KEY.NODE_FEATURE], recompute=True)
        else:
            data = module(data)
        if isinstance(module, OnehotEmbedding) and dtype != torch.float32:
            # sevenn's one-hot is always float32 (SevenNet trains in single precision); float64 models need a cast
            for key in (module.key_output, module.key_additional_output):
                if key is not None:
                    data[key] = data[key].to(dtype)
        return data

    def _convolution_plan(self, name: str, module: torch.nn.Module) -> EdgeTensorProductConvolution | None:
        cached = self._convolution_plans.get(name)
        # keyed by the module itself too: a strategy that swaps a layer for a wrapper must not inherit its plan
        if cached is None or cached[0] is not module:
            cached = self._convolution_plans[name] = (module, EdgeTensorProductConvolution.for_module(module))
        return cached[1]


def _forces_and_stress(data, edge_vector, edge_gradient, n_structures: int, forces: bool, stress: bool) -> dict:
    """Forces ``(…, N, 3)`` and ASE-sign stress ``(…, B, 3, 3)`` from dE/d(edge vectors) ``(…, E, 3)`` (leading
    dimensions, e.g. a committee's heads, are kept)."""
    import sevenn._keys as KEY

    source, destination = data[KEY.EDGE_IDX]
    leading = edge_gradient.shape[:-2]
    output = {}
    if forces:
        # edge_vec = r[destination] - r[source]: -dE/dr collects +dE/d(edge) at sources, -dE/d(edge) at destinations
        n_atoms = data[KEY.ATOMIC_NUMBERS].shape[0]
        atom_forces = torch.zeros(*leading, n_atoms, 3, dtype=edge_gradient.dtype, device=edge_gradient.device)
        atom_forces = atom_forces.index_add(-2, source, edge_gradient).index_add(-2, destination, -edge_gradient)
        output["forces"] = atom_forces
    if stress:
        # σ = (1/V) Σ_edges r ⊗ dE/dr; SevenNet returns −σ in Voigt order, we keep ASE's sign as a symmetric 3×3.
        edge_virial = edge_vector.detach()[:, :, None] * edge_gradient[..., None, :]
        virial = torch.zeros(*leading, n_structures, 3, 3, dtype=edge_gradient.dtype, device=edge_gradient.device)
        virial = virial.index_add(-3, data[KEY.BATCH][source], edge_virial)
        volume = data[KEY.CELL_VOLUME].to(virial.dtype).clamp_min(MINIMUM_VOLUME)
        output["stress"] = 0.5 * (virial + virial.transpose(-1, -2)) / volume[:, None, None]
    return output


class EdgeTensorProductConvolution:
    """SevenNet's interaction convolution (``IrrepsConvolution``) evaluated with fewer, larger tensor operations.

    Same mathematics as sevenn's module: per edge, the e3nn ``uvu`` tensor product of the source atom's features with
    the edge's spherical harmonics, weighted per channel and path by the radial network, summed onto the destination
    atom and divided by the layer's denominator. e3nn's generic code cuts the per-edge weights into one slice per path
    (on the backward pass each slice zero-fills a gradient the size of all weights), builds one outer product per path
    and concatenates the per-edge messages; sevenn then scatters them with a broadcast index. Here all paths that read
    the same input irrep share one batched matmul against a precomputed Clebsch–Gordan matrix, the weights are gathered
    once, messages are summed onto atoms per input irrep, and only the per-atom result is permuted into e3nn's layout.
    About 3× faster on CPU for the layers with l > 0; results agree with sevenn's own calculator to float32 round-off
    (tests/models/test_sevennet.py). Holds no parameters: the weights stay in sevenn's module (and its checkpoint).
    """

    def __init__(self, blocks: list[dict], inverse_layout: torch.Tensor):
        self.blocks = blocks
        self.inverse_layout = inverse_layout
        self._constants: dict[tuple, list] = {}

    @classmethod
    def for_module(cls, module) -> EdgeTensorProductConvolution | None:
        """The plan for a sevenn ``IrrepsConvolution`` on an e3nn ``uvu`` TensorProduct; None for anything else."""
        from e3nn.o3 import TensorProduct
        from sevenn.nn.convolution import IrrepsConvolution

        product = getattr(module, "convolution", None)
        if type(module) is not IrrepsConvolution or type(product) is not TensorProduct or module.is_parallel:
            return None
        instructions = product.instructions
        irreps_x, irreps_filter, irreps_out = product.irreps_in1, product.irreps_in2, product.irreps_out
        if (
            product.shared_weights
            or product.internal_weights
            or any(ins.connection_mode != "uvu" or not ins.has_weight for ins in instructions)
            or any(mul_ir.mul != 1 for mul_ir in irreps_filter)
            or sorted(ins.i_out for ins in instructions) != list(range(len(irreps_out)))
        ):
            return None
        buffers = dict(product.named_buffers())
        x_offsets = [span.start for span in irreps_x.slices()]
        filter_offsets = [span.start for span in irreps_filter.slices()]
        out_offsets = [span.start for span in irreps_out.slices()]
        weight_offsets = np.cumsum([0] + [irreps_x[ins.i_in1].mul for ins in instructions]).tolist()

        blocks, layout = [], []
        for i_x, mul_ir in enumerate(irreps_x):
            paths = [(k, ins) for k, ins in enumerate(instructions) if ins.i_in1 == i_x]
            if not paths:
                continue
            channels, x_dim = mul_ir.mul, mul_ir.ir.dim
            width = sum(irreps_out[ins.i_out].ir.dim for _, ins in paths)  # output components of all paths together
            coupling = torch.zeros(irreps_filter.dim, x_dim, width, dtype=torch.float64)
            weight_index = torch.empty(channels, width, dtype=torch.long)
            block_layout = torch.empty(channels, width, dtype=torch.long)
            path_of_column = torch.empty(width, dtype=torch.long)
            column = 0
            for number, (k, ins) in enumerate(paths):
                l_filter, l_out = irreps_filter[ins.i_in2].ir.l, irreps_out[ins.i_out].ir.l
                filter_dim, out_dim = 2 * l_filter + 1, 2 * l_out + 1
                clebsch_gordan = _coupling(buffers, mul_ir.ir.l, l_filter, l_out)
                if clebsch_gordan is None:
                    return None
                start = filter_offsets[ins.i_in2]
                coupling[start : start + filter_dim, :, column : column + out_dim] = (
                    clebsch_gordan.permute(1, 0, 2) * ins.path_weight
                )
                channel = torch.arange(channels)[:, None]
                weight_index[:, column : column + out_dim] = weight_offsets[k] + channel
                block_layout[:, column : column + out_dim] = (
                    out_offsets[ins.i_out] + channel * out_dim + torch.arange(out_dim)[None, :]
                )
                path_of_column[column : column + out_dim] = number
                column += out_dim
            blocks.append(
                {
                    "start": x_offsets[i_x],
                    "channels": channels,
                    "x_dim": x_dim,
                    "width": width,
                    "coupling": coupling.reshape(irreps_filter.dim, x_dim * width),
                    "weight_index": weight_index.reshape(-1),
                    # scalar inputs: weights of each path times the feature first (small), then spread over components
                    "path_weight_columns": torch.cat([weight_offsets[k] + torch.arange(channels) for k, _ in paths]),
                    "spread": (path_of_column[None, :] * channels + torch.arange(channels)[:, None]).reshape(-1),
                    "n_paths": len(paths),
                }
            )
            layout.append(block_layout.reshape(-1))
        layout = torch.cat(layout)
        inverse_layout = torch.empty_like(layout)
        inverse_layout[layout] = torch.arange(len(layout))
        return cls(blocks, inverse_layout)

    def __call__(self, module, data, recompute: bool = False):
        """Run ``module`` (an ``IrrepsConvolution``) on ``data`` through this plan; with ``recompute``, over slices of
        ``EDGES_PER_SLICE`` edges whose activations are recomputed in the backward pass (same sum, same numbers to
        round-off)."""
        weight_input = data[module.key_weight_input]
        edge_filter = data[module.key_filter]
        # sevenn's convention: messages flow from edge_index[1] to edge_index[0]
        edge_source, edge_destination = data[module.key_edge_idx][1], data[module.key_edge_idx][0]
        n_atoms = data[module.key_x].shape[0]
        constants = self._block_constants(edge_filter.dtype, edge_filter.device)

        def summed_messages(rows: slice, features: torch.Tensor) -> torch.Tensor:
            weight = module.weight_nn(weight_input[rows])
            rows_filter, source_index = edge_filter[rows], edge_source[rows]
            n_edges = rows_filter.shape[0]
            per_atom = []
            for block, (coupling, weight_index, path_weight_columns, spread) in zip(self.blocks, constants):
                channels, x_dim, width = block["channels"], block["x_dim"], block["width"]
                start = block["start"]
                source = features[:, start : start + channels * x_dim].index_select(0, source_index)
                projected = (rows_filter @ coupling).view(n_edges, x_dim, width)
                if x_dim == 1:
                    weighted = weight.index_select(1, path_weight_columns).view(n_edges, block["n_paths"], channels)
                    weighted = weighted * source.view(n_edges, 1, channels)
                    message = weighted.view(n_edges, -1).index_select(1, spread).view(n_edges, channels, width)
                    message = message * projected
                else:
                    message = torch.bmm(source.view(n_edges, channels, x_dim), projected)
                    message = message * weight.index_select(1, weight_index).view(n_edges, channels, width)
                summed = torch.zeros(n_atoms, channels * width, dtype=message.dtype, device=message.device)
                per_atom.append(summed.index_add(0, edge_destination[rows], message.view(n_edges, -1)))
            return torch.cat(per_atom, dim=1)

        summed = chunking.over_row_slices(
            summed_messages, [data[module.key_x]], edge_filter.shape[0], EDGES_PER_SLICE, "sum", recompute
        )
        inverse_layout = self.inverse_layout.to(summed.device)
        data[module.key_x] = summed.index_select(1, inverse_layout).div(module.denominator)
        return data

    def _block_constants(self, dtype: torch.dtype, device: torch.device) -> list:
        key = (dtype, device)
        if key not in self._constants:
            self._constants[key] = [
                (
                    block["coupling"].to(device=device, dtype=dtype),
                    block["weight_index"].to(device),
                    block["path_weight_columns"].to(device),
                    block["spread"].to(device),
                )
                for block in self.blocks
            ]
        return self._constants[key]


def _coupling(buffers: dict, l_x: int, l_filter: int, l_out: int) -> torch.Tensor | None:
    """The ``(2l_x+1, 2l_filter+1, 2l_out+1)`` coupling e3nn's ``uvu`` code applies for one path (float64).

    e3nn special-cases paths with an l = 0 irrep as a scaled identity; the others use the Wigner 3j buffer the compiled
    tensor product holds (taken from there, not recomputed, so checkpoint-era sign conventions carry over).
    """
    x_dim, filter_dim, out_dim = 2 * l_x + 1, 2 * l_filter + 1, 2 * l_out + 1
    if 0 in (l_x, l_filter, l_out):
        coupling = torch.zeros(x_dim, filter_dim, out_dim, dtype=torch.float64)
        if l_x == 0:
            coupling[0] = torch.eye(filter_dim, out_dim, dtype=torch.float64) / out_dim**0.5
        elif l_filter == 0:
            coupling[:, 0, :] = torch.eye(x_dim, out_dim, dtype=torch.float64) / out_dim**0.5
        else:
            coupling[:, :, 0] = torch.eye(x_dim, filter_dim, dtype=torch.float64) / x_dim**0.5
        return coupling
    wigner = buffers.get(f"_compiled_main_left_right._w3j_{l_x}_{l_filter}_{l_out}")
    return None if wigner is None else wigner.detach().to("cpu", torch.float64)


def _native_checkpoint(checkpoint: str, trust: bool, own_file: bool = False):
    """sevenn's ``SevenNetCheckpoint`` for a pretrained name or a ``.pth`` path, read without unpickling code.

    sevenn's own loader calls ``torch.load(weights_only=False)``. Here the file is read by
    :func:`atomtune.loading.load_tensors` (tensors, plain data, numpy arrays, torch devices) and handed to the checkpoint
    object as if it had read it itself; with ``trust`` a file that needs more falls back to sevenn's loader.
    """
    import sevenn.util
    from sevenn.checkpoint import SevenNetCheckpoint, _config_cp_routine

    from atomtune.loading import UnsafeFileError, load_tensors

    path = Path(checkpoint)
    if not path.is_file():
        return sevenn.util.load_checkpoint(checkpoint)  # a pretrained name: sevenn resolves it inside its wheel
    try:
        saved = load_tensors(path, "SevenNet checkpoint", own_file=own_file)
    except UnsafeFileError:
        if trust and not own_file:
            return sevenn.util.load_checkpoint(str(path))
        raise
    if not isinstance(saved, dict) or "model_state_dict" not in saved or not saved.get("config"):
        raise ModelNotFoundError(
            f"{path}: not a SevenNet checkpoint (no config / model_state_dict); pass a .pth file that `sevenn train` "
            f"or `atomtune finetune` wrote."
        )
    # Mirrors SevenNetCheckpoint._load (sevenn 0.13), minus its torch.load.
    native = SevenNetCheckpoint(str(path))
    native._config_original = saved["config"]
    native._model_state_dict = saved["model_state_dict"]
    native._optimizer_state_dict = saved.get("optimizer_state_dict", {})
    native._scheduler_state_dict = saved.get("scheduler_state_dict", {})
    native._epoch = saved.get("epoch")
    native._time = saved.get("time", "Not found")
    native._hash = saved.get("hash", "Not found")
    native._config = _config_cp_routine(saved["config"])
    native._loaded = True
    return native


def _build_model(native):
    """sevenn's model from a loaded ``SevenNetCheckpoint``, with e3nn's generated code left as torch.fx (not scripted).

    TorchScript-compiling e3nn's generated code takes about two thirds of sevenn's build time and gives no speed here
    (the convolutions run through EdgeTensorProductConvolution); the state dict and the numbers are identical. The e3nn
    option is global, so it is restored right after.
    """
    import e3nn

    previous = e3nn.get_optimization_defaults()["jit_script_fx"]
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        return native.build_model()
    finally:
        e3nn.set_optimization_defaults(jit_script_fx=previous)


def _is_species_wise(rescale) -> bool:
    from sevenn.nn.scale import SpeciesWiseRescale

    return isinstance(rescale, SpeciesWiseRescale)


def _interaction_layer(module_name: str) -> int | None:
    """``3`` for ``"3_convolution"``; None for modules outside the interaction layers."""
    head, _, rest = module_name.partition("_")
    return int(head) if head.isdigit() and rest else None


def _local_checkpoint_path(checkpoint: str) -> str | None:
    path = Path(checkpoint)
    if path.is_file():
        return str(path)
    constant = PRETRAINED_FILES.get(checkpoint.lower())
    if constant is None:
        return None
    import sevenn._const

    packaged = getattr(sevenn._const, constant, None)
    if packaged is None:
        return None  # a name this sevenn release does not know
    downloaded = packaged.replace(sevenn._const._prefix, str(Path("~/.cache/sevennet").expanduser()))
    return next((candidate for candidate in (packaged, downloaded) if Path(candidate).is_file()), None)


@functools.lru_cache(maxsize=None)
def _elements_of_checkpoint_file(path: str) -> frozenset[str]:
    type_map = _native_checkpoint(path, trust=False).config["_type_map"]
    return frozenset(chemical_symbols[z] for z in type_map)
