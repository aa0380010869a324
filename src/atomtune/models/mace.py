"""MACE backbone: MACE-MP-0 / MPA-0 / OMAT-0 foundation models and any pickled MACE ``*.model`` file behind the Potential
protocol.

Sits in ``models/`` beside the other backbones: the registry resolves ``mace-mp-0`` (downloaded by mace's own loader when
online) or ``path/to/model.model`` into a :class:`MacePotential`, which the fine-tuning strategies and every task then use
through the shared batched forward.

The graph is mace's own ``AtomicData`` (same neighbour list, one-hot over the model's ``z_table``, cutoff ``r_max``) and
the forward is the model's own ``forward``, so energies, forces and stresses are the ones ``MACECalculator`` gives. MACE
already works in eV and Å, and its stress is the strain derivative over the volume with ASE's sign, so no unit conversion
is needed.

MACE quirks worth knowing when fine-tuning:

- The per-element reference energies (E0s) are a buffer inside the model, ``model.atomic_energies_fn.atomic_energies``
  (``(n_heads, n_elements)`` or ``(n_elements,)``), not a parameter: no optimiser moves them. mace's single-head
  fine-tuning prints the ``--E0s`` it was given but keeps the foundation model's atomic energies, so an E0 shift has to be
  written into the model itself (:meth:`MacePotential.set_native_atomic_energies`) for a saved ``.model`` file to carry it
  when loaded natively by ``MACECalculator``. :meth:`MacePotential.save_weights` does that for atomtune's
  ``element_energy_shift`` (``mace-native.model``).
- ``ScaleShiftMACE`` rescales the interaction energy with a fixed per-head ``scale_shift`` buffer; it is not trainable
  either and is left as trained.
- Multi-head models (replay fine-tunes, some MPA/OMAT releases) predict one energy per head. Like ``MACECalculator`` we
  use the only head, or else the head called ``default``; pass ``head=`` to choose another.
"""

from __future__ import annotations

import copy
import logging
import socket
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.base import Potential, TrunkPass

logger = logging.getLogger(__name__)

#: Named foundation checkpoints → mace's key in ``mace.calculators.foundations_models.mace_mp_urls``.
FOUNDATION_CHECKPOINTS = ("small", "medium", "large", "medium-mpa-0", "medium-omat-0", "mace-matpes-pbe-0",
                          "mace-matpes-r2scan-0")
#: MACE-MP-0 and its MPA/OMAT successors were trained on H…Ac (Z = 1–89).
FOUNDATION_ELEMENTS = frozenset(chemical_symbols[1:90])
#: Seconds to wait for the download host before declaring the machine offline (mace's own read timeout is 120 s).
NETWORK_PROBE_TIMEOUT = 10.0

#: Batch size × edge feature width that still gains from batching on CPU (see MacePotential.cpu_batch_size).
CPU_BATCH_WIDTH_BUDGET = 1200

MODEL_FILE = "mace.model"
NATIVE_MODEL_FILE = "mace-native.model"
STATE_FILE = "mace-weights.pt"
ARCHITECTURE_FILE = "mace-architecture.json"
#: Where the classes and functions named in ``mace-architecture.json`` may come from (nothing else is ever imported).
ARCHITECTURE_MODULES = ("mace.modules", "torch.nn.functional", "torch")


