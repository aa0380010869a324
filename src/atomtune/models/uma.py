"""UMA (fairchem-core 2.x) behind the Potential protocol; runs in the ``uma`` environment (``atomtune env build uma``).

What ``--model`` takes:

- ``uma-s-1p1``, ``uma-m-1p1``, ``uma-s-1p2``, ``uma-s-1p2p1`` (the names the uma spec lists; ``uma:NAME`` takes any name
  in fairchem's ``pretrained_mlip.available_models``), downloaded from Hugging Face (``facebook/UMA``) by fairchem's own
  ``pretrained_mlip`` loader into its cache and, like every backbone's named checkpoints, loaded without
  ``--trust-model``. The repository is gated: accept its licence on huggingface.co/facebook/UMA, then ``hf auth login``
  or set ``HF_TOKEN``.
- ``uma:PATH.pt`` for a local fairchem inference checkpoint (a pickle by design: loads only with ``--trust-model``).
- A task suffix chooses the UMA task (level of theory): ``uma-s-1p1:omat`` (the default: OMat24, PBE/PBE+U bulk
  materials, the one to fine-tune on bulk PBE data), ``:omol`` (ωB97M-V molecules), ``:oc20`` (catalysis), ``:odac``
  (MOFs), ``:omc`` (molecular crystals). UMA has one shared energy head; the task selects the dataset embedding (which
  routes the mixture of linear experts) and that task's energy normaliser and element references.

The model is fairchem's own ``HydraModel`` (an ``eSCNMDMoeBackbone`` with an ``MLP_EFS_Head``) built from the checkpoint by
fairchem's ``load_inference_model`` with its batched inference settings (mixture of experts not merged, not compiled),
so a batch may mix compositions. Forces and stress come from fairchem's own autograd head (``create_graph`` while
training) in eV/Å and eV/Å³ with ASE's sign (fairchem's FAIRChemCalculator passes them to ASE unchanged). Energies are
denormalised and given back their element references exactly as fairchem's ``MLIPPredictUnit`` does.

Saved models (``Potential.save``) hold the architecture and task configuration as JSON (only ``fairchem.core`` classes
may be named in it; they are checked before anything is built) and the weights as a tensors-only state dict.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError, ModelNotFoundError
from atomtune.models.base import Potential

FAMILY_PREFIX = "uma:"
#: UMA's tasks (fairchem's UMATask values); omat first: the default, for bulk PBE/PBE+U data
TASKS = ("omat", "omol", "oc20", "odac", "omc", "oc25")
DEFAULT_TASK = "omat"
HUGGING_FACE_REPOSITORY = "facebook/UMA"
GATED_STEP = (
    f"UMA checkpoints are gated on Hugging Face: accept the licence on huggingface.co/{HUGGING_FACE_REPOSITORY} with "
    f"your account, then run `hf auth login` (or set HF_TOKEN) on this machine"
)
ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "weights.pt"
#: Module paths a saved architecture may name (hydra ``_target_``, fairchem registry ``model`` / ``module`` /
#: ``head_cls``); anything else is refused before instantiation, so loading a saved model never runs arbitrary code.
ALLOWED_TARGET_PREFIXES = ("fairchem.core.",)
ALLOWED_TARGETS = ("torch.DoubleTensor", "torch.FloatTensor", "torch.tensor")
NAMED_KEYS = ("_target_", "model", "module", "head_cls")


class GatedCheckpointError(ModelNotFoundError):
    """A UMA checkpoint could not be downloaded: no Hugging Face credentials, licence not accepted, or no network."""


def split_task(checkpoint: str) -> tuple[str, str]:
    """``"uma-s-1p1:omol"`` → ``("uma-s-1p1", "omol")``; without a known task suffix the task is ``omat``."""
    checkpoint = checkpoint.removeprefix(FAMILY_PREFIX)
    name, separator, task = checkpoint.rpartition(":")
    if separator and task in TASKS:
        return name, task
    return checkpoint, DEFAULT_TASK


def inference_settings():
    """fairchem's settings for heterogeneous batches and training: experts not merged (a batch mixes compositions and
    the fine-tuning loop changes the weights), no compile, no activation checkpointing (the force loss differentiates
    through the forces), fairchem's current internal graph generation, full float32 (no TF32)."""
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    return InferenceSettings(
        tf32=False, activation_checkpointing=False, merge_mole=False, compile=False, external_graph_gen=False,
        internal_graph_gen_version=2,
    )


