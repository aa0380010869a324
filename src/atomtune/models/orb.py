"""ORB (orb-models 0.5.5) behind the Potential protocol; runs in the ``orb`` environment.

The registry resolves ``orb:NAME`` (or the bare ``NAME``) for ORB's public conservative checkpoints
(``orb-v3-conservative-inf-omat`` and friends: built and downloaded by ``orb_models.forcefield.pretrained``, cached by
``cached_path``) and ``orb:ARCHITECTURE@WEIGHTS`` for a local ORB checkpoint, into an :class:`OrbPotential`. An ORB
checkpoint file holds weights only (``torch.save(model.state_dict())``, what ORB's ``finetune.py`` writes and what its
bucket serves), so a local file needs its architecture named: a public checkpoint name (``orb:orb-v3-conservative-inf-
omat@./ckpts/checkpoint_epoch9.ckpt``, a model ORB's own fine-tuning produced) or a JSON file with the arguments of
``orb_v3_conservative_architecture`` (how the tests describe their small model). Weights load through ORB's own
``pretrained.load_model`` (``torch.load(weights_only=True)``, strict); a file that holds pickled Python objects loads only
with ``trust``. orb-models 0.7 needs Python >= 3.12, so the environment holds 0.5.5 (see envs/specs.py); this module is
imported only inside it, and the main environment reaches it through :mod:`atomtune.envs.worker`.

Conservative only: energies come from ORB's ``ConservativeForcefieldRegressor`` forward, forces and stress are ORB's own
autograd derivatives of that energy (positions; a symmetric strain ``ε`` applied to positions and cell): ``-dE/dr`` in
eV/Å and ``(1/V) dE/dε`` in eV/Å³, which is ASE's sign (negative under compression), in Voigt order xx, yy, zz, yz, xz, xy
— ORB's ASE calculator passes them through unchanged. ORB's *direct* models (``orb-v3-direct-*``, ``orb-v2``, the D3/D4
variants) predict forces and stress with separate heads that are not derivatives of the energy; atomtune refuses them with
the conservative checkpoint to use instead. A conservative model's extra heads (``confidence``, ORB's per-atom force-error
classifier) and the GNS node decoder do not enter the energy: atomtune keeps their weights as loaded and never trains them.

Blocks for freezing: ``embedding`` (atom embedding, edge/node encoder), ``interaction_{i}`` (ORB's attention
message-passing layers ``model.gnn_stacks[i]``), ``readout`` (energy head MLP, its normaliser, the ZBL pair repulsion, the
fixed per-element reference energies). LoRA adapts the ``torch.nn.Linear`` layers of the MLPs, attention gates and the
energy head. ORB's per-element reference energies (``heads.energy.reference``) stay frozen, as ORB's own fine-tuning
leaves them by default; atomtune's E0 re-estimation adds its shift on top.
"""

from __future__ import annotations

import difflib
import inspect
import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.base import Potential

WEIGHTS_FILE = "weights.pt"
WEIGHTS_SUFFIXES = (".ckpt", ".pt", ".pth")
#: The only ORB architecture builder an architecture JSON may name (never an arbitrary function from a file).
ARCHITECTURE_BUILDER = "orb_v3_conservative_architecture"
#: OMat24 / MPtrj + Alexandria coverage, as atomtune lists other models trained on these sets (H … Ac).
MATERIALS_ELEMENTS = frozenset(chemical_symbols[1:90])
#: ORB's public conservative checkpoints (orb_models.forcefield.pretrained.ORB_PRETRAINED_MODELS keys) → elements.
CONSERVATIVE_CHECKPOINTS: dict[str, frozenset[str]] = {
    "orb-v3-conservative-inf-omat": MATERIALS_ELEMENTS,
    "orb-v3-conservative-20-omat": MATERIALS_ELEMENTS,
    "orb-v3-conservative-inf-mpa": MATERIALS_ELEMENTS,
    "orb-v3-conservative-20-mpa": MATERIALS_ELEMENTS,
}
#: The GNS modules that carry the message passing (blocks interaction_0 … interaction_{L-1}).
INTERACTION_MODULE = "gnn_stacks"


def _pretrained_models() -> dict:
    from orb_models.forcefield.pretrained import ORB_PRETRAINED_MODELS

    return ORB_PRETRAINED_MODELS


