"""Registry of backbones and named checkpoints: resolves what a user types after ``--model`` into a Potential.

``chgnet-0.3.0`` / ``sevennet-0`` (weights ship inside the PyPI wheels, offline), ``mace-mp-0`` (downloaded by mace's own
loader when online), a local ``*.model`` MACE file, or a directory written by :meth:`Potential.save` (a fine-tuned model).
One file per backbone lives beside this one; each defines a Potential subclass with ``from_checkpoint(checkpoint)``,
``checkpoint_available(checkpoint)`` and ``checkpoint_elements(checkpoint)``.
"""

from __future__ import annotations

import difflib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from atomtune.exceptions import ModelNotFoundError

#: The file that marks a directory as a model saved by atomtune (:meth:`Potential.save`).
METADATA_FILE = "atomtune.json"

#: backbone family → "module:Class"
BACKBONES: dict[str, str] = {
    "chgnet": "atomtune.models.chgnet:ChgnetPotential",
    "sevennet": "atomtune.models.sevennet:SevennetPotential",
    "mace": "atomtune.models.mace:MacePotential",
    "sevennet-mf": "atomtune.models.sevennet_mf:SevennetMultiFidelityPotential",
    "nequip": "atomtune.models.nequip:NequipPotential",  # imported only inside the nequip environment
    "uma": "atomtune.models.uma:UmaPotential",  # imported only inside the uma environment
    "pet": "atomtune.models.pet:PetPotential",  # imported only inside the pet environment
    "mattersim": "atomtune.models.mattersim:MattersimPotential",  # imported only inside the mattersim environment
    "orb": "atomtune.models.orb:OrbPotential",  # imported only inside the orb environment
    "committee": "atomtune.uncertainty.committee:CommitteePotential",  # a saved committee directory (issue 12)
}


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # what users type: --model chgnet-0.3.0
    backbone: str
    checkpoint: str  # the backbone's own identifier
    offline: bool  # weights ship inside the backbone's PyPI wheel
    description: str


CHECKPOINTS: list[CheckpointInfo] = [
    CheckpointInfo("chgnet-0.3.0", "chgnet", "0.3.0", True, "CHGNet 0.3.0 (MPtrj, PBE/PBE+U); default CHGNet"),
    CheckpointInfo("chgnet-0.2.0", "chgnet", "0.2.0", True, "CHGNet 0.2.0 (MPtrj, PBE/PBE+U)"),
    CheckpointInfo("chgnet-r2scan", "chgnet", "r2scan", True, "CHGNet fine-tuned on MP r2SCAN"),
    CheckpointInfo("sevennet-0", "sevennet", "7net-0", True, "SevenNet-0 (11Jul2024, MPtrj, PBE/PBE+U)"),
    CheckpointInfo("sevennet-l3i5", "sevennet", "7net-l3i5", True, "SevenNet-l3i5 (MPtrj, lmax 3, 5 layers)"),
    CheckpointInfo("mace-mp-0", "mace", "medium", False, "MACE-MP-0 medium (MPtrj); downloaded on first use"),
    CheckpointInfo("mace-mp-0-small", "mace", "small", False, "MACE-MP-0 small (MPtrj); downloaded on first use"),
    CheckpointInfo("mace-mp-0-large", "mace", "large", False, "MACE-MP-0 large (MPtrj); downloaded on first use"),
    CheckpointInfo("mace-mpa-0", "mace", "medium-mpa-0", False, "MACE-MPA-0 medium (MPtrj + sAlex); downloaded"),
    CheckpointInfo("mace-omat-0", "mace", "medium-omat-0", False, "MACE-OMAT-0 medium (OMat24); downloaded"),
    CheckpointInfo("mace-matpes-pbe-0", "mace", "mace-matpes-pbe-0", False,
                   "MACE-MATPES-PBE-0 (MatPES PBE); downloaded on first use"),
    CheckpointInfo("mace-matpes-r2scan-0", "mace", "mace-matpes-r2scan-0", False,
                   "MACE-MATPES-r2SCAN-0 (MatPES r2SCAN); downloaded on first use"),
    CheckpointInfo("sevennet-mf-0", "sevennet-mf", "7net-mf-0:PBE", True, "SevenNet-MF-0, PBE(+U) fidelity (MPtrj)"),
    CheckpointInfo(
        "sevennet-mf-0-r2scan", "sevennet-mf", "7net-mf-0:R2SCAN", True, "SevenNet-MF-0, r2SCAN fidelity (MP r2SCAN)"
    ),
    CheckpointInfo(
        "sevennet-mf-ompa", "sevennet-mf", "7net-mf-ompa:mpa", False, "SevenNet-MF-ompa, MPtrj+sAlex fidelity; downloaded"
    ),
    CheckpointInfo(
        "sevennet-mf-ompa-omat24", "sevennet-mf", "7net-mf-ompa:omat24", False, "SevenNet-MF-ompa, OMat24 fidelity; downloaded"
    ),
    CheckpointInfo("sevennet-omat", "sevennet", "7net-omat", False, "SevenNet-omat (OMat24); sevenn downloads it"),
    CheckpointInfo("sevennet-omni", "sevennet-mf", "7net-omni:mpa", False, "SevenNet-Omni, MPtrj+sAlex fidelity; downloaded"),
]

ALIASES = {"chgnet": "chgnet-0.3.0", "sevennet": "sevennet-0", "7net-0": "sevennet-0", "mace": "mace-mp-0"}