class UmaPotential(Potential):
    """A UMA model (fairchem-core 2.x) for one task, behind the batched Potential protocol."""

    backbone = "uma"
    # bench_envs_uma.py (1 thread, loaded 2-core machine, docs/performance.md): batching pays on the tiny test model
    # (batch 4: 2.2x fairchem's calculator loop at equal settings on 5-atom cells) but not at UMA-S's size on 40-atom
    # cells (batch 1: 0.96x in CPU time, batch 4: 0.6x in wall time; the mixture of experts merges its weights and runs
    # once per structure in a batch, and the larger edge tensors cost more per edge on CPU), so one structure per call
    cpu_batch_size = 1
    gpu_batch_size = 32

    def __init__(self, checkpoint: str, model: torch.nn.Module, model_config: dict, tasks_config: list, task: str):
        super().__init__(checkpoint)
        self.model = model  # fairchem's HydraModel: backbone + output heads
        self.model_config = model_config
        self.tasks_config = tasks_config
        available = sorted(model.dataset_to_tasks)
        if task not in available:
            raise AtomtuneError(f"{checkpoint}: UMA task {task!r} is not in this checkpoint; its tasks: {available}.")
        self.task = task
        # fairchem's Task objects of this task (energy, forces, stress); their normalisers and element references stay
        # out of the module tree so that .float() / .double() leave them in their own dtype, as MLIPPredictUnit does.
        self._tasks = {t.property: t for t in model.dataset_to_tasks[task]}
        if "energy" not in self._tasks:
            raise AtomtuneError(f"{checkpoint}: task {task!r} has no energy output.")

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, checkpoint: str, trust: bool = False) -> UmaPotential:
        """A public UMA name (downloaded by fairchem's pretrained_mlip) or a local fairchem checkpoint (needs trust),
        with an optional ``:task`` suffix (default ``omat``)."""
        from atomtune.loading import TRUST_HINT, UnsafeFileError

        name, task = split_task(checkpoint)
        if _is_public_name(name):
            path = _download(name)
        else:
            path = Path(name)
            if not path.is_file():
                close = difflib.get_close_matches(name, _public_names(), n=2)
                hint = f" Did you mean {' or '.join(close)}?" if close else ""
                raise ModelNotFoundError(
                    f"{name}: neither a public UMA checkpoint nor a file.{hint} Public names (fairchem's "
                    f"pretrained_mlip): {', '.join(_public_names())}; or give the path of a fairchem inference "
                    f"checkpoint (.pt)."
                )
            if not trust:
                raise UnsafeFileError(
                    f"{path}: a fairchem checkpoint is a Python pickle by design (torch.save of whole objects), and "
                    f"loading it runs the code it names. atomtune loads it only if you trust the file: pass {TRUST_HINT}."
                )
        inference_checkpoint = _read_inference_checkpoint(Path(path))
        model = _build_model(inference_checkpoint, str(path), use_ema=True)
        return cls(checkpoint.removeprefix(FAMILY_PREFIX), model, _plain(inference_checkpoint.model_config),
                   _plain(inference_checkpoint.tasks_config), task)

    @classmethod
    def checkpoint_available(cls, checkpoint: str) -> bool:
        name, _ = split_task(checkpoint)
        if not _is_public_name(name):
            return Path(name).is_file()
        try:
            _download(name, local_only=True)
        except GatedCheckpointError:
            return False
        return True

    @classmethod
    def checkpoint_elements(cls, checkpoint: str) -> frozenset[str]:
        name, _ = split_task(checkpoint)
        if _is_public_name(name):
            # UMA's atom embedding covers Z = 1 … 99 (max_num_elements 100); fairchem records no per-checkpoint list
            # of the elements its training data held, so this is what the model accepts, not a promise of accuracy.
            return frozenset(chemical_symbols[1:100])
        raise ModelNotFoundError(f"{checkpoint}: elements of a local UMA file are known only after loading it.")

    # -- protocol ----------------------------------------------------------------------------------------------------
    @property
    def supported_elements(self) -> frozenset[str]:
        """Elements the atom embedding covers (Z < max_num_elements); see :meth:`checkpoint_elements`."""
        count = int(self.model.backbone.max_num_elements)
        return frozenset(chemical_symbols[1:min(count, len(chemical_symbols))])

    @property
    def cutoff(self) -> float:
        return float(self.model.backbone.cutoff)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def featurize(self, atoms: Atoms):
        """fairchem's AtomicData for one structure, made as FAIRChemCalculator makes it (charge / spin defaults from
        ``atoms.info`` through the backbone's own check; the graph is built inside the model). Reference labels are left
        out: a batch needs the same fields in every structure."""
        from fairchem.core.datasets.atomic_data import AtomicData

        if len(atoms) == 1 and not atoms.pbc.any():
            # fairchem's predict unit does not run the model on an isolated atom either: it answers with the DFT
            # reference energies it downloads beside the named checkpoints (single_atom_patch).
            raise AtomtuneError(
                f"{self.name}: UMA does not compute an isolated single atom (it has no neighbours; fairchem's own "
                f"calculator answers one from the DFT atom references downloaded with the named checkpoints, not from "
                f"the model); put it in a periodic box, or leave it out."
            )
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc,
                      info={key: atoms.info[key] for key in ("charge", "spin") if key in atoms.info})
        self.model.validate_atoms_data(clean, self.task)
        return AtomicData.from_ase(
            clean, task_name=self.task, r_edges=False, r_data_keys=["spin", "charge"], target_dtype=self.dtype
        )

    def collate(self, graphs: Sequence):
        from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

        batch = atomicdata_list_to_batch(list(graphs)).to(self.device)
        dtype = self.dtype
        for key, value in batch:
            if torch.is_tensor(value) and value.is_floating_point():
                batch[key] = value.to(dtype)
        return batch

    def compute(self, data, forces: bool = True, stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies ``(B,)`` eV, forces ``(N, 3)`` eV/Å, stress ``(B, 3, 3)`` eV/Å³ (ASE sign) of this task."""
        regress = self.model.backbone.regress_config  # shared by backbone and head: what the head differentiates
        saved = (regress.forces, regress.stress)
        regress.forces, regress.stress = bool(forces or stress), bool(stress)
        try:
            with self.weights_without_gradients():  # as fairchem's MLIPPredictUnit in inference
                output = self.model(data)
        finally:
            regress.forces, regress.stress = saved
        result = {"energy": self._denormalised(output, "energy", data).reshape(-1)}
        if forces:
            result["forces"] = self._denormalised(output, "forces", data)
        if stress:
            result["stress"] = self._denormalised(output, "stress", data).reshape(-1, 3, 3)
        return result

    def _denormalised(self, output: dict, quantity: str, data) -> torch.Tensor:
        """As MLIPPredictUnit: the head's normalised value × rmsd + mean, plus the element references for energy."""
        task = self._tasks.get(quantity)
        if task is None:
            raise AtomtuneError(f"{self.name}: the checkpoint has no {quantity} output for task {self.task!r}.")
        device = output[task.name][task.property].device
        task.normalizer.to(device)
        value = task.normalizer.denorm(output[task.name][task.property])
        if task.element_references is not None:
            task.element_references.to(device)
            value = task.element_references.undo_refs(data, value)
        return value

    def blocks(self) -> list[tuple[str, torch.nn.Module]]:
        """``embedding`` (atom, charge / spin / task, edge and expert-routing embeddings), ``interaction_0`` …
        ``interaction_{L-1}`` (the eSCN-MD layers), ``readout`` (final norm and the energy head)."""
        backbone = self.model.backbone
        embedding = {
            name: module for name, module in backbone.named_children() if name not in ("blocks", "norm")
        }
        blocks = [("embedding", torch.nn.ModuleDict(embedding))]
        blocks += [(f"interaction_{i}", layer) for i, layer in enumerate(backbone.blocks)]
        blocks.append(("readout", torch.nn.ModuleDict({"norm": backbone.norm, "heads": self.model.output_heads})))
        return blocks

    def atom_features(self, data) -> torch.Tensor:
        """The invariant (l = 0) channels of the backbone's final node embedding ``(N, sphere_channels)``."""
        return self.model.backbone(data)["node_embedding"][:, 0, :].detach()

    def backbone_version(self) -> str:
        from importlib.metadata import version

        return version("fairchem-core")

    # -- persistence -------------------------------------------------------------------------------------------------
    def save_weights(self, directory: Path) -> dict:
        """The architecture and tasks as JSON (fairchem's own config) and the weights as a tensors-only state dict."""
        directory = Path(directory)
        architecture = {"model_config": self.model_config, "tasks_config": self.tasks_config}
        (directory / ARCHITECTURE_FILE).write_text(json.dumps(architecture, indent=1))
        state = {key: value.detach().cpu().clone() for key, value in self.model.state_dict().items()}
        torch.save(state, directory / WEIGHTS_FILE)
        return {"architecture": ARCHITECTURE_FILE, "file": WEIGHTS_FILE, "task": self.task,
                "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def load_weights(cls, directory: Path, metadata: dict, trust: bool = False) -> UmaPotential:
        """Rebuild from the JSON architecture (checked: fairchem classes only) and the tensors-only weights."""
        from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

        from atomtune.loading import load_tensors

        weights = metadata["weights"]
        architecture_path = Path(directory) / weights["architecture"]
        try:
            architecture = json.loads(architecture_path.read_text())
            model_config, tasks_config = architecture["model_config"], architecture["tasks_config"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelNotFoundError(
                f"{architecture_path}: not a readable UMA architecture ({type(error).__name__}: {error}); write the "
                f"model again."
            ) from None
        check_config_targets(model_config, architecture_path)
        check_config_targets(tasks_config, architecture_path)
        state = load_tensors(Path(directory) / weights["file"], "UMA weights", own_file=True)
        checkpoint = MLIPInferenceCheckpoint(
            model_config=model_config, model_state_dict=state, ema_state_dict={}, tasks_config=tasks_config
        )
        model = _build_model(checkpoint, str(architecture_path), use_ema=False)
        return cls(metadata["checkpoint"], model, model_config, tasks_config, weights.get("task", DEFAULT_TASK))


# -- fairchem's loading path ----------------------------------------------------------------------------------------
def _public_names() -> tuple[str, ...]:
    from fairchem.core.calculate.pretrained_mlip import available_models

    return tuple(available_models)


def _is_public_name(name: str) -> bool:
    return name in _public_names()


def _download(name: str, local_only: bool = False) -> str:
    """The local path of a public checkpoint through fairchem's pretrained_mlip (Hugging Face, fairchem's cache).

    Hugging Face's own errors become one :class:`GatedCheckpointError` naming the credential step."""
    from fairchem.core.calculate import pretrained_mlip
    from huggingface_hub import errors

    if local_only:
        import huggingface_hub

        entry = pretrained_mlip._MODEL_CKPTS.checkpoints[name]
        try:
            return huggingface_hub.hf_hub_download(
                filename=entry.filename, repo_id=entry.repo_id, subfolder=entry.subfolder, revision=entry.revision,
                cache_dir=pretrained_mlip.CACHE_DIR, local_files_only=True,
            )
        except (errors.LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
            raise GatedCheckpointError(f"{name} is not in fairchem's cache ({error})") from None
    try:
        return pretrained_mlip.resolve_checkpoint(name).path
    except errors.GatedRepoError:
        raise GatedCheckpointError(
            f"{name}: Hugging Face refused the download ({HUGGING_FACE_REPOSITORY} is gated and this account has no "
            f"access yet). {GATED_STEP}."
        ) from None
    except errors.RepositoryNotFoundError:
        # Without a token Hugging Face answers a gated repository with 401 "repository not found"
        raise GatedCheckpointError(
            f"{name}: Hugging Face did not serve {HUGGING_FACE_REPOSITORY} (no credentials on this machine?). "
            f"{GATED_STEP}."
        ) from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError) as error:
        raise GatedCheckpointError(
            f"{name}: could not download it from Hugging Face and it is not in fairchem's cache "
            f"({pretrained_mlip.CACHE_DIR}): {type(error).__name__}. Run once on a machine with internet access; "
            f"{GATED_STEP}."
        ) from None
    except errors.HfHubHTTPError as error:
        raise GatedCheckpointError(f"{name}: Hugging Face answered {error}. {GATED_STEP}.") from None


def _read_inference_checkpoint(path: Path):
    """fairchem's MLIPInferenceCheckpoint from ``path`` (the caller established that the file is trusted)."""
    from fairchem.core.units.mlip_unit.api.inference import MLIPInferenceCheckpoint

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 — zipfile / pickle / torch each fail their own way
        raise ModelNotFoundError(
            f"{path}: not a fairchem inference checkpoint ({type(error).__name__}: {error}). A model of another "
            f"backbone loads by its own name or path (`atomtune models`)."
        ) from None
    if not isinstance(checkpoint, MLIPInferenceCheckpoint):
        raise ModelNotFoundError(
            f"{path}: not a fairchem inference checkpoint (it holds a {type(checkpoint).__name__}). A fairchem training "
            f"run writes one as checkpoints/…/inference_ckpt.pt; a model of another backbone loads by its own name."
        )
    return checkpoint


def _build_model(checkpoint, location: str, use_ema: bool) -> torch.nn.Module:
    """fairchem's ``load_inference_model`` with the backbone's own overrides for :func:`inference_settings`, tasks set
    up and the untrained stress tasks fairchem adds for inference (as ``MLIPPredictUnit._load_model`` does)."""
    from fairchem.core.units.mlip_unit.utils import (
        get_backbone_class_from_checkpoint,
        load_inference_model,
    )

    settings = inference_settings()
    try:
        backbone_class = get_backbone_class_from_checkpoint(checkpoint)
        overrides = {"backbone": backbone_class.build_inference_settings(settings)}
        model, checkpoint = load_inference_model(
            location, overrides=overrides, use_ema=use_ema, preloaded_checkpoint=checkpoint
        )
    except (KeyError, ValueError, RuntimeError, AttributeError, TypeError) as error:
        raise ModelNotFoundError(
            f"{location}: fairchem could not build a model from this checkpoint ({type(error).__name__}: {error})."
        ) from None
    model = getattr(model, "module", model)  # use_ema: fairchem's AveragedModel wrapper
    model.setup_tasks(checkpoint.tasks_config)
    backbone = model.backbone
    if hasattr(backbone, "get_default_untrained_tasks"):
        untrained = [
            task for task in backbone.get_default_untrained_tasks(model.tasks, settings) if task.name not in model.tasks
        ]
        if untrained:
            model.add_tasks(untrained)
    model.eval()
    return model


def _plain(config):
    """A checkpoint's config as plain JSON-able data (fairchem stores OmegaConf containers or dicts)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            return OmegaConf.to_container(config, resolve=True)
    except ImportError:
        pass
    return json.loads(json.dumps(config))


def check_config_targets(config, where: Path | str) -> None:
    """Refuse a saved architecture that names anything but fairchem classes (hydra ``_target_``, fairchem registry
    names) — instantiating it would otherwise import and call whatever the JSON says."""
    if isinstance(config, dict):
        for key, value in config.items():
            named = key in NAMED_KEYS and isinstance(value, str) and "." in value
            if named and not (value.startswith(ALLOWED_TARGET_PREFIXES) or value in ALLOWED_TARGETS):
                raise ModelNotFoundError(
                    f"{where}: the architecture names {value!r} ({key}), which is not a fairchem class; atomtune "
                    f"writes only fairchem classes there, so the file was altered. It was not loaded."
                )
            check_config_targets(value, where)
    elif isinstance(config, list):
        for value in config:
            check_config_targets(value, where)
