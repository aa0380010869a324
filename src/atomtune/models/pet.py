"""PET (metatrain's Point Edge Transformer: PET-MAD, PET-OMAD and the other uPET models) behind the Potential protocol;
runs in the ``pet`` environment.

The registry resolves ``pet-mad`` / ``pet-omad`` (the bare names ``atomtune models`` lists), ``pet:NAME`` for any uPET
model (``pet:pet-mad-s``, ``pet:pet-omat-l-1.0.0``: model, optional size, optional version, downloaded from Hugging Face
``lab-cosmo/upet`` by upet's own resolver and cached by huggingface_hub), and ``pet:PATH`` for a local metatrain training
checkpoint (``.ckpt``, what ``mtt train`` writes and what upet downloads) or an exported metatomic model (``.pt``, what
``mtt export`` writes). metatrain 2026.4 needs metatensor-torch 0.10 and pydantic >= 2.12, which the main environment
does not hold, so this module is imported only inside the ``pet`` environment (``atomtune env build pet``); from the main
environment the same model is reached through :mod:`atomtune.envs.worker`.

PET is the plain ``torch.nn.Module`` metatrain trains (``metatrain.pet.PET``): its forward takes metatomic ``System``s
carrying a full neighbour list and computes its edge vectors itself from positions, cell and the list's cell shifts, so
forces (−∂E/∂r) and stress ((1/V) ∂E/∂ε for a strain ε applied to positions and cell, ASE's sign) come from autograd
exactly as metatomic's own ASE calculator gets them. A batch is a list of systems in one forward.

Two quirks of metatrain's PET decide how it is driven here:

- its forward adds the scaler and the composition model (PET's per-element energies, its E0) only when the PET module
  is in eval mode, because metatrain's trainer subtracts them from the targets instead. atomtune's Trainer fits total
  energies for every backbone, so the PET module's own ``training`` flag (which only gates that post-processing) stays
  False, and the scaler and composition model stay in eval mode; its backend follows the Trainer's mode, which matters:
  in training mode it uses its manual attention, the one that supports the double backward of a force loss.
- its composition model and scaler keep metatensor copies of their weights that ``module.to(dtype)`` does not move, so
  the model keeps the dtype it was saved in (PET-MAD: float32; the tiny test model: float64), as nequip's does.

LoRA goes through atomtune's own :class:`~atomtune.finetune.strategies.lora.LoRA` and the one Trainer: every PET layer
is a ``torch.nn.Linear`` (attention input / output projections, feed-forward, heads), which is what that strategy adapts,
so ``atomtune finetune --model pet-mad --strategy lora --lora-rank 8`` writes the same saved model, metrics and learning
curve as for the other backbones (metatrain's own LoRA adapts the attention projections only and would need its own
dataset files, options and output conversion; it brings nothing this path lacks).

Loading: a metatrain checkpoint is a pickle of Python objects (``torch.load(weights_only=False)``), and an exported
``.pt`` is TorchScript code; a local file loads only with ``trust`` (``--trust-model``). Named uPET checkpoints come from
upet's own download path and are treated like the named checkpoints of the other backbones.
"""

from __future__ import annotations

import difflib
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.base import Potential

#: A uPET model name: base model, optional size, optional version (upet's own file names are MODEL-SIZE-vVERSION.ckpt).
UPET_NAME = re.compile(r"^(?P<model>pet-[a-z0-9]+?)(?:-(?P<size>xs|s|m|l|xl))?(?:-v?(?P<version>\d+\.\d+\.\d+))?$")
CHECKPOINT_SUFFIX = ".ckpt"
EXPORTED_SUFFIX = ".pt"
WEIGHTS_FILE = "weights.pt"
ENERGY = "energy"
#: backbone children that take the atoms in (embedding block) and that read energies out (readout block)
EMBEDDING_MODULES = ("node_embedders", "edge_embedder", "system_conditioning")
READOUT_MODULES = ("node_heads", "edge_heads", "node_last_layers", "edge_last_layers")


def upet_base_models() -> list[str]:
    """Base names of the uPET models upet knows (``pet-mad``, ``pet-omad``, ``pet-omat``, …), from its own list."""
    from upet._version import UPET_AVAILABLE_MODELS

    return sorted({UPET_NAME.match(name)["model"] for name in UPET_AVAILABLE_MODELS if UPET_NAME.match(name)})