def backbone_class(backbone: str):
    """The Potential subclass of a backbone family (imported lazily: each backbone's package is heavy)."""
    try:
        module_name, class_name = BACKBONES[backbone].split(":")
    except KeyError:
        raise ModelNotFoundError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def find_checkpoint(name: str) -> CheckpointInfo | None:
    name = ALIASES.get(name, name)
    return next((info for info in CHECKPOINTS if info.name == name), None)


def load_potential(spec: str, device: str = "cpu", dtype: str = "float32", trust: bool = False):
    """Resolve ``spec`` (checkpoint name, ``*.model`` / ``.pth`` file or saved directory) into a Potential on ``device``.

    ``trust``: the user trusts ``spec``'s files, so formats that are pickles by design (a MACE ``*.model``) may load;
    atomtune's own directories and the named checkpoints never need it (:mod:`atomtune.loading`).
    A model of a family with its own environment (``nequip:PATH``) comes back as the adapter inside that environment and
    as a worker-backed model (:class:`atomtune.envs.worker.WorkerModel`) anywhere else.
    """
    import torch

    from atomtune.envs.worker import load_in_environment

    in_environment = load_in_environment(spec, dtype=dtype, trust=trust)
    if in_environment is not None and not isinstance(in_environment, torch.nn.Module):
        return in_environment

    path = Path(spec)
    if in_environment is not None:
        potential = in_environment
    elif path.is_dir():
        metadata = read_metadata(path)
        try:
            potential = backbone_class(metadata["backbone"]).load_weights(path, metadata, trust=trust)
        except KeyError as error:
            raise ModelNotFoundError(
                f"{path / METADATA_FILE}: incomplete model metadata (no {error}); the directory was not written "
                f"completely by atomtune. Write the model again."
            ) from None
        potential.set_element_energy_shift(metadata.get("element_energy_shift", {}))
        potential.training_history = list(metadata.get("training_history", []))
    elif path.suffix in (".model", ".pt", ".pth"):
        if not path.exists():
            raise ModelNotFoundError(f"{path}: model file not found.")
        # MACE saves whole pickled models (.model / .pt); SevenNet's checkpoints are .pth files.
        backbone = "sevennet" if path.suffix == ".pth" else "mace"
        potential = backbone_class(backbone).from_checkpoint(str(path), trust=trust)
    else:
        info = find_checkpoint(spec)
        if info is None:
            names = [info.name for info in CHECKPOINTS] + list(ALIASES)
            close = difflib.get_close_matches(spec, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"unknown model {spec!r}.{hint} `atomtune models` lists the checkpoints; a path to a MACE .model "
                f"file or a directory saved by atomtune also works."
            )
        potential = backbone_class(info.backbone).from_checkpoint(info.checkpoint)
    potential = potential.to(device)
    if dtype == "float64":
        potential = potential.double()
    elif dtype == "float32":
        # Backbones load in the dtype their file was saved in (MACE foundation models and *.model files: float64).
        potential = potential.float()
    else:
        raise ModelNotFoundError(f"dtype {dtype!r} not supported: use float32 or float64.")
    potential.element_energy_shift.data = potential.element_energy_shift.data.to(torch.float64)
    return potential


def read_metadata(directory: Path) -> dict:
    """``DIR/atomtune.json`` of a saved model, checked: present, JSON, a mapping with a known backbone and weights."""
    meta_file = Path(directory) / METADATA_FILE
    if not meta_file.is_file():
        raise ModelNotFoundError(
            f"{directory}: directory has no {METADATA_FILE}; it is not a model saved by atomtune "
            f"(`atomtune finetune --out DIR` writes one)."
        )
    try:
        metadata = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(
            f"{meta_file}: not valid JSON ({error}); the file is truncated or was edited by hand. Restore it, or write "
            f"the model again."
        ) from None
    if not isinstance(metadata, dict):
        raise ModelNotFoundError(f"{meta_file}: holds a {type(metadata).__name__}, not the model's metadata mapping.")
    missing = [key for key in ("backbone", "checkpoint", "weights") if key not in metadata]
    if missing:
        raise ModelNotFoundError(
            f"{meta_file}: incomplete model metadata (missing {', '.join(missing)}); the directory was not written "
            f"completely by atomtune. Write the model again."
        )
    if metadata["backbone"] not in BACKBONES:
        raise ModelNotFoundError(
            f"{meta_file}: unknown backbone {metadata['backbone']!r}; this atomtune knows {', '.join(BACKBONES)}."
        )
    if not isinstance(metadata["weights"], dict):
        raise ModelNotFoundError(f"{meta_file}: 'weights' must be a mapping; the metadata is damaged.")
    return metadata


def available_models() -> list[dict]:
    """Rows for ``atomtune models``: name, backbone, whether usable offline now, description."""
    rows = []
    for info in CHECKPOINTS:
        try:
            available = backbone_class(info.backbone).checkpoint_available(info.checkpoint)
            status = "offline" if available else ("download on first use" if not info.offline else "missing")
        except ImportError as error:
            status = f"backbone not installed ({error.name})"
        rows.append({"name": info.name, "backbone": info.backbone, "status": status, "description": info.description})
    return rows


def backbones_covering(elements) -> dict[str, bool]:
    """For each named checkpoint: does it cover all ``elements``? (Used in unsupported-element errors.)"""
    covering = {}
    for info in CHECKPOINTS:
        try:
            known = backbone_class(info.backbone).checkpoint_elements(info.checkpoint)
        except Exception:  # a backbone that is not installed cannot be suggested
            continue
        covering[info.name] = set(elements) <= set(known)
    return covering
