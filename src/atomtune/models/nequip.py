"""NequIP and Allegro (nequip 0.19 / allegro 0.8) behind the Potential protocol; runs in the ``nequip`` environment.

The registry resolves ``nequip:PATH`` (a ``.nequip.zip`` package from ``nequip-package`` or a training ``.ckpt``) and
``nequip.net:group/model:version`` IDs (NequIP-OAM, Allegro-OAM; downloaded and cached by nequip's own
``load_saved_model``) into a :class:`NequipPotential`. nequip and allegro need e3nn >= 0.6, < 0.7, which the main
environment cannot hold (SevenNet 0.13 and the MACE pickles need 0.5.1), so this module is imported only inside the
``nequip`` environment (``atomtune env build nequip``); from the main environment the same model is reached through
:mod:`atomtune.envs.worker`.

A nequip ``GraphModel`` wraps ``ForceStressOutput(SequentialGraphNetwork)``: the network's named modules are, for NequIP,
``type_embed, spharm, edge_norm, bessel_encode, factor`` (block "embedding"), ``layer{i}_convnet`` (block
"interaction_{i}"), ``per_atom_energy_readout, per_type_energy_scale_shift, total_energy_sum`` (block "readout"); an
Allegro network has its own names, split the same way at its first and last message-passing module. ``ForceStressOutput``
differentiates the energy with respect to positions and a symmetric strain (``create_graph`` follows training), giving
forces in eV/Å and stress in eV/Å³ with ASE's sign already — nequip's own ASE calculator passes them through unchanged.

Loading: a nequip package and a Lightning checkpoint are pickles by design (torch.package / torch.save of whole
objects), so a local file loads only with ``trust`` (``--trust-model``); nequip.net IDs come from nequip's own download
path and are treated like the named checkpoints of the other backbones.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.base import Potential

NEQUIP_NET_PREFIX = "nequip.net:"
PACKAGE_SUFFIX = ".nequip.zip"
ARCHITECTURE_FILE = "architecture.nequip.zip"
WEIGHTS_FILE = "weights.pt"
#: module names that are message-passing layers (NequIP: layer{i}_convnet; Allegro: allegro / *_layer* modules)
INTERACTION_MARKS = ("convnet", "allegro", "layer")


def _network(graph_model: torch.nn.Module) -> torch.nn.Module:
    """The SequentialGraphNetwork inside nequip's GraphModel → ForceStressOutput wrapper."""
    inner = graph_model.model
    return getattr(inner, "func", inner)