def parse_upet_name(checkpoint: str) -> tuple[str, str | None, str | None] | None:
    """``(model, size, version)`` when ``checkpoint`` names a uPET model (``pet-mad``, ``pet-mad-s``,
    ``pet-omat-l-1.0.0``); None otherwise."""
    match = UPET_NAME.match(checkpoint)
    if match is None or match["model"] not in upet_base_models():
        return None
    return match["model"], match["size"], match["version"]


@dataclass
class LoadedPet:
    """A PET module and what the adapter reads from around it (the Python module and an exported, scripted one keep
    these in different places)."""

    model: torch.nn.Module
    neighbor_list: object  # metatomic NeighborListOptions (cutoff Å, full list)
    atomic_types: tuple[int, ...]
    energy_unit: str


class PetPotential(Potential):
    """A metatrain PET model (PET-MAD, PET-OMAD, a local checkpoint) behind the batched Potential protocol."""

    backbone = "pet"
    # Measured on the tiny test model only (bench_envs_pet.py): 8 was fastest there (6.0x metatomic's calculator loop,
    # 4.0x at 4); kept at 4 until a foundation-size PET is measured (PET pads every atom to the batch's largest
    # neighbour count, which grows with the batch).
    cpu_batch_size = 4
    gpu_batch_size = 32

    def __init__(self, checkpoint: str, loaded: LoadedPet, architecture_file: Path | None = None):
        super().__init__(checkpoint)
        self.model = loaded.model
        self.architecture_file = architecture_file  # the local file the model came from (copied on save)
        from metatomic.torch import unit_conversion_factor

        self._options = loaded.neighbor_list
        self._atomic_types = list(loaded.atomic_types)
        self._energy_factor = float(unit_conversion_factor(loaded.energy_unit or "eV", "eV"))
        self.train(False)

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> PetPotential:
        """A uPET name (``pet-mad``, ``pet-omad``, ``pet-mad-s``, …; downloaded by upet) or a local ``.ckpt`` / ``.pt``."""
        from atomtune.loading import TRUST_HINT, UnsafeFileError

        path = Path(checkpoint)
        if not path.is_file():
            name = parse_upet_name(checkpoint)
            if name is None:
                close = difflib.get_close_matches(checkpoint, upet_base_models(), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise ModelNotFoundError(
                    f"{checkpoint}: neither a PET model file nor a uPET model name.{hint} Give a metatrain checkpoint "
                    f"(.ckpt), an exported metatomic model (.pt), or a uPET name such as pet-mad, pet-omad, pet-mad-s "
                    f"(uPET models: {', '.join(upet_base_models())})."
                )
            return cls(checkpoint, _download_upet(*name))
        if not trust:
            raise UnsafeFileError(
                f"{path}: a metatrain checkpoint is a Python pickle and an exported metatomic model is TorchScript code; "
                f"loading either runs what it contains. atomtune loads it only if you trust the file: pass {TRUST_HINT}."
            )
        return cls(checkpoint, _load_local(path), path)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        name = parse_upet_name(checkpoint) if not Path(checkpoint).is_file() else None
        if name is not None:
            return cached_upet_checkpoint(*name) is not None  # in huggingface_hub's cache
        return Path(checkpoint).is_file()

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        raise ModelNotFoundError(f"{checkpoint}: the elements of a PET model are known only after loading it.")

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        return frozenset(chemical_symbols[z] for z in self._atomic_types)

    @property
    def cutoff(self) -> float:
        return float(self._options.cutoff)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def float(self) -> PetPotential:
        """Unchanged: the model keeps the dtype it was saved in (module docstring)."""
        return self

    def double(self) -> PetPotential:
        """Unchanged, as :meth:`float`."""
        return self

    def to(self, *args, **kwargs) -> PetPotential:
        """Moves to a device; a dtype in the request is ignored, as in :meth:`float`."""
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        return super().to(device=device, non_blocking=non_blocking) if device is not None else self

    def train(self, mode: bool = True) -> PetPotential:
        """The backend follows ``mode``; PET's own flag, its scaler and its composition model stay in evaluation mode so
        that every forward returns total energies (module docstring)."""
        super().train(mode)
        self.model.training = False
        for name in ("scaler", "additive_models"):
            module = getattr(self.model, name, None)
            if module is not None:
                module.train(False)
        return self

    def featurize(self, atoms: Atoms) -> dict:
        """Atomic numbers, positions, cell, periodicity and PET's full neighbour list (pairs and cell shifts; the
        vectors are recomputed in :meth:`compute` so that they carry gradients), as plain tensors."""
        unknown = set(atoms.numbers.tolist()) - set(self._atomic_types)
        if unknown:
            self.check_elements([atoms])
        first, second, shifts = _neighbour_pairs(atoms, self.cutoff, self._options.full_list)
        return {
            "numbers": torch.as_tensor(atoms.numbers, dtype=torch.int32),
            "positions": torch.as_tensor(np.asarray(atoms.positions), dtype=torch.float64),
            "cell": torch.as_tensor(np.asarray(atoms.cell[:]), dtype=torch.float64),
            "pbc": torch.as_tensor(atoms.pbc, dtype=torch.bool),
            "pairs": torch.as_tensor(np.stack([first, second], axis=1), dtype=torch.int32).reshape(-1, 2),
            "shifts": torch.as_tensor(shifts, dtype=torch.int32).reshape(-1, 3),
        }

    def collate(self, graphs: Sequence[dict]) -> list[dict]:
        """PET batches a list of systems itself; here each structure's tensors move to the model's device and dtype."""
        device, dtype = self.device, self.dtype
        return [
            {key: value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
             for key, value in graph.items()}
            for graph in graphs
        ]

    def _systems(self, data: list[dict], positions: list[torch.Tensor], cells: list[torch.Tensor]):
        from metatensor.torch import Labels, TensorBlock
        from metatomic.torch import System

        systems = []
        for graph, position, cell in zip(data, positions, cells):
            system = System(types=graph["numbers"], positions=position, cell=cell, pbc=graph["pbc"])
            first, second = graph["pairs"][:, 0].long(), graph["pairs"][:, 1].long()
            vectors = position[second] - position[first] + graph["shifts"].to(cell.dtype) @ cell
            samples = Labels(
                ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"],
                torch.cat([graph["pairs"], graph["shifts"]], dim=1),
                assume_unique=True,
            )
            neighbours = TensorBlock(
                values=vectors.reshape(-1, 3, 1), samples=samples,
                components=[Labels.range("xyz", 3).to(position.device)],
                properties=Labels.range("distance", 1).to(position.device),
            )
            system.add_neighbor_list(self._options, neighbours)
            systems.append(system)
        return systems

    def compute(self, data: list[dict], forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) from PET's forward."""
        from metatomic.torch import ModelOutput

        dtype = self.dtype
        positions = [graph["positions"] for graph in data]
        cells = [graph["cell"] for graph in data]
        strains = []
        if forces:
            positions = [position.detach().requires_grad_(True) for position in positions]
        leaves = list(positions)
        strained_positions, strained_cells = positions, cells
        if stress:
            strains = [torch.eye(3, dtype=dtype, device=self.device, requires_grad=True) for _ in data]
            strained_positions = [position @ strain for position, strain in zip(positions, strains)]
            strained_cells = [cell @ strain for cell, strain in zip(cells, strains)]
        systems = self._systems(data, strained_positions, strained_cells)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Cartesian tensors of rank 2.*")
            output = self.model(systems, {ENERGY: ModelOutput(unit="", sample_kind="system")})
        energy = output[ENERGY].block().values.reshape(-1) * self._energy_factor
        result = {"energy": energy}
        wanted = (leaves if forces else []) + strains
        if wanted:
            gradients = torch.autograd.grad(energy.sum(), wanted, create_graph=self.training, allow_unused=True)
            gradients = [g if g is not None else torch.zeros_like(w) for g, w in zip(gradients, wanted)]
            if forces:
                result["forces"] = -torch.cat(gradients[: len(leaves)])
            if stress:
                volumes = torch.stack([torch.abs(torch.det(cell)) for cell in cells])
                if bool((volumes == 0).any()):
                    raise AtomtuneError(f"{self.name}: stress needs periodic cells with a volume (a molecule has none).")
                derivative = torch.stack(gradients[len(leaves) if forces else 0 :])
                # symmetric, as ASE's stress is: PET is not rotation invariant by construction, so ∂E/∂ε has a small
                # antisymmetric part (a rotation), which metatomic's calculator drops the same way (Voigt form)
                result["stress"] = 0.5 * (derivative + derivative.transpose(1, 2)) / volumes[:, None, None]
        return result

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding`` (species embeddings), ``interaction_0`` … ``interaction_{L-1}`` (one GNN layer each, with its
        message-combination MLP), ``readout`` (energy heads and last layers, and any module not named above)."""
        backend = self.model.backend
        layers = len(backend.gnn_layers)
        embedding, readout = {}, {}
        interactions: list[dict] = [{} for _ in range(layers)]
        for name, module in backend.named_children():
            if name in EMBEDDING_MODULES:
                embedding[name] = module
            elif isinstance(module, torch.nn.ModuleList) and len(module) == layers and name not in READOUT_MODULES:
                for k in range(layers):
                    interactions[k][name] = module[k]
            else:
                readout[name] = module
        for name, module in self.model.named_children():
            if name != "backend":
                readout[name] = module  # long-range featurizer, composition model, scaler (no parameters in PET-MAD)
        groups = [("embedding", embedding)] + [(f"interaction_{k}", named) for k, named in enumerate(interactions)]
        groups.append(("readout", readout))
        return [(block, torch.nn.ModuleDict(named)) for block, named in groups if named]

    def atom_features(self, data: list[dict]) -> torch.Tensor:
        """PET's own per-atom ``feature`` output ``(N, F)`` (node and edge features of its GNN layers)."""
        from metatomic.torch import ModelOutput

        systems = self._systems(data, [graph["positions"] for graph in data], [graph["cell"] for graph in data])
        output = self.model(systems, {"feature": ModelOutput(sample_kind="atom")})
        return output["feature"].block().values.detach()

    def backbone_version(self) -> str:
        import metatrain

        return metatrain.__version__

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """The current weights as a tensors-only state dict, plus the local model file the architecture came from (a
        named uPET model is fetched again by name when the directory is loaded)."""
        saved: dict = {"file": WEIGHTS_FILE, "dtype": str(self.dtype).removeprefix("torch.")}
        if self.architecture_file is not None:
            target = Path(directory) / f"architecture{Path(self.architecture_file).suffix}"
            if Path(self.architecture_file).resolve() != target.resolve():
                shutil.copyfile(self.architecture_file, target)
            saved["architecture"] = target.name
        state = {key: value.detach().cpu().clone() for key, value in self.model.state_dict().items()}
        torch.save(state, Path(directory) / WEIGHTS_FILE)
        return saved

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> PetPotential:
        """Rebuild from the architecture (the saved local file: a pickle / TorchScript by design, needs ``trust``; or the
        uPET name) and the tensors-only weights."""
        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        architecture = weights.get("architecture")
        source = str(Path(directory) / architecture) if architecture else metadata["checkpoint"]
        potential = cls.from_checkpoint(source, trust=trust)
        potential.checkpoint = metadata["checkpoint"]
        state = load_tensors(Path(directory) / weights["file"], "PET weights", own_file=True)
        potential.model.load_state_dict(state)
        _sync_metatensor_copies(potential.model)
        return potential


def _neighbour_pairs(atoms: Atoms, cutoff: float, full_list: bool):
    """Pairs ``i, j`` and cell shifts ``S`` within ``cutoff`` (Å), as metatrain computes them (vesin; ASE where the
    periodicity is mixed, which vesin does not handle)."""
    if atoms.pbc.all() or not atoms.pbc.any():
        import vesin

        first, second, shifts = vesin.ase_neighbor_list("ijS", atoms, cutoff=cutoff)
    else:
        from ase.neighborlist import neighbor_list

        first, second, shifts = neighbor_list("ijS", atoms, cutoff=cutoff)
    if not full_list:
        keep = (first < second) | ((first == second) & (shifts.sum(axis=1) > 0))
        first, second, shifts = first[keep], second[keep], shifts[keep]
    return first, second, shifts


def _sync_metatensor_copies(model: torch.nn.Module) -> None:
    """After ``load_state_dict``: the composition model and scaler refresh the metatensor copies of their weights (as
    metatrain's own ``load_checkpoint`` does). An exported (scripted) model has no such method and needs none: its
    composition and scaler weights are buffers no strategy trains, so the loaded ones equal those it was scripted with."""
    additive = getattr(model, "additive_models", None)
    modules = [module for _, module in additive.named_children()] if additive is not None else []
    for module in modules + [getattr(model, "scaler", None)]:
        if module is not None and hasattr(module, "sync_tensor_maps"):
            module.sync_tensor_maps()


#: Sizes in the order upet picks a default when none is asked for.
UPET_SIZE_PREFERENCE = ("s", "m", "xs", "l", "xl")
UPET_REPOSITORY = "lab-cosmo/upet"


def _download_upet(model: str, size: str | None, version: str | None) -> LoadedPet:
    """A uPET checkpoint through upet's own resolver (lists ``lab-cosmo/upet`` on Hugging Face, downloads the ``.ckpt``
    into huggingface_hub's cache), loaded by metatrain's own checkpoint loader.

    upet always asks the hub which sizes and versions exist, even for a checkpoint already downloaded; when the hub
    cannot be reached (or ``HF_HUB_OFFLINE=1``), the newest matching checkpoint in huggingface_hub's cache is used."""
    import huggingface_hub.constants

    name = f"{model}{'-' + size if size else ''}{'-' + version if version else ''}"
    cached = cached_upet_checkpoint(model, size, version)
    if huggingface_hub.constants.HF_HUB_OFFLINE and cached is not None:
        return _load_local(cached)
    from upet._models import _resolve_and_download_checkpoint

    try:
        _, _, path = _resolve_and_download_checkpoint(model, size, version or "latest")
    except Exception as error:  # noqa: BLE001 — network, missing size or version, Hugging Face errors
        if cached is not None:
            warnings.warn(f"{name}: Hugging Face not reachable ({type(error).__name__}); using the cached {cached.name}",
                          stacklevel=2)
            return _load_local(cached)
        raise ModelNotFoundError(
            f"{name}: upet could not fetch the checkpoint from Hugging Face {UPET_REPOSITORY} ({type(error).__name__}: "
            f"{error}). It needs internet on first use (then huggingface_hub's cache); a downloaded .ckpt also loads "
            f"as pet:PATH with --trust-model."
        ) from None
    return _load_local(Path(path))


def cached_upet_checkpoint(model: str, size: str | None = None, version: str | None = None) -> Path | None:
    """The newest ``models/MODEL-SIZE-vVERSION.ckpt`` of ``lab-cosmo/upet`` in huggingface_hub's cache (its
    ``models--lab-cosmo--upet/snapshots/REVISION/`` layout), with upet's default size when none is given; None if
    there is none."""
    import huggingface_hub.constants
    from packaging.version import Version

    snapshots = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--lab-cosmo--upet" / "snapshots"
    found: dict[tuple[str, Version], Path] = {}
    for path in snapshots.glob(f"*/models/{model}-*.ckpt"):
        match = UPET_NAME.match(path.name.removesuffix(CHECKPOINT_SUFFIX))
        complete = match and match["model"] == model and match["size"] and match["version"] and path.is_file()
        if complete and size in (None, match["size"]) and version in (None, match["version"]):
            found[(match["size"], Version(match["version"]))] = path
    if not found:
        return None
    chosen_size = size or next(candidate for candidate in UPET_SIZE_PREFERENCE if any(k[0] == candidate for k in found))
    return found[max(key for key in found if key[0] == chosen_size)]


def _load_local(path: Path) -> LoadedPet:
    """A metatrain checkpoint (the Python PET module) or an exported metatomic model (its scripted PET module)."""
    from metatrain.utils.io import is_exported_file, model_from_checkpoint

    try:
        if is_exported_file(str(path)):
            from metatomic.torch import load_atomistic_model

            exported = load_atomistic_model(str(path))
            capabilities = exported.capabilities()
            if ENERGY not in capabilities.outputs:
                raise ValueError("the exported model has no energy output")
            model = exported.module
            if getattr(model, "original_name", "") != "PET":
                raise ValueError(f"an exported {getattr(model, 'original_name', type(model).__name__)} model, not PET")
            loaded = LoadedPet(model, exported.requested_neighbor_lists()[0], tuple(capabilities.atomic_types),
                               capabilities.outputs[ENERGY].unit)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*Cartesian tensors of rank 2.*")
                checkpoint = torch.load(path, weights_only=False, map_location="cpu")
                if not isinstance(checkpoint, dict) or "architecture_name" not in checkpoint:
                    raise ValueError("no 'architecture_name': not a metatrain checkpoint")
                if checkpoint["architecture_name"] != "pet":
                    raise ValueError(f"a metatrain {checkpoint['architecture_name']!r} model, not PET")
                model = model_from_checkpoint(checkpoint, context="export")
            loaded = LoadedPet(model, model.requested_neighbor_lists()[0], tuple(int(z) for z in model.atomic_types),
                               model.dataset_info.targets[ENERGY].unit)
    except Exception as error:  # noqa: BLE001 — zip, pickle, TorchScript and metatrain each fail their own way
        raise ModelNotFoundError(
            f"{path}: not a PET model (metatrain checkpoint or exported metatomic model) ({type(error).__name__}: "
            f"{error}). A model of another backbone loads by its own name or path (`atomtune models`)."
        ) from None
    for parameter in loaded.model.parameters():
        parameter.requires_grad_(True)  # an exported model comes frozen
    return loaded