def _refuse_direct(name: str) -> None:
    raise AtomtuneError(
        f"{name} is a direct ORB model: its forces and stress come from separate heads, not from the energy, and "
        f"atomtune runs conservative models only (forces −dE/dr, stress from the strain derivative). Use "
        f"{', '.join(f'orb:{n}' for n in CONSERVATIVE_CHECKPOINTS)}."
    )


class OrbPotential(Potential):
    """An ORB v3 conservative model (orb-models 0.5.5) behind the batched Potential protocol."""

    backbone = "orb"
    # Measured on the tiny test model, 4-8-atom cells (benchmarks/bench_envs_orb.py, docs/performance.md): 4 gives 3.2x and
    # 8 gives 3.9x over ORB's calculator loop. 4 is a middle ground: a foundation-size ORB (latent 256, 5 layers) on
    # larger cells gains less from batching and needs more memory per batch (not measured here, no weights offline).
    cpu_batch_size = 4
    gpu_batch_size = 32

    def __init__(self, checkpoint: str, regressor: torch.nn.Module, architecture: dict, elements: frozenset[str]):
        super().__init__(checkpoint)
        self.regressor = regressor
        self.architecture = architecture  # plain JSON: {"pretrained": NAME} or {"builder": …, "arguments": …, …}
        self._elements = frozenset(elements)
        # Not part of the energy (module docstring): kept as loaded, never trained.
        for module in self._unused_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def _unused_modules(self) -> list[torch.nn.Module]:
        regressor = self.regressor
        unused = [head for name, head in regressor.heads.items() if name != regressor.energy_name]
        return unused + [regressor.model._decoder]

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> OrbPotential:
        """``NAME`` (a public conservative checkpoint, downloaded by orb-models) or ``ARCHITECTURE@WEIGHTS`` (a local
        ORB checkpoint file; ARCHITECTURE a public checkpoint name or an architecture JSON file)."""
        architecture_name, _, weights = checkpoint.partition("@")
        from_file = architecture_name.endswith(".json")
        if not weights and not from_file and (
            Path(architecture_name).suffix in WEIGHTS_SUFFIXES or Path(architecture_name).is_file()
        ):
            raise ModelNotFoundError(
                f"{checkpoint}: an ORB checkpoint file holds weights only; name its architecture before the file, e.g. "
                f"orb:orb-v3-conservative-inf-omat@{checkpoint} (the model it was fine-tuned from) or "
                f"orb:architecture.json@{checkpoint}."
            )
        if from_file:
            architecture = _read_architecture_file(Path(architecture_name))
            if not weights:
                raise ModelNotFoundError(f"{checkpoint}: an architecture file needs its weights: orb:{checkpoint}@FILE.ckpt")
        else:
            architecture = {"pretrained": _checked_name(architecture_name)}
        if weights:
            weights_file = _safe_weights_file(Path(weights), trust)
            regressor = _build(architecture, str(weights_file), what=weights)
        else:
            regressor = _build(architecture, None, what=architecture_name)
        return cls(checkpoint, regressor, architecture, _architecture_elements(architecture))

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        """Whether the weights are here: a local file, or a public checkpoint already in cached_path's cache."""
        architecture_name, _, weights = checkpoint.partition("@")
        if weights:
            return Path(weights).is_file()
        function = _pretrained_models().get(architecture_name)
        if function is None:
            return False
        from cached_path import find_latest_cached

        url = inspect.signature(function).parameters["weights_path"].default
        return find_latest_cached(url) is not None

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        architecture_name = checkpoint.partition("@")[0]
        if architecture_name in CONSERVATIVE_CHECKPOINTS:
            return CONSERVATIVE_CHECKPOINTS[architecture_name]
        if architecture_name.endswith(".json"):
            return _architecture_elements(_read_architecture_file(Path(architecture_name)))
        raise ModelNotFoundError(f"{checkpoint}: not a known ORB checkpoint; elements unknown.")

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        return self._elements

    @property
    def cutoff(self) -> float:
        return float(self.regressor.system_config.radius)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.regressor.parameters()).dtype

    def featurize(self, atoms: Atoms):
        """ORB's AtomGraphs for one structure, built by ORB's own featuriser with the model's system config (radius,
        neighbour cap) in the model's dtype, exactly as ORB's calculator builds it."""
        from orb_models.forcefield.atomic_system import ase_atoms_to_atom_graphs

        return ase_atoms_to_atom_graphs(
            atoms, system_config=self.regressor.system_config, output_dtype=self.dtype,
            graph_construction_dtype=self.dtype, device=torch.device("cpu"),
        )

    def collate(self, graphs: Sequence):
        from orb_models.forcefield.base import batch_graphs

        return batch_graphs(list(graphs)).to(device=self.device, dtype=self.dtype)

    def compute(self, data, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) from ORB's conservative
        forward (its autograd keeps the graph in training mode, so force and stress losses reach the parameters)."""
        regressor = self.regressor
        if stress and not regressor.has_stress:
            raise AtomtuneError(f"{self.name}: this ORB model computes no stress (it was built without it).")
        output = regressor(data)
        # As ORB's own predict(): the forward returns the normalised energy; its energy head maps it back to eV.
        energy = regressor.heads[regressor.energy_name].denormalize(output[regressor.energy_name], data)
        result = {"energy": energy.reshape(-1)}
        if forces:
            result["forces"] = output[regressor.grad_forces_name]
        if stress:
            voigt = output[regressor.grad_stress_name]  # (B, 6): xx, yy, zz, yz, xz, xy
            result["stress"] = voigt[:, [0, 5, 4, 5, 1, 3, 4, 3, 2]].reshape(-1, 3, 3)
        return result

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding``, ``interaction_0`` … ``interaction_{L-1}``, ``readout`` (module docstring)."""
        gns = self.regressor.model
        interactions = getattr(gns, INTERACTION_MODULE)
        embedding = {name: module for name, module in gns.named_children() if name not in (INTERACTION_MODULE, "_decoder")}
        readout = {"heads": self.regressor.heads, "decoder": gns._decoder}
        readout.update({name: module for name, module in self.regressor.named_children() if name not in ("model", "heads")})
        groups = [("embedding", embedding)]
        groups += [(f"interaction_{k}", {"layer": layer}) for k, layer in enumerate(interactions)]
        groups.append(("readout", readout))
        return [(name, torch.nn.ModuleDict(modules)) for name, modules in groups if modules]

    def atom_features(self, data) -> torch.Tensor:
        """Node latents ``(N, latent_dim)`` after ORB's last message-passing layer (edge vectors from featurisation)."""
        return self.regressor.model(data)["node_features"].detach()

    def backbone_version(self) -> str:
        from importlib.metadata import version

        return version("orb-models")

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """The current weights as a tensors-only state dict plus the architecture as plain JSON (in the metadata)."""
        state = {key: value.detach().cpu().clone() for key, value in self.regressor.state_dict().items()}
        torch.save(state, Path(directory) / WEIGHTS_FILE)
        return {"file": WEIGHTS_FILE, "architecture": self.architecture, "elements": sorted(self._elements),
                "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> OrbPotential:
        """Rebuild from the architecture JSON and the tensors-only weights (nothing is unpickled; ``trust`` unused)."""
        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        weights_file = Path(directory) / weights["file"]
        load_tensors(weights_file, "ORB weights", own_file=True)  # the clear error for a damaged or foreign file
        architecture = _checked_architecture(weights["architecture"], where=str(Path(directory) / "atomtune.json"))
        regressor = _build(architecture, str(weights_file), what=str(weights_file))
        elements = frozenset(weights.get("elements") or _architecture_elements(architecture))
        return cls(metadata["checkpoint"], regressor, architecture, elements)


# -- loading ---------------------------------------------------------------------------------------------------------
def _checked_name(name: str) -> str:
    models = _pretrained_models()
    if name in CONSERVATIVE_CHECKPOINTS:
        return name
    if name in models:
        _refuse_direct(name)
    close = difflib.get_close_matches(name, list(CONSERVATIVE_CHECKPOINTS) + list(models), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(f'orb:{c}' for c in close)}?" if close else ""
    raise ModelNotFoundError(
        f"unknown ORB checkpoint {name!r}.{hint} Public ORB checkpoints atomtune runs: "
        f"{', '.join(CONSERVATIVE_CHECKPOINTS)}; a local ORB checkpoint file loads as orb:NAME@PATH."
    )


def _read_architecture_file(path: Path) -> dict:
    try:
        architecture = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path}: ORB architecture file not found.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelNotFoundError(f"{path}: not an ORB architecture JSON file ({error}).") from None
    return _checked_architecture(architecture, where=str(path))


