"""MatterSim (mattersim 1.2.3, an M3GNet) behind the Potential protocol; runs in the ``mattersim`` environment.

The registry resolves ``mattersim:mattersim-v1.0.0-1m`` / ``mattersim:mattersim-v1.0.0-5m`` (downloaded on first use by
mattersim's own ``download_checkpoint`` into mattersim's own cache, ``~/.local/mattersim/pretrained_models``, exactly
where ``mattersim.forcefield.Potential.from_checkpoint`` looks) and ``mattersim:PATH`` (a checkpoint written by
mattersim's ``Potential.save``, e.g. its own fine-tuning script's ``best_model.pth``) into a :class:`MattersimPotential`.
Both go through one loader: the checkpoint is a ``torch.save`` dict (``model_name``, ``model_args``, ``model`` state
dict, optimizer / EMA / scheduler states), read with ``weights_only=True``; only a file that needs more than tensors and
plain data is unpickled, and then only with ``trust`` (``--trust-model``). mattersim 1.2.5 requires Python >= 3.12 and
1.2.3's declared torchvision / torchaudio would bring another torch build, so this module is imported only inside the
``mattersim`` environment (``atomtune env build mattersim``); from the main environment the same model is reached
through :mod:`atomtune.envs.worker`.

Graphs come from mattersim's own ``GraphConvertor`` (pymatgen neighbour list, three-body indices, positions wrapped into
the cell; a non-periodic structure is put in a large box, as mattersim's calculator does) and are batched with
torch_geometric and mattersim's ``batch_to_dict``. The forward pass is mattersim's ``M3Gnet``; forces and stress are the
position and strain derivatives taken here, as mattersim's ``Potential.forward`` takes them (cell and positions times
``1 + ε``), but the stress stays in eV/Å³: mattersim's ``Potential.forward`` reports it in GPa and its ASE calculator
multiplies by ``ase.units.GPa`` again. Sign: (1/V) ∂E/∂ε, ASE's. MatterSim's M3GNet is float32 by construction (it
casts its periodic offsets and one-hot species to float32), so :meth:`MattersimPotential.double` leaves it in float32.

Blocks for freezing: ``embedding`` (species embedding, radial and spherical bases, edge encoder), ``interaction_{i}``
(``graph_conv[i]``, one M3GNet main block each), ``readout`` (the gated MLP and the per-element scale / shift). Every
layer is a ``torch.nn.Linear``, so LoRA adapts them all (``--lora-targets linear``); M3GNet sees only distances and
angles, so any update of its layers keeps it invariant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import ModelNotFoundError
from atomtune.models.base import Potential

#: The public checkpoints (what users type after ``mattersim:``, lower case) → mattersim's file names on its server.
PUBLIC_CHECKPOINTS = {
    "mattersim-v1.0.0-1m": "mattersim-v1.0.0-1M.pth",
    "mattersim-v1.0.0-5m": "mattersim-v1.0.0-5M.pth",
}
#: mattersim's own download cache (``Potential.from_checkpoint`` in mattersim 1.2.3 hard-codes it).
CACHE_FOLDER = "~/.local/mattersim/pretrained_models"
WEIGHTS_FILE = "weights.pt"
MODEL_NAME = "m3gnet"  # the only architecture mattersim 1.2.3 builds from a checkpoint


def public_checkpoint_file(checkpoint: str) -> Path | None:
    """Where mattersim caches public checkpoint ``checkpoint`` (``mattersim-v1.0.0-1m``, with or without ``.pth``, any
    case); None when it is not one of them."""
    name = checkpoint.lower().removesuffix(".pth")
    if name not in PUBLIC_CHECKPOINTS:
        return None
    return Path(CACHE_FOLDER).expanduser() / PUBLIC_CHECKPOINTS[name]


class MattersimPotential(Potential):
    """A MatterSim M3GNet (mattersim 1.2.3) behind the batched Potential protocol."""

    backbone = "mattersim"
    # benchmarks/bench_envs_mattersim.py: 4 gives 1.6x (5-atom cells) over mattersim's calculator loop at the 1M model's
    # size and CPU-time parity at 40 atoms, where 8 was no better; 8 wins only on the tiny test model's small cells.
    cpu_batch_size = 4
    gpu_batch_size = 32

    def __init__(self, checkpoint: str, model: torch.nn.Module):
        super().__init__(checkpoint)
        self.model = model
        from mattersim.datasets.utils.convertor import GraphConvertor

        arguments = model.get_model_args()
        self._convertor = GraphConvertor(MODEL_NAME, float(arguments["cutoff"]), True,
                                         float(arguments["threebody_cutoff"]))

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> MattersimPotential:
        """A public checkpoint by name (downloaded by mattersim on first use) or a local mattersim checkpoint file."""
        cached = public_checkpoint_file(checkpoint)
        if cached is not None:
            if not cached.is_file():
                _download(cached)
            path, public = cached, True
        else:
            path, public = Path(checkpoint), False
            if not path.is_file():
                raise ModelNotFoundError(
                    f"{checkpoint}: MatterSim checkpoint not found; give a file written by mattersim's Potential.save "
                    f"(e.g. its fine-tuning script's best_model.pth) or a public checkpoint: "
                    f"{', '.join(PUBLIC_CHECKPOINTS)}."
                )
        # The public checkpoints come from mattersim's own download, as trusted as the installed package.
        content = _read_checkpoint(path, trust=trust or public)
        return cls(checkpoint, build_model(content, str(path)))

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        cached = public_checkpoint_file(checkpoint)
        return (cached if cached is not None else Path(checkpoint)).is_file()

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        if public_checkpoint_file(checkpoint) is not None:
            # MatterSim-v1 is trained across the periodic table; its species embedding covers Z = 1…94 (max_z).
            return frozenset(chemical_symbols[1:95])
        raise ModelNotFoundError(f"{checkpoint}: elements of a local MatterSim file are known only after loading it.")

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        """Elements the model's normaliser knows (MatterSim's ``AtomScaling``, fitted per element on the training set):
        a non-zero energy scale and, when the model has per-element energy references at all, a fitted one (above 1 µeV:
        the regression leaves ~1e-17 eV on elements it never saw). Every element of the species embedding (Z ≤
        ``max_z``) when the normaliser carries no per-element information."""
        max_z = int(self.model.get_model_args()["max_z"])
        scale = self.model.normalizer.scale.detach().cpu()
        shift = self.model.normalizer.shift.detach().cpu()
        fitted = shift.abs() > 1e-6
        seen = (scale != 0) & fitted if bool(fitted.any()) else scale != 0
        numbers = [z for z in torch.nonzero(seen).flatten().tolist() if 1 <= z <= max_z] or range(1, max_z + 1)
        return frozenset(chemical_symbols[z] for z in numbers if z < len(chemical_symbols))

    @property
    def cutoff(self) -> float:
        return float(self.model.get_model_args()["cutoff"])

    def double(self) -> MattersimPotential:
        """Unchanged: MatterSim's M3GNet casts its periodic offsets and one-hot species to float32 inside its forward, so
        float64 weights would fail there; the model stays float32 (as mattersim always runs it)."""
        return self

    def to(self, *args, **kwargs) -> MattersimPotential:
        """Moves to a device; a float64 request is ignored, as in :meth:`double` (the fine-tuning loop asks for its
        ``dtype`` setting with ``potential.to(dtype)``)."""
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        moved = super().to(device=device, non_blocking=non_blocking) if device is not None else self
        self.model.device = str(self.device)  # M3Gnet and its normaliser keep the device name they were built on
        return moved

    def featurize(self, atoms: Atoms):
        """mattersim's graph for one structure (its ``GraphConvertor``: neighbour list within the cutoff, three-body
        indices within the three-body cutoff, positions wrapped into the cell)."""
        return self._convertor.convert(atoms.copy())

    def collate(self, graphs: Sequence):
        from mattersim.forcefield.potential import batch_to_dict
        from torch_geometric.data import Batch

        return batch_to_dict(Batch.from_data_list(list(graphs)), device=self.device)

    def compute(self, data, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) from mattersim's M3Gnet."""
        inputs = dict(data)  # the strained cell and positions go into a copy: a batch can be computed again
        positions = inputs["atom_pos"].detach().requires_grad_(forces)
        cell = inputs["cell"]
        strain = None
        if stress:
            strain = torch.zeros_like(cell, requires_grad=True)
            deformation = torch.eye(3, dtype=cell.dtype, device=cell.device) + strain
            inputs["cell"] = cell @ deformation
            inputs["atom_pos"] = torch.einsum("bi,bij->bj", positions, deformation[inputs["batch"]])
        else:
            inputs["atom_pos"] = positions
        with self.weights_without_gradients():  # inference: derivatives with respect to positions and strain only
            energy = self.model(inputs)
        # (1/V) ∂E/∂ε in eV/Å³ (mattersim's own forward divides this by ase.units.GPa to report GPa)
        return self.energy_derivatives(energy, positions, strain, cell, forces, stress)

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding``, ``interaction_0`` … ``interaction_{L-1}`` (M3GNet main blocks), ``readout``."""
        model = self.model
        embedding = torch.nn.ModuleDict(
            {"atom_embedding": model.atom_embedding, "rbf": model.rbf, "sbf": model.sbf,
             "edge_encoder": model.edge_encoder}
        )
        blocks: list[tuple[str, torch.nn.Module]] = [("embedding", embedding)]
        blocks += [(f"interaction_{i}", block) for i, block in enumerate(model.graph_conv)]
        blocks.append(("readout", torch.nn.ModuleDict({"final": model.final, "normalizer": model.normalizer})))
        return blocks

    def atom_features(self, data) -> torch.Tensor:
        """Atom features ``(N, units)`` after the last main block (the input of the gated-MLP readout)."""
        captured = {}
        handle = self.model.final.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
        try:
            with torch.no_grad():
                self.model(dict(data))
        finally:
            handle.remove()
        return captured["x"].detach()

    def backbone_version(self) -> str:
        from importlib.metadata import version

        return version("mattersim")

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """The weights as a tensors-only state dict; the architecture (mattersim's ``model_args``) goes into the JSON
        metadata, so loading rebuilds the M3Gnet from plain data and never unpickles."""
        state = {key: value.detach().cpu().clone() for key, value in self.model.state_dict().items()}
        torch.save(state, Path(directory) / WEIGHTS_FILE)
        return {"file": WEIGHTS_FILE, "model_name": MODEL_NAME, "model_args": _plain_model_args(self.model)}

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> MattersimPotential:
        """Rebuild from ``model_args`` (JSON) and the tensors-only weights; ``trust`` is not needed."""
        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        state = load_tensors(Path(directory) / weights["file"], "MatterSim weights", own_file=True)
        content = {"model_name": weights.get("model_name", MODEL_NAME), "model_args": weights.get("model_args"),
                   "model": state}
        return cls(metadata["checkpoint"], build_model(content, str(directory), strict=True))


def _plain_model_args(model: torch.nn.Module) -> dict:
    """mattersim's ``model_args`` as JSON numbers (they are ints and floats in every mattersim checkpoint)."""
    return {key: (value.item() if hasattr(value, "item") else value) for key, value in model.get_model_args().items()}


def _download(target: Path) -> None:
    """mattersim's own download of a public checkpoint into its own cache folder (``target``'s directory)."""
    from mattersim.utils.download_utils import download_checkpoint

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_checkpoint(target.name, save_folder=str(target.parent))
    except Exception as error:  # noqa: BLE001 — requests raises its own hierarchy; any failure means "not here"
        target.unlink(missing_ok=True)
        raise ModelNotFoundError(
            f"{target.name}: mattersim could not download this checkpoint ({type(error).__name__}: "
            f"{str(error)[:200]}). It comes from raw.githubusercontent.com/microsoft/mattersim; on a machine without "
            f"internet, copy the file to {target}."
        ) from None


def _read_checkpoint(path: Path, trust: bool) -> dict:
    """A mattersim checkpoint dict, read with ``weights_only=True``; a file that needs more is unpickled only with
    ``trust``."""
    from atomtune.loading import UnsafeFileError, load_pickle, load_tensors

    try:
        content = load_tensors(path, "MatterSim checkpoint")
    except UnsafeFileError:
        if not trust:
            raise
        content = load_pickle(path, "MatterSim checkpoint", trust=True)
    return content


def build_model(content, source: str, strict: bool = False) -> torch.nn.Module:
    """mattersim's M3Gnet from a checkpoint's content (``model_name``, ``model_args``, ``model`` state dict).

    ``strict=False`` follows mattersim's own loader (``load_state_dict(strict=False)``), except that a checkpoint which
    lacks a *parameter* of the model it describes is refused rather than silently left at random initial values.
    """
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet

    if not (isinstance(content, dict) and isinstance(content.get("model_args"), dict)
            and isinstance(content.get("model"), dict)):
        keys = sorted(map(str, content))[:8] if isinstance(content, dict) else type(content).__name__
        raise ModelNotFoundError(
            f"{source}: not a MatterSim checkpoint (expected a dict with model_name, model_args and model, found "
            f"{keys}). A model of another backbone loads by its own name or path (`atomtune models`)."
        )
    if str(content.get("model_name", MODEL_NAME)).lower() != MODEL_NAME:
        raise ModelNotFoundError(
            f"{source}: a MatterSim checkpoint of architecture {content['model_name']!r}; mattersim 1.2.3 (and atomtune) "
            f"build only {MODEL_NAME!r} models."
        )
    arguments = dict(content["model_args"])
    bad = {key: value for key, value in arguments.items()
           if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value))}
    if bad:
        raise ModelNotFoundError(f"{source}: MatterSim model_args must be numbers; found {bad}.")
    try:
        model = M3Gnet(device="cpu", **arguments)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelNotFoundError(f"{source}: MatterSim model_args {arguments} do not build an M3Gnet ({error}).") from None
    try:
        missing, _ = model.load_state_dict(content["model"], strict=strict)
    except RuntimeError as error:
        raise ModelNotFoundError(
            f"{source}: weights do not fit the M3Gnet described by its model_args ({str(error).splitlines()[0][:300]})."
        ) from None
    parameters = {name for name, _ in model.named_parameters()}
    absent = sorted(set(missing) & parameters)
    if absent:
        raise ModelNotFoundError(
            f"{source}: the checkpoint lacks {len(absent)} parameter(s) of its M3Gnet ({', '.join(absent[:4])}…); it "
            f"is incomplete or not a MatterSim model."
        )
    model.eval()
    return model