class NequipPotential(Potential):
    """A NequIP or Allegro model from nequip 0.19 behind the batched Potential protocol."""

    backbone = "nequip"
    # Not tuned: 4 gave 2.8x over nequip's calculator loop on the tiny test model (benchmarks/bench_envs_nequip.py, 1-8
    # atom cells); a foundation-size model on larger cells may want 1-2 (as SevenNet / CHGNet did).
    cpu_batch_size = 4
    gpu_batch_size = 32

    def __init__(self, checkpoint: str, graph_model: torch.nn.Module, architecture_file: Path | None = None):
        super().__init__(checkpoint)
        self.graph_model = graph_model
        metadata = graph_model.metadata
        self._type_names = metadata["type_names"].split(" ")
        self._r_max = float(metadata["r_max"])
        self.architecture_file = architecture_file  # the package the architecture came from (copied on save)
        from nequip.integrations.utils import basic_transforms, handle_chemical_species_map

        species_map = handle_chemical_species_map(None, self._type_names)
        self._transforms = basic_transforms(metadata, self._r_max, self._type_names, species_map)

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> NequipPotential:
        """A ``nequip.net:group/model:version`` ID (downloaded by nequip) or a local ``.nequip.zip`` / ``.ckpt``."""
        from atomtune.loading import TRUST_HINT, UnsafeFileError

        is_remote = checkpoint.startswith(NEQUIP_NET_PREFIX)
        if not is_remote:
            path = Path(checkpoint)
            if not path.is_file():
                raise ModelNotFoundError(
                    f"{checkpoint}: NequIP/Allegro model file not found; give a .nequip.zip package (nequip-package), "
                    f"a training .ckpt, or a nequip.net ID such as nequip.net:mir-group/NequIP-OAM-L:0.1."
                )
            if not trust:
                raise UnsafeFileError(
                    f"{path}: a nequip package / checkpoint is a Python pickle by design (torch.package), and loading "
                    f"it runs the code it contains. atomtune loads it only if you trust the file: pass {TRUST_HINT}."
                )
        graph_model = _load_saved_model(checkpoint)
        architecture = Path(checkpoint) if checkpoint.endswith(PACKAGE_SUFFIX) and not is_remote else None
        return cls(checkpoint, graph_model, architecture)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        if checkpoint.startswith(NEQUIP_NET_PREFIX):
            return False  # nequip caches downloads under ~/.nequip; atomtune does not look inside that cache
        return Path(checkpoint).is_file()

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        if checkpoint.startswith(NEQUIP_NET_PREFIX):
            return frozenset(chemical_symbols[1:90])  # NequIP-OAM / Allegro-OAM: OMat24 + sAlex + MPtrj, H…Ac
        raise ModelNotFoundError(f"{checkpoint}: elements of a local nequip file are known only after loading it.")

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset(name for name in self._type_names if name in chemical_symbols)

    @property
    def cutoff(self) -> float:
        return self._r_max

    @property
    def dtype(self) -> torch.dtype:
        return next(self.graph_model.parameters()).dtype

    def float(self) -> NequipPotential:
        """Unchanged: a nequip model's precision is fixed when it is built (``model_dtype``, e.g. float64 weights with
        float32 or float64 internals) and its modules cast their inputs to it; converting its weights breaks it."""
        return self

    def double(self) -> NequipPotential:
        """Unchanged, as :meth:`float`."""
        return self

    def to(self, *args, **kwargs) -> NequipPotential:
        """Moves to a device; a dtype in the request is ignored, as in :meth:`float` (the fine-tuning loop asks for its
        ``dtype`` setting with ``potential.to(torch.float32)``)."""
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        return super().to(device=device, non_blocking=non_blocking) if device is not None else self

    def featurize(self, atoms: Atoms):
        """nequip's AtomicDataDict for one structure through nequip's own transforms (type mapping, neighbour list).

        Only species, positions, cell and pbc go in: ``from_ase`` would also copy any energy / forces / stress the
        structure carries (its calculator's results), and nequip refuses to batch labelled with unlabelled structures.
        """
        from nequip.data import from_ase

        data = from_ase(Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
        for transform in self._transforms:
            data = transform(data)
        return data

    def collate(self, graphs: Sequence):
        from nequip.data import AtomicDataDict

        batch = AtomicDataDict.batched_from_list(list(graphs))
        dtype = self.dtype
        for key in (AtomicDataDict.POSITIONS_KEY, AtomicDataDict.CELL_KEY, AtomicDataDict.EDGE_CELL_SHIFT_KEY):
            if key in batch and batch[key].is_floating_point():
                batch[key] = batch[key].to(dtype)
        return AtomicDataDict.to_(batch, self.device)

    def compute(self, data, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) from nequip's model."""
        from nequip.data import AtomicDataDict

        output = self.graph_model(dict(data))  # the model writes its outputs into the dict it is given
        result = {"energy": output[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)}
        if forces:
            result["forces"] = output[AtomicDataDict.FORCE_KEY]
        if stress:
            if AtomicDataDict.STRESS_KEY not in output:
                raise AtomtuneError(f"{self.name}: the model returned no stress (non-periodic structures?).")
            result["stress"] = output[AtomicDataDict.STRESS_KEY].reshape(-1, 3, 3)
        return result

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding``, ``interaction_0`` … ``interaction_{L-1}``, ``readout``: the network's modules in order, split at
        its first and last message-passing module."""
        modules = list(_network(self.graph_model).named_children())
        interaction = [i for i, (name, _) in enumerate(modules) if any(mark in name for mark in INTERACTION_MARKS)]
        if not interaction:
            return [("readout", torch.nn.ModuleDict(dict(modules)))]
        first, last = interaction[0], interaction[-1]
        groups: list[tuple[str, dict]] = [("embedding", dict(modules[:first]))]
        groups += [(f"interaction_{k}", {name: module}) for k, (name, module) in enumerate(modules[first : last + 1])]
        groups.append(("readout", dict(modules[last + 1 :])))
        return [(block, torch.nn.ModuleDict(named)) for block, named in groups if named]

    def lora_layer_kind(self, module: torch.nn.Module) -> str | None:
        """LoRA's layer kind for nequip's layers, which are copies of e3nn's and nequip's classes loaded from the
        package (``<torch_package_0>.e3nn.o3._linear.Linear``), so the ``isinstance`` checks of
        :func:`atomtune.finetune.strategies.lora.layer_kind` miss them; they are matched by class name and module here.

        - e3nn ``o3.Linear`` (NequIP's ``linear_1`` / ``linear_2`` in each interaction): ``"e3nn_linear"``, one
          low-rank update per path between equal irreps, so the update commutes with rotations;
        - nequip ``ScalarLinearLayer`` (the radial MLPs, the per-atom energy readout, and all of Allegro's scalar
          MLPs: weights (in × out) acting on invariant scalars): ``"e3nn_mlp"``, as e3nn's MLP layers.

        Left frozen: NequIP's self-connection (a weighted tensor product with the atom types), Allegro's tensor-track
        contraction weights, nequip's deep-linear MLPs (one ``ParameterList``) and per-type scale / shift.
        """
        from atomtune.finetune.strategies.lora import layer_kind

        kind = layer_kind(module)  # a model built in this process from nequip's own classes
        if kind is not None:
            return kind
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.numel() == 0:
            return None
        cls = type(module)
        if cls.__name__ == "Linear" and cls.__module__.endswith("e3nn.o3._linear"):
            return "e3nn_linear" if weight.dim() == 1 and module.internal_weights else None
        if cls.__name__ == "ScalarLinearLayer" and cls.__module__.endswith("nequip.nn.mlp"):
            return "e3nn_mlp" if weight.dim() == 2 else None
        return None

    def atom_features(self, data) -> torch.Tensor:
        """Scalar node features ``(N, F)`` entering the per-atom energy readout (after the last interaction)."""
        from nequip.data import AtomicDataDict

        network = _network(self.graph_model)
        captured = {}
        readout = next(module for name, module in network.named_children() if "readout" in name)
        handle = readout.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
        try:
            with torch.enable_grad():
                self.graph_model(dict(data))
        finally:
            handle.remove()
        features = captured["x"]
        features = features[AtomicDataDict.NODE_FEATURES_KEY] if isinstance(features, dict) else features
        return features.detach()

    def backbone_version(self) -> str:
        import nequip

        return nequip.__version__

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """The architecture package (nequip's own format) plus the current weights as a tensors-only state dict."""
        if self.architecture_file is None:
            raise AtomtuneError(
                f"{self.name}: saving needs the model's .nequip.zip package (a .ckpt or nequip.net model must be "
                f"packaged first: `nequip-package build run.ckpt model.nequip.zip`)."
            )
        target = Path(directory) / ARCHITECTURE_FILE
        if Path(self.architecture_file).resolve() != target.resolve():
            shutil.copyfile(self.architecture_file, target)
        state = {key: value.detach().cpu().clone() for key, value in self.graph_model.state_dict().items()}
        torch.save(state, Path(directory) / WEIGHTS_FILE)
        return {"architecture": ARCHITECTURE_FILE, "file": WEIGHTS_FILE, "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> NequipPotential:
        """Rebuild from the saved package (a pickle by design: needs ``trust``) and the tensors-only weights."""
        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        potential = cls.from_checkpoint(str(Path(directory) / weights["architecture"]), trust=trust)
        potential.checkpoint = metadata["checkpoint"]
        state = load_tensors(Path(directory) / weights["file"], "nequip weights", own_file=True)
        potential.graph_model.load_state_dict(state)
        return potential


def _load_saved_model(checkpoint: str) -> torch.nn.Module:
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    # nequip's own loaders (its ASE calculator, nequip-compile) first set its global state: torch's default dtype
    # float64, TF32 off, its JIT fusion strategy. The model's float32 internals round differently without it (~1e-8
    # eV), so do the same; this process is the nequip environment's own worker.
    set_global_state(allow_tf32=False)

    try:
        model = load_saved_model(checkpoint)
    except Exception as error:  # noqa: BLE001 — torch.package / zipfile / Lightning each fail their own way
        raise ModelNotFoundError(
            f"{checkpoint}: not a nequip model package / checkpoint ({type(error).__name__}: {error}). A model of "
            f"another backbone loads by its own name or path (`atomtune models`)."
        ) from None
    model.eval()
    return model
