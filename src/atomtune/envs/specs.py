"""Pinned environment specs, one per backbone family whose dependencies conflict with atomtune's main environment.

Sits under ``envs/``: :mod:`atomtune.envs.build` turns a spec into a virtual environment under the cache directory,
keyed by :meth:`EnvironmentSpec.fingerprint`; :mod:`atomtune.envs.worker` runs work inside it. Families that fit the main
environment (CHGNet, SevenNet, MACE) have no spec here and run in-process.

Every pin carries the reason it is what it is. Every environment gets, in this order: ``torch==2.13.0`` (the same build
as the main environment; on these machines a local CPU wheel, so no second multi-GB CUDA download), the family's pins,
then atomtune's own core (``pip install --no-deps -e <atomtune>`` plus :data:`CORE_PACKAGES`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

#: Same torch as the main environment (pyproject.toml); installed first into every environment.
TORCH_REQUIREMENT = "torch==2.13.0"


@dataclass(frozen=True)
class Pin:
    """One requirement of a family environment and why it is pinned the way it is."""

    requirement: str  # a pip requirement, e.g. "nequip==0.19.1"
    reason: str
    no_deps: bool = False  # install with --no-deps (its declared dependencies would replace torch or pull CUDA wheels)

    @property
    def package(self) -> str:
        """The distribution name without the version specifier."""
        for separator in ("==", ">=", "<=", "~=", "<", ">", "["):
            if separator in self.requirement:
                return self.requirement.split(separator)[0].strip()
        return self.requirement.strip()


#: atomtune's own light dependencies (what the worker, models/base.py and the tasks import); ranges as in pyproject.toml.
CORE_PACKAGES: tuple[Pin, ...] = (
    Pin("ase>=3.23", "atomtune's structures and calculators (ASE units and signs everywhere)"),
    Pin("scipy>=1.11", "tasks (EOS fits, relaxations) run inside the environment"),
    Pin("pydantic>=2.5", "typed specs of tasks and fine-tunes"),
    Pin("pyyaml>=6", "campaign / spec files"),
    Pin("tqdm>=4.66", "progress bars"),
    Pin("torch-ema>=0.3", "the fine-tuning loop's weight averaging (fine-tunes run inside the environment)"),
)


@dataclass(frozen=True)
class FamilyCheckpoint:
    """A public checkpoint of a family, as ``atomtune models`` lists it."""

    name: str
    source: str  # where the family's own loader gets it
    gated: str = ""  # the credential step, when the hub requires one


@dataclass(frozen=True)
class EnvironmentSpec:
    """Everything that decides what an environment contains; its fingerprint keys the cache directory."""

    family: str
    description: str
    pins: tuple[Pin, ...]
    #: modules that must import after the build (the smoke test that the environment works)
    imports: tuple[str, ...]
    python: str = "3.11"
    #: Why this family cannot be built on this machine (empty when it can); listed by ``atomtune env list``.
    unbuildable_reason: str = ""
    core: tuple[Pin, ...] = field(default=CORE_PACKAGES)
    #: public checkpoints (listed by ``atomtune models``; not part of the fingerprint)
    checkpoints: tuple[FamilyCheckpoint, ...] = ()
    #: "module:Class" of atomtune's Potential adapter for this family, empty while there is none
    adapter: str = ""

    def fingerprint(self) -> str:
        """Hash of the requirements (not the reasons): a changed pin gives a new environment directory."""
        content = {
            "family": self.family,
            "python": self.python,
            "torch": TORCH_REQUIREMENT,
            "pins": [(pin.requirement, pin.no_deps) for pin in self.pins],
            "core": [pin.requirement for pin in self.core],
            "imports": list(self.imports),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def directory_name(self) -> str:
        return f"{self.family}-{self.fingerprint()}"

    def to_dict(self) -> dict:
        return asdict(self)


FROM_NEQUIP_NET = "nequip.net (nequip's load_saved_model downloads and caches it)"
FROM_MATTERSIM_CACHE = (
    "MatterSim-v1 (M3GNet): mattersim's download_checkpoint fetches it on first use into ~/.local/mattersim/"
    "pretrained_models, where its Potential.from_checkpoint looks"
)
FROM_ORB_BUCKET = "orb_models.forcefield.pretrained (downloads from Orbital's S3 bucket; cached_path caches it)"

FROM_UPET = "Hugging Face lab-cosmo/upet: {name}, newest version (upet's resolver downloads it, huggingface_hub caches it)"

SPECS: dict[str, EnvironmentSpec] = {
    "nequip": EnvironmentSpec(
        family="nequip",
        description="NequIP and Allegro (nequip 0.19 / allegro 0.8): NequIP-OAM, Allegro-OAM, Allegro-FM",
        pins=(
            Pin(
                "e3nn>=0.6,<0.7",
                "nequip 0.19 and allegro 0.8 require e3nn>=0.6,<0.7; the main environment holds e3nn 0.5.1 "
                "(SevenNet 0.13 and the MACE foundation pickles need it), hence a separate environment",
            ),
            Pin("nequip==0.19.1", "newest nequip on PyPI for Python 3.11; its .nequip.zip packaging and compile path"),
            Pin("nequip-allegro==0.8.3", "newest Allegro; the 0.8 line is the one built on nequip 0.19"),
        ),
        imports=("nequip", "allegro", "e3nn"),
        adapter="atomtune.models.nequip:NequipPotential",
        checkpoints=(
            FamilyCheckpoint("nequip:nequip.net:mir-group/NequIP-OAM-L:0.1", FROM_NEQUIP_NET),
            FamilyCheckpoint("nequip:nequip.net:mir-group/NequIP-OAM-XL:0.1", FROM_NEQUIP_NET),
            FamilyCheckpoint("nequip:nequip.net:mir-group/NequIP-MP-L:0.1", FROM_NEQUIP_NET),
            FamilyCheckpoint("nequip:nequip.net:mir-group/Allegro-OAM-L:0.1", FROM_NEQUIP_NET),
            FamilyCheckpoint(
                "nequip:PATH/allegro-fm.nequip.zip", "Allegro-FM: its authors' release, not on nequip.net; give the path"
            ),
        ),
    ),
    "pet": EnvironmentSpec(
        family="pet",
        description="PET-MAD / PET-OMAD (metatrain + upet): PET with metatrain's LoRA fine-tuning",
        pins=(
            Pin(
                "metatrain==2026.4.1",
                "newest metatrain; its PET architecture and LoRA fine-tuning path; needs metatensor-torch 0.10 "
                "and pydantic>=2.12",
            ),
            Pin("upet==0.3.1", "the PET-MAD / uPET checkpoint loader; 0.3.x requires metatrain>=2026.4,<2026.5"),
            Pin(
                "metatomic-torch>=0.1.17,<0.2",
                "metatomic-torch ships compiled extensions for torch>=2.3,<2.15, which covers torch 2.13",
            ),
        ),
        imports=("metatrain", "metatomic.torch", "upet"),
        adapter="atomtune.models.pet:PetPotential",
        checkpoints=(
            FamilyCheckpoint("pet-mad", FROM_UPET.format(name="pet-mad-s")),
            FamilyCheckpoint("pet-omad", FROM_UPET.format(name="pet-omad-s")),
            FamilyCheckpoint("pet:MODEL[-SIZE][-VERSION]", "any uPET model, e.g. pet:pet-omat-l (upet downloads it)"),
            FamilyCheckpoint("pet:PATH.ckpt", "a metatrain checkpoint or an exported metatomic .pt (--trust-model)"),
        ),
    ),
    "uma": EnvironmentSpec(
        family="uma",
        description="UMA (fairchem-core 2.x): uma-s-1p1, uma-m-1p1, uma-s-1p2(p1); a :task suffix picks the head "
        "(omat default); gated on Hugging Face: needs a token",
        pins=(
            Pin(
                "fairchem-core==2.24.0",
                "newest fairchem; declares torch~=2.13.0 (matches) and numpy>=2.0,<2.5, hydra, e3nn>=0.5 (kept out "
                "of the main environment). Installed --no-deps: its declared cuda-python, nvidia-cutlass-dsl and "
                "nvalchemi-toolkit-ops (with warp-lang) are CUDA-only kernels (UMA Nitro, NVIDIA neighbour lists, "
                "DFT-D3) that atomtune's batched path never calls and fairchem imports only when present; they were "
                "680 MB of the first build (2.4 GB) and 40 % of fairchem's import time. The rest of its "
                "requirements follow, as 2.24.0 declares them",
                no_deps=True,
            ),
            *(
                Pin(requirement, "fairchem-core 2.24.0 declares it (installed --no-deps above)")
                for requirement in (
                    "numpy>=2.0,<2.5", "scipy>=1.15.0", "ase>=3.26.0", "ase-db-backends>=0.10.0", "e3nn>=0.5",
                    "hydra-core>=1.3", "huggingface-hub>=0.27.1", "torchtnt", "numba>=0.62.0", "lmdb>=1.6.2,<=1.7.3",
                    "monty>=2026.2.18", "submitit>=1.5.4", "clusterscope==0.0.18", "wandb", "backoff", "orjson",
                    "requests", "websockets", "setuptools<81.0.0",
                )
            ),
        ),
        imports=("fairchem.core", "fairchem.core.models.uma.escn_moe"),
        adapter="atomtune.models.uma:UmaPotential",
        checkpoints=(
            FamilyCheckpoint(
                "uma-s-1p1", "Hugging Face facebook/UMA (fairchem's pretrained_mlip)",
                gated="accept the licence on huggingface.co/facebook/UMA, then `hf auth login` or set HF_TOKEN",
            ),
            FamilyCheckpoint(
                "uma-m-1p1", "Hugging Face facebook/UMA (fairchem's pretrained_mlip)",
                gated="accept the licence on huggingface.co/facebook/UMA, then `hf auth login` or set HF_TOKEN",
            ),
            FamilyCheckpoint(
                "uma-s-1p2", "Hugging Face facebook/UMA (fairchem's pretrained_mlip)",
                gated="accept the licence on huggingface.co/facebook/UMA, then `hf auth login` or set HF_TOKEN",
            ),
            FamilyCheckpoint(
                "uma-s-1p2p1", "Hugging Face facebook/UMA (fairchem's pretrained_mlip)",
                gated="accept the licence on huggingface.co/facebook/UMA, then `hf auth login` or set HF_TOKEN",
            ),
        ),
    ),
    "orb": EnvironmentSpec(
        family="orb",
        description="ORB (orb-models): orb-v3-conservative-inf-omat and friends",
        pins=(
            Pin(
                "orb-models==0.5.5",
                "orb-models 0.7.0 requires Python>=3.12; 0.5.5 is the newest release that supports Python 3.11",
            ),
            Pin("dm-tree==0.1.8", "orb-models 0.5.5 pins it exactly"),
        ),
        imports=("orb_models",),
        adapter="atomtune.models.orb:OrbPotential",
        # Conservative checkpoints only: ORB's direct models (orb-v3-direct-*, orb-v2) are refused by the adapter
        # (their forces are not energy derivatives); a local checkpoint file loads as orb:NAME@PATH.
        checkpoints=(
            FamilyCheckpoint("orb-v3-conservative-inf-omat", FROM_ORB_BUCKET),
            FamilyCheckpoint("orb-v3-conservative-20-omat", FROM_ORB_BUCKET),
            FamilyCheckpoint("orb-v3-conservative-inf-mpa", FROM_ORB_BUCKET),
            FamilyCheckpoint("orb-v3-conservative-20-mpa", FROM_ORB_BUCKET),
            FamilyCheckpoint("orb:NAME@PATH.ckpt", "a local ORB checkpoint (e.g. from ORB's finetune.py) of architecture NAME"),
        ),
    ),
    "mattersim": EnvironmentSpec(
        family="mattersim",
        description="MatterSim (mattersim): MatterSim-v1.0.0-1M / -5M",
        pins=(
            Pin(
                "mattersim==1.2.3",
                "mattersim 1.2.5 requires Python>=3.12; 1.2.3 is the newest release with a cp311 wheel. Its declared "
                "torchaudio/torchvision requirements would pull another torch build, so it is installed --no-deps "
                "and the dependencies it imports are listed below",
                no_deps=True,
            ),
            Pin("e3nn>=0.5", "mattersim's M3GNet layers"),
            Pin("torch_geometric>=2.5.3", "mattersim's graph batching"),
            Pin("torch-runstats>=0.2.0", "mattersim's scatter helpers"),
            Pin("torch-ema>=0.3", "mattersim's fine-tuning"),
            Pin("torchmetrics>=0.10.0", "mattersim.forcefield.potential imports it (the first build failed without)"),
            Pin("scikit-learn", "mattersim.forcefield imports sklearn via its element-energy regressor (second build)"),
            Pin("opt_einsum_fx", "mattersim's e3nn codegen"),
            Pin("pymatgen", "mattersim's structure conversion"),
            Pin("loguru", "mattersim's logging"),
            Pin("deprecated", "mattersim imports it"),
            Pin(
                "requests",
                "mattersim's checkpoint download (utils/download_utils.py, from raw.githubusercontent.com). The "
                "azure-storage-blob / azure-identity that 1.2.3 declares are imported nowhere in it, so left out",
            ),
        ),
        imports=("mattersim.forcefield",),
        adapter="atomtune.models.mattersim:MattersimPotential",
        checkpoints=(
            FamilyCheckpoint("mattersim-v1.0.0-1m", FROM_MATTERSIM_CACHE),
            FamilyCheckpoint("mattersim-v1.0.0-5m", FROM_MATTERSIM_CACHE),
        ),
    ),
}


def family_of_checkpoint(name: str) -> str | None:
    """The family whose spec lists checkpoint ``name`` (None when no environment family does)."""
    return next((spec.family for spec in SPECS.values() for c in spec.checkpoints if c.name == name), None)