def _checked_architecture(architecture, where: str) -> dict:
    if isinstance(architecture, dict) and "pretrained" in architecture:
        _checked_name(architecture["pretrained"])
        return architecture
    if not isinstance(architecture, dict) or architecture.get("builder") != ARCHITECTURE_BUILDER:
        raise ModelNotFoundError(
            f"{where}: not an ORB architecture description (expected {{\"builder\": \"{ARCHITECTURE_BUILDER}\", "
            f"\"arguments\": {{…}}, \"system_config\": {{\"radius\": …, \"max_num_neighbors\": …}}, \"elements\": […]}})."
        )
    return architecture


def _architecture_elements(architecture: dict) -> frozenset[str]:
    if "pretrained" in architecture:
        return CONSERVATIVE_CHECKPOINTS[architecture["pretrained"]]
    return frozenset(architecture.get("elements") or chemical_symbols[1:119])


def _safe_weights_file(path: Path, trust: bool) -> Path:
    """``path`` when it holds tensors only; a pickled file only with ``trust``, converted to its state dict first."""
    from atomtune.loading import TRUST_HINT, UnsafeFileError, load_tensors

    if not path.is_file():
        raise ModelNotFoundError(f"{path}: ORB checkpoint file not found.")
    try:
        load_tensors(path, "ORB checkpoint")
        return path
    except UnsafeFileError:
        if not trust:
            raise UnsafeFileError(
                f"{path}: this ORB checkpoint holds pickled Python objects, not only tensors (ORB's own checkpoints are "
                f"plain state dicts); loading it could run code, so it was not loaded. If you trust it, pass {TRUST_HINT}."
            ) from None
    content = torch.load(path, map_location="cpu", weights_only=False)  # the user trusts this file
    state = content.state_dict() if isinstance(content, torch.nn.Module) else content
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelNotFoundError(f"{path}: holds a {type(content).__name__}, not an ORB model or state dict.")
    converted = Path(tempfile.mkdtemp(prefix="atomtune-orb-")) / "weights.pt"
    torch.save({key: value for key, value in state.items() if isinstance(value, torch.Tensor)}, converted)
    return converted