class MacePotential(Potential):
    """A pickled MACE model (``MACE`` / ``ScaleShiftMACE``) behind the batched Potential protocol.

    Build it with :meth:`from_checkpoint` (``"medium"``, ``"medium-mpa-0"``, … or a ``*.model`` path) or through
    :func:`atomtune.models.load_potential`. ``head`` selects the readout head of a multi-head model (default: the only
    head, else the one called ``default``).
    """

    backbone = "mace"
    gpu_batch_size = 32

    @property
    def cpu_batch_size(self) -> int:  # type: ignore[override]
        """Structures per forward pass in ``predict`` on CPU, by model width (benchmarks/bench_predict_mace.py).

        Measured at 1 thread on 8–32-atom cells: a 16-channel l≤2 model is 1.5–2× faster batched by 8 (mace's per-call
        overhead dominates), a 32-channel one ~1.2× by 4, while MACE-MP-0 small/medium (128 channels, l≤3) are
        compute-bound and 5–20 % *slower* batched, so they run one structure at a time. The width is the edge feature
        size of the first interaction (channels × spherical-harmonic components).
        """
        edge_width = self.model.interactions[0].target_irreps.dim
        return max(1, min(8, CPU_BATCH_WIDTH_BUDGET // edge_width))

    def __init__(self, model: torch.nn.Module, checkpoint: str, head: str | None = None):
        super().__init__(checkpoint)
        self.model = model
        # Read once: featurize needs them per structure and they never change (one-hot order of the node attributes).
        self.atomic_numbers = [int(z) for z in model.atomic_numbers]
        self.heads = [str(name) for name in getattr(model, "heads", ["Default"])]
        self.head = _choose_head(self.heads, head, checkpoint)

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, head: str | None = None, trust: bool = False) -> MacePotential:
        """Load a named foundation checkpoint (downloaded on first use) or a local pickled ``*.model`` file.

        A named checkpoint comes from mace's own download URL and is trusted; a local ``*.model`` file is a pickle and
        loads only with ``trust`` (``--trust-model``).

        The model keeps the dtype it was saved in (foundation models: float64); :func:`load_potential` converts it to
        the requested dtype. All parameters are made trainable; strategies freeze what they need.
        """
        if checkpoint in FOUNDATION_CHECKPOINTS:
            path = _download_foundation(checkpoint)
        else:
            path = Path(checkpoint)
            if not path.is_file():
                raise ModelNotFoundError(
                    f"{path}: MACE model file not found. Pass a *.model file written by mace_run_train or one of the "
                    f"named checkpoints {', '.join(FOUNDATION_CHECKPOINTS)}."
                )
        model = _load_model_file(Path(path), trust=trust or checkpoint in FOUNDATION_CHECKPOINTS)
        model.requires_grad_(True)
        return cls(model, checkpoint, head=head)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """True if ``checkpoint`` can be loaded without network: a named one already in mace's cache, or a file."""
        if checkpoint in FOUNDATION_CHECKPOINTS:
            return _cached_foundation_path(checkpoint).is_file()
        return Path(checkpoint).is_file()

    @classmethod
    def checkpoint_elements(cls, checkpoint: str, trust: bool = False) -> frozenset[str]:
        """Chemical symbols a checkpoint covers (named foundation models: Z = 1–89; a trusted file: its
        ``atomic_numbers``)."""
        if checkpoint in FOUNDATION_CHECKPOINTS:
            return FOUNDATION_ELEMENTS
        model = _load_model_file(Path(checkpoint), trust=trust)
        return frozenset(chemical_symbols[int(z)] for z in model.atomic_numbers)

    # -- protocol --------------------------------------------------------------------------------------------------
    def featurize(self, atoms: Atoms):
        """mace's ``AtomicData`` for ``atoms`` (float64 on CPU; :meth:`collate` casts to the model's dtype).

        Built exactly as ``MACECalculator`` builds it, except that no ``atoms.info`` / ``atoms.arrays`` keys are read
        (charges, spin and fields only matter for PolarMACE/OMOL-style models, which this backbone does not target).
        """
        from mace import data as mace_data
        from mace.tools.torch_tools import default_dtype

        with default_dtype(torch.float64):
            config = mace_data.config_from_atoms(
                atoms, key_specification=mace_data.KeySpecification(), head_name=self.head
            )
            return mace_data.AtomicData.from_config(
                config, z_table=self.z_table, cutoff=self.cutoff, heads=self.heads
            )

    def collate(self, graphs: Sequence) -> dict[str, torch.Tensor]:
        """The batch dict mace's models read (what ``torch_geometric.Batch.from_data_list(graphs).to_dict()`` holds for
        these keys), floats in the model's dtype, on the model's device.

        Only the inputs of ``MACE.forward`` are concatenated: mace's generic ``Batch`` also stacks ~25 label and weight
        fields per graph, which cost as much as the forward of a small model. Models with extra per-graph inputs (joint
        embeddings of charge/spin) go through mace's ``Batch``.
        """
        graphs = list(graphs)
        dtype, device = self.dtype, self.device
        if hasattr(self.model, "joint_embedding"):
            from mace.tools import torch_geometric

            batch = torch_geometric.Batch.from_data_list(graphs).to_dict()
            return {key: _to_model(value, dtype, device) for key, value in batch.items()}
        n_atoms = torch.tensor([graph.num_nodes for graph in graphs])
        ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
        torch.cumsum(n_atoms, 0, out=ptr[1:])
        edge_index = torch.cat([graph.edge_index + offset for graph, offset in zip(graphs, ptr[:-1].tolist())], dim=1)
        inputs = {
            "positions": torch.cat([graph.positions for graph in graphs]),
            "node_attrs": torch.cat([graph.node_attrs for graph in graphs]),
            "edge_index": edge_index,
            "shifts": torch.cat([graph.shifts for graph in graphs]),
            "unit_shifts": torch.cat([graph.unit_shifts for graph in graphs]),
            "cell": torch.cat([graph.cell for graph in graphs]),  # (3B, 3), as mace's Batch
            "head": torch.stack([graph.head for graph in graphs]),
            "batch": torch.repeat_interleave(torch.arange(len(graphs)), n_atoms),
            "ptr": ptr,
        }
        return {key: _to_model(value, dtype, device) for key, value in inputs.items()}

    def compute(self, data: dict, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV (E0s included), forces ``(N, 3)`` eV/Å, stresses ``(B, 3, 3)`` eV/Å³, ASE sign.

        Stress is mace's symmetric-displacement derivative divided by the cell volume, which is ASE's convention
        (``MACECalculator`` returns it unchanged). Unlike the calculator, which always differentiates through the cell
        displacement, stress is only computed when asked.
        ``self.training`` keeps the autograd graph of forces/stress so a loss on them reaches the parameters.
        """
        # mace's forward sets requires_grad on data["positions"] and writes displaced positions back into the dict: give
        # it a private dict and a fresh leaf so cached graphs and the caller's batch stay untouched.
        inputs = dict(data)
        inputs["positions"] = data["positions"].detach()
        output = self.model(inputs, training=self.training, compute_force=forces, compute_stress=stress)
        result = {"energy": output["energy"]}
        if forces:
            result["forces"] = output["forces"]
        if stress:
            result["stress"] = output["stress"]
        return result

    @property
    def receptive_field(self) -> float:
        """``r_max`` × number of interactions (Å): how far an atom's energy reaches."""
        return self.cutoff * len(self.model.interactions)

    def compute_atoms(self, data: dict, weights: torch.Tensor | None = None, forces: bool = True) -> dict:
        """mace's ``node_energy`` (E0 + interaction energies of each atom, what its ``energy`` sums) and the forces of
        their ``weights``-weighted sum, by autograd through a private positions leaf."""
        inputs = dict(data)
        positions = data["positions"].detach().requires_grad_(forces)
        inputs["positions"] = positions
        output = self.model(inputs, training=self.training, compute_force=False, compute_stress=False)
        energies = output["node_energy"]
        return self.atom_energies_result(energies, positions, weights, forces)

    def run_trunk(self, data: dict, forces: bool = True, stress: bool = True) -> TrunkPass | None:
        """:meth:`compute` up to the readout block (the last readout): mace's own forward with that readout's output
        replaced by zeros (a forward hook that also keeps its inputs, the last layer's node features and node heads),
        so the trunk's energy is E0 plus the earlier readouts (after ``scale_shift``); gradients with respect to the
        positions and mace's symmetric displacement. None for model classes other than MACE and ScaleShiftMACE."""
        if type(self.model).__name__ not in ("MACE", "ScaleShiftMACE"):
            return None
        inputs = dict(data)
        positions = inputs["positions"] = data["positions"].detach()  # mace sets requires_grad on this leaf
        last_readout = self.model.readouts[-1]
        captured: dict = {}

        def keep_inputs_give_zeros(module, arguments, output):
            captured["arguments"] = arguments
            return torch.zeros_like(output)

        handle = last_readout.register_forward_hook(keep_inputs_give_zeros)
        try:
            # Only the displacement is requested: mace takes no gradient itself, the committee takes them per head.
            output = self.model(inputs, training=self.training, compute_force=False, compute_displacement=stress)
        finally:
            handle.remove()
        if "arguments" not in captured:
            return None
        node_feats, node_heads = captured["arguments"][:2]
        displacement = output["displacement"]
        volumes = torch.linalg.det(data["cell"].view(-1, 3, 3)).abs()

        def forces_and_stress(gradients):
            result = {}
            if forces:
                result["forces"] = -gradients[0]
            if stress:
                # mace's compute_forces_virials: dE/d(displacement) / V, with its guard against degenerate cells
                stresses = gradients[-1] / volumes[:, None, None]
                result["stress"] = torch.where(stresses.abs() < 1e10, stresses, torch.zeros_like(stresses))
            return result

        leaves = tuple(tensor for tensor, wanted in ((positions, forces), (displacement, stress)) if wanted)
        features = {"node_feats": node_feats, "node_heads": node_heads, "batch": data["batch"]}
        return TrunkPass(features=features, energy=output["energy"], inputs=leaves, forces_and_stress=forces_and_stress)

    def run_readout(self, trunk: TrunkPass, head: torch.nn.Module) -> torch.Tensor:
        """Energies ``(B,)`` of a last readout shaped as ``blocks()[-1]`` on the trunk's last-layer node features,
        scaled as mace scales every readout's node energy (``scale_shift``'s scale; its shift is in the trunk)."""
        node_feats, node_heads, batch = (trunk.features[key] for key in ("node_feats", "node_heads", "batch"))
        node_energy = head(node_feats, node_heads)[torch.arange(len(node_heads), device=node_heads.device), node_heads]
        scale_shift = getattr(self.model, "scale_shift", None)
        if scale_shift is not None:
            node_energy = scale_shift(node_energy, node_heads) - scale_shift(torch.zeros_like(node_energy), node_heads)
        n_structures = trunk.energy.shape[0]
        return node_energy.new_zeros(n_structures).index_add(0, batch, node_energy).to(trunk.energy.dtype)

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """Named blocks, input to output: ``node_embedding``, then ``interaction_k`` and ``product_k`` per layer, then
        ``readout_k`` (readouts last, so freezing by depth trains the readouts first, as in MACE fine-tuning practice).

        Only modules holding parameters are listed: the spherical harmonics, the Bessel radial basis, the atomic
        energies (E0s) and ``scale_shift`` are buffers. Any other top-level module with parameters (a variant this list
        does not know) becomes its own block before the readouts, so every parameter is in exactly one block.
        """
        model = self.model
        first = [("node_embedding", model.node_embedding)]
        layers = []
        for k, (interaction, product) in enumerate(zip(model.interactions, model.products)):
            layers += [(f"interaction_{k}", interaction), (f"product_{k}", product)]
        readouts = [(f"readout_{k}", readout) for k, readout in enumerate(model.readouts)]
        known = {"node_embedding", "interactions", "products", "readouts"}
        others = [
            (name, module)
            for name, module in model.named_children()
            if name not in known and _has_parameters(module)
        ]
        return [(name, module) for name, module in first + others + layers + readouts if _has_parameters(module)]

    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset(chemical_symbols[z] for z in self.atomic_numbers)

    @property
    def cutoff(self) -> float:
        """``r_max`` in Å."""
        return float(self.model.r_max)

    def atom_features(self, data: dict) -> torch.Tensor:
        """Invariant (0e) node features of the last MACE layer, ``(N, F)``."""
        from e3nn import o3

        inputs = dict(data)
        inputs["positions"] = data["positions"].detach()
        output = self.model(inputs, training=False, compute_force=False, compute_stress=False)
        last_irreps = o3.Irreps(str(self.model.products[-1].linear.irreps_out))
        last = output["node_feats"][:, -last_irreps.dim :]
        scalars = [last[:, piece] for (_, irrep), piece in zip(last_irreps, last_irreps.slices()) if irrep == o3.Irrep("0e")]
        return torch.cat(scalars, dim=1)

    def save_weights(self, directory: Path) -> dict:
        """Write the model as tensors plus a JSON description of its architecture, so loading it runs no code.

        ``mace-weights.pt`` (the state dict, read with ``weights_only=True``) and ``mace-architecture.json`` (mace's own
        ``extract_config_mace_model``, with classes and functions written as names that :func:`_architecture_from_json`
        resolves only inside mace and torch). For mace's own tools the directory also gets ``mace.model`` (the pickle
        that ``MACECalculator(model_paths=...)`` reads; atomtune never loads it back) and, with a non-zero
        ``element_energy_shift``, ``mace-native.model`` with the shift folded into the model's own atomic energies.
        A strategy that wraps layers (LoRA) must merge them back before saving.
        """
        from atomtune.files import atomic_write_json

        directory = Path(directory)
        torch.save(self.model, directory / MODEL_FILE)
        weights = {"file": MODEL_FILE, "head": self.head, "native_model": MODEL_FILE}
        architecture = _architecture_to_json(self.model)
        if architecture is not None:
            torch.save({name: value.detach().cpu() for name, value in self.model.state_dict().items()},
                       directory / STATE_FILE)
            atomic_write_json(directory / ARCHITECTURE_FILE, architecture)
            weights.update(state=STATE_FILE, architecture=ARCHITECTURE_FILE)
        shift = self.get_element_energy_shift()
        if shift:
            torch.save(self.native_model(), directory / NATIVE_MODEL_FILE)
            weights["native_model"] = NATIVE_MODEL_FILE
        return weights

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> MacePotential:
        """Rebuild the model from ``mace-weights.pt`` + ``mace-architecture.json`` (no unpickling); a directory that
        has only the pickled ``mace.model`` (a MACE class mace cannot describe) loads only with ``trust``."""
        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        directory = Path(directory)
        if weights.get("state") and weights.get("architecture"):
            import json

            architecture_file = directory / weights["architecture"]
            try:
                architecture = json.loads(architecture_file.read_text())
            except (OSError, ValueError) as error:
                raise ModelNotFoundError(
                    f"{architecture_file}: missing or not valid JSON ({error}); the saved model is incomplete."
                ) from None
            state = load_tensors(directory / weights["state"], "MACE weights file", own_file=True)
            model = _architecture_from_json(architecture, state, architecture_file)
        else:
            model = _load_model_file(directory / weights["file"], trust=trust)
        return cls(model, metadata["checkpoint"], head=weights.get("head"))

    def backbone_version(self) -> str:
        import mace

        return str(mace.__version__)

    # -- MACE specifics --------------------------------------------------------------------------------------------
    @property
    def z_table(self):
        """mace's ``AtomicNumberTable`` of the model (order of the one-hot node attributes)."""
        from mace.tools.utils import AtomicNumberTable

        return AtomicNumberTable(self.atomic_numbers)

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.model.parameters():
            return tensor.dtype
        return torch.get_default_dtype()

    def set_native_atomic_energies(self, shifts: dict[str, float]) -> None:
        """Add per-element offsets (eV/atom) to the model's own atomic energies (E0s) of the selected head.

        Unlike :meth:`set_element_energy_shift` (applied by atomtune on top of the model) this changes the model, so a
        ``.model`` file saved afterwards and loaded by ``MACECalculator`` includes the shift. mace's own single-head
        fine-tuning does not do this: it keeps the foundation model's E0s whatever ``--E0s`` says.
        """
        unknown = sorted(set(shifts) - self.supported_elements)
        if unknown:
            raise AtomtuneError(
                f"cannot shift the atomic energies of {', '.join(unknown)}: {self.name} has no such element "
                f"(it has {', '.join(sorted(self.supported_elements, key=chemical_symbols.index))})."
            )
        _add_to_atomic_energies(self.model, self.heads.index(self.head), shifts)

    def get_native_atomic_energies(self) -> dict[str, float]:
        """The model's own atomic energies (E0s) of the selected head, eV/atom per element."""
        energies = self.model.atomic_energies_fn.atomic_energies.detach().double().cpu()
        if energies.dim() > 1:
            energies = energies[self.heads.index(self.head)]
        return {chemical_symbols[z]: float(e) for z, e in zip(self.atomic_numbers, energies)}

    def native_model(self) -> torch.nn.Module:
        """A copy of the MACE model with atomtune's ``element_energy_shift`` folded into its atomic energies.

        ``MACECalculator(models=potential.native_model())`` gives the same energies as this potential. Shifts of
        elements the model lacks are dropped (no structure can contain them).
        """
        native = copy.deepcopy(self.model)
        shifts = {s: v for s, v in self.get_element_energy_shift().items() if s in self.supported_elements}
        _add_to_atomic_energies(native, self.heads.index(self.head), shifts)
        return native


def _add_to_atomic_energies(model: torch.nn.Module, head_index: int, shifts: dict[str, float]) -> None:
    """Add ``shifts`` (eV/atom by element) to ``model.atomic_energies_fn.atomic_energies`` of one head, in place."""
    energies = model.atomic_energies_fn.atomic_energies  # (n_elements,) or (n_heads, n_elements)
    zs = [int(z) for z in model.atomic_numbers]
    with torch.no_grad():
        for symbol, value in shifts.items():
            column = zs.index(chemical_symbols.index(symbol))
            if energies.dim() == 1:
                energies[column] += float(value)
            else:
                energies[head_index, column] += float(value)


def _to_model(value, dtype: torch.dtype, device: torch.device):
    """Move a batch entry to the model's device, floats to its dtype (one conversion per batch, not per use)."""
    if not torch.is_tensor(value):
        return value
    return value.to(device=device, dtype=dtype if value.is_floating_point() else None)


def _has_parameters(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _choose_head(heads: list[str], head: str | None, checkpoint: str) -> str:
    """The readout head to use: ``head`` if given, the only head, else the one named ``default`` (as MACECalculator)."""
    if head is not None:
        if head not in heads:
            raise AtomtuneError(f"MACE model {checkpoint} has no head {head!r}; its heads are {', '.join(heads)}.")
        return head
    if len(heads) == 1:
        return heads[0]
    defaults = [name for name in heads if name.lower() == "default"]
    if not defaults:
        raise AtomtuneError(
            f"MACE model {checkpoint} has several heads ({', '.join(heads)}) and none is called 'default'; "
            f"choose one with head=..."
        )
    logger.info("MACE model %s: using head %r of %s", checkpoint, defaults[0], heads)
    return defaults[0]


def _load_model_file(path: Path, trust: bool = False) -> torch.nn.Module:
    """Unpickle a MACE ``*.model`` file on CPU (``torch.load`` of a whole module, as ``MACECalculator`` does).

    A ``*.model`` file is a pickle by design, so it loads only with ``trust`` (see :mod:`atomtune.loading`).
    """
    import mace.modules  # noqa: F401  (the pickle refers to mace's classes)

    from atomtune.loading import load_pickle

    model = load_pickle(path, "MACE *.model file", trust=trust)
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "atomic_numbers") or not hasattr(model, "r_max"):
        raise ModelNotFoundError(
            f"{path}: holds a {type(model).__name__}, not a pickled MACE model; pass the *.model file that "
            f"mace_run_train writes next to its *.pt checkpoints."
        )
    return model


def _architecture_to_json(model: torch.nn.Module) -> dict | None:
    """mace's ``extract_config_mace_model`` as plain JSON (None for a model class it cannot describe)."""
    import numpy as np
    from e3nn import o3
    from mace.tools.scripts_utils import extract_config_mace_model

    config = extract_config_mace_model(model)
    if "error" in config or config.get("cueq_config") is not None:
        return None

    def encode(value):
        if isinstance(value, o3.Irreps):
            return {"irreps": str(value)}
        if isinstance(value, (np.ndarray, torch.Tensor)):
            array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
            return {"array": array.tolist(), "dtype": str(array.dtype)}
        if isinstance(value, type) or callable(value):
            return {"object": f"{value.__module__}:{value.__qualname__}"}
        if isinstance(value, (list, tuple)):
            return [encode(item) for item in value]
        if isinstance(value, dict):
            return {"dict": {str(key): encode(item) for key, item in value.items()}}
        if isinstance(value, np.generic):
            return value.item()
        return value

    return {"class": f"{type(model).__module__}:{type(model).__qualname__}",
            "config": {key: encode(value) for key, value in config.items()}}


def _architecture_from_json(architecture: dict, state: dict, source: Path) -> torch.nn.Module:
    """Build the MACE model described by :func:`_architecture_to_json` and load ``state`` into it (exact dtype)."""
    import importlib

    import numpy as np
    from e3nn import o3
    from mace.tools.torch_tools import default_dtype

    def resolve(name: str):
        module_name, _, qualname = name.partition(":")
        if not any(module_name == allowed or module_name.startswith(allowed + ".") for allowed in ARCHITECTURE_MODULES):
            raise ModelNotFoundError(f"{source}: names {name!r}, outside mace and torch; refusing to import it.")
        target = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target

    def decode(value):
        if isinstance(value, list):
            return [decode(item) for item in value]
        if isinstance(value, dict):
            if "irreps" in value:
                return o3.Irreps(value["irreps"])
            if "array" in value:
                return np.asarray(value["array"], dtype=value["dtype"])
            if "object" in value:
                return resolve(value["object"])
            if "dict" in value:
                return {key: decode(item) for key, item in value["dict"].items()}
        return value

    try:
        model_class = resolve(architecture["class"])
        config = {key: decode(value) for key, value in architecture["config"].items()}
        floating = [t for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
        dtype = floating[0].dtype if floating else torch.float64
        with default_dtype(dtype):
            model = model_class(**config)
        model.load_state_dict(state)
    except ModelNotFoundError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, ImportError) as error:
        raise ModelNotFoundError(
            f"{source}: the saved MACE architecture does not rebuild with this mace ({type(error).__name__}: "
            f"{str(error)[:300]}); the directory is incomplete or was written by another mace version."
        ) from None
    return model


def _foundation_url(checkpoint: str) -> str:
    from mace.calculators.foundations_models import mace_mp_urls

    return mace_mp_urls[checkpoint]


def _cached_foundation_path(checkpoint: str) -> Path:
    """Where mace's downloader keeps ``checkpoint`` (same naming as ``download_mace_mp_checkpoint``)."""
    from mace.calculators import foundations_models
    from mace.tools.utils import get_cache_dir

    if checkpoint == "medium-mpa-0" and Path(foundations_models.local_model_path).is_file():
        return Path(foundations_models.local_model_path)
    name = "".join(c for c in Path(_foundation_url(checkpoint)).name if c.isalnum() or c == "_")
    return Path(get_cache_dir()) / name


def _download_foundation(checkpoint: str) -> Path:
    """Path of a named foundation model, downloaded by mace's own loader if it is not cached yet."""
    from mace.calculators.foundations_models import download_mace_mp_checkpoint

    cached = _cached_foundation_path(checkpoint)
    if cached.is_file():
        return cached
    url = _foundation_url(checkpoint)
    try:
        # Fail within seconds on an offline machine rather than after mace's 120 s read timeout.
        _probe_network(url)
        return Path(download_mace_mp_checkpoint(checkpoint))
    except (OSError, RuntimeError) as error:  # URLError, socket errors and timeouts are OSErrors
        name = _registry_name(checkpoint)
        raise ModelNotFoundError(
            f"could not download {name} ({url}): no network ({error}); download it on a machine with internet and "
            f"pass the .model path (--model path/to/{Path(url).name}), or copy the file to {cached}."
        ) from error


def _probe_network(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or "github.com"
    with socket.create_connection((host, 443), timeout=NETWORK_PROBE_TIMEOUT):
        pass


def _registry_name(checkpoint: str) -> str:
    from atomtune.models.registry import CHECKPOINTS

    return next((info.name for info in CHECKPOINTS if info.backbone == "mace" and info.checkpoint == checkpoint), checkpoint)