def _build(architecture: dict, weights_path: str | None, what: str) -> torch.nn.Module:
    """ORB's own construction and loading: a public checkpoint's function from orb_models.forcefield.pretrained (it
    downloads when ``weights_path`` is None), or orb_v3_conservative_architecture + pretrained.load_model."""
    from orb_models.forcefield import pretrained
    from orb_models.forcefield.atomic_system import SystemConfig

    # float32 without TF32 (orb's "float32-highest"); compile off: ORB refuses to compile a conservative model that
    # trains, and atomtune's fine-tuning needs it trainable (train=True keeps requires_grad; eval() follows).
    options = {"device": "cpu", "precision": "float32-highest", "compile": False, "train": True}
    try:
        with warnings.catch_warnings():
            # orb's load_model warns that it sets torch's default dtype (float32 here, as it already is) on every load
            warnings.filterwarnings("ignore", message=".*default dtype.*")
            warnings.filterwarnings("ignore", message=".*precision=float32-high.*")
            if "pretrained" in architecture:
                function = _pretrained_models()[architecture["pretrained"]]
                regressor = function(**options) if weights_path is None else function(weights_path=weights_path, **options)
            else:
                system_config = SystemConfig(**architecture["system_config"])
                model = getattr(pretrained, ARCHITECTURE_BUILDER)(
                    **architecture.get("arguments", {}), device="cpu", system_config=system_config
                )
                regressor = pretrained.load_model(model, weights_path, **options)
    except OSError as error:  # requests' ConnectionError / HTTPError are OSErrors: the download failed
        if weights_path is not None:
            raise ModelNotFoundError(f"{what}: could not read the ORB checkpoint ({error}).") from None
        url = inspect.signature(_pretrained_models()[architecture["pretrained"]]).parameters["weights_path"].default
        raise ModelNotFoundError(
            f"{what}: downloading its weights from {url} failed ({type(error).__name__}: {str(error)[:200]}). The "
            f"first use needs internet; cached_path keeps the file under ~/.cache/cached_path afterwards (or "
            f"$CACHED_PATH_CACHE_ROOT), and orb:{what}@PATH loads a copy you downloaded yourself."
        ) from None
    except (RuntimeError, KeyError, TypeError) as error:
        raise ModelNotFoundError(
            f"{what}: not an ORB checkpoint of this architecture ({type(error).__name__}: {str(error)[:300]}). A model "
            f"of another backbone loads by its own name or path (`atomtune models`)."
        ) from None
    regressor.eval()
    return regressor
