"""Where each environment family's own loader keeps downloaded weights, checked by path alone.

``atomtune models`` runs in the main environment, where orb-models, mattersim, upet, fairchem and nequip are not
installed (:mod:`atomtune.envs.specs`), so it cannot ask their loaders whether a checkpoint is already on disk. Each
function here rebuilds the path that the family's loader (and the adapter's ``checkpoint_available``) looks at, from the
same environment variables and file layout, without importing the family's packages. The pinned versions in
:data:`atomtune.envs.specs.SPECS` are the ones whose layouts are mirrored; a new pin must be checked against this file
(``tests/envs/test_models_listing.py`` compares each function with the adapter inside each built environment).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsStatus:
    """Where a checkpoint's weights stand on this machine, as ``atomtune models`` prints it."""

    state: str  # "cached", "download" (fetched on first use) or "local" (a file the user gives)
    text: str
    path: Path | None = None


# -- ORB: cached_path's cache --------------------------------------------------------------------------------------
#: orb-models 0.5.5 (orb_models/forcefield/pretrained.py): the default ``weights_path`` of each conservative checkpoint,
#: which ``cached_path(weights_path)`` downloads; atomtune.models.orb.OrbPotential.checkpoint_available reads the same
#: default from the function's signature and asks ``cached_path.find_latest_cached(url)``.
ORB_WEIGHTS_URLS = {
    "orb-v3-conservative-inf-omat": "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
    "orb-v3/orb-v3-conservative-inf-omat-20250404.ckpt",
    "orb-v3-conservative-20-omat": "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
    "orb-v3/orb-v3-conservative-20-omat-20250404.ckpt",
    "orb-v3-conservative-inf-mpa": "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
    "orb-v3/orb-v3-conservative-inf-mpa-20250404.ckpt",
    "orb-v3-conservative-20-mpa": "https://orbitalmaterials-public-models.s3.us-west-1.amazonaws.com/forcefields/"
    "orb-v3/orb-v3-conservative-20-mpa-20250404.ckpt",
}


def cached_path_directory() -> Path:
    """cached_path's cache (cached_path/common.py: ``$CACHED_PATH_CACHE_ROOT``, else ``~/.cache/cached_path``)."""
    return Path(os.environ.get("CACHED_PATH_CACHE_ROOT") or Path.home() / ".cache" / "cached_path")


def cached_orb(name: str) -> Path | None:
    """The newest cached download of ORB checkpoint ``name``, as ``cached_path.find_latest_cached`` finds it: files
    named ``sha256(url)`` (plus ``.sha256(etag)``) in the cache, not the ``.json`` / ``.lock`` side files nor an
    ``-extracted`` directory."""
    url = ORB_WEIGHTS_URLS.get(name)
    if url is None:
        return None
    stem = hashlib.sha256(url.encode("utf-8")).hexdigest()
    candidates = [
        path for path in cached_path_directory().glob(f"{stem}*")
        if path.suffix not in {".json", ".lock"} and not path.name.endswith("-extracted")
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


# -- MatterSim: its own pretrained_models folder ---------------------------------------------------------------------
#: atomtune.models.mattersim (PUBLIC_CHECKPOINTS, CACHE_FOLDER): mattersim 1.2.3's Potential.from_checkpoint and
#: download_checkpoint use ``~/.local/mattersim/pretrained_models/<file>`` and no environment variable.
MATTERSIM_FILES = {
    "mattersim-v1.0.0-1m": "mattersim-v1.0.0-1M.pth",
    "mattersim-v1.0.0-5m": "mattersim-v1.0.0-5M.pth",
}


def mattersim_directory() -> Path:
    return Path("~/.local/mattersim/pretrained_models").expanduser()


def cached_mattersim(name: str) -> Path | None:
    file_name = MATTERSIM_FILES.get(name.lower().removesuffix(".pth"))
    if file_name is None:
        return None
    path = mattersim_directory() / file_name
    return path if path.is_file() else None


# -- Hugging Face's cache layout (PET through upet; UMA through fairchem) ----------------------------------------------
def huggingface_hub_cache() -> Path:
    """huggingface_hub.constants.HF_HUB_CACHE: ``$HF_HUB_CACHE``, else the legacy ``$HUGGINGFACE_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def huggingface_cached_file(cache: Path, repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """``huggingface_hub.try_to_load_from_cache``: ``models--ORG--NAME/refs/REVISION`` names the commit, the file is
    ``snapshots/COMMIT/FILENAME`` (a revision that is already a commit has no ref file)."""
    repository = cache / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    ref = repository / "refs" / revision
    if ref.is_file():
        revision = ref.read_text().strip()
    path = repository / "snapshots" / revision / filename
    return path if path.is_file() else None


#: atomtune.models.pet (UPET_NAME, UPET_SIZE_PREFERENCE, cached_upet_checkpoint): upet stores
#: ``models/MODEL-SIZE-vVERSION.ckpt`` of ``lab-cosmo/upet`` in huggingface_hub's cache.
UPET_REPOSITORY = "lab-cosmo/upet"
UPET_FILE = re.compile(r"^(?P<model>pet-[a-z0-9]+?)-(?P<size>xs|s|m|l|xl)-v?(?P<version>\d+\.\d+\.\d+)\.ckpt$")
UPET_PUBLIC_NAMES = ("pet-mad", "pet-omad")  # the named rows of the pet spec; other uPET names go through pet:NAME


def cached_pet(name: str) -> Path | None:
    """Any complete cached checkpoint of uPET model ``name`` (``pet-mad``), newest version of upet's preferred size: the
    adapter (``cached_upet_checkpoint``) loads it when Hugging Face cannot be reached."""
    if name not in UPET_PUBLIC_NAMES:
        return None
    snapshots = huggingface_hub_cache() / ("models--" + UPET_REPOSITORY.replace("/", "--")) / "snapshots"
    found: dict[tuple[str, tuple[int, ...]], Path] = {}
    for path in snapshots.glob(f"*/models/{name}-*.ckpt"):
        match = UPET_FILE.match(path.name)
        if match and match["model"] == name and path.is_file():
            found[(match["size"], tuple(int(part) for part in match["version"].split(".")))] = path
    for size in ("s", "m", "xs", "l", "xl"):
        versions = [key for key in found if key[0] == size]
        if versions:
            return found[max(versions)]
    return None


#: fairchem-core 2.24.0 (fairchem/core/calculate/pretrained_models.json): every UMA checkpoint is
#: ``checkpoints/NAME.pt`` of ``facebook/UMA`` (revision main), with the two reference files
#: ``resolve_checkpoint`` fetches beside it.
UMA_REPOSITORY = "facebook/UMA"
UMA_NAMES = ("uma-s-1p1", "uma-m-1p1", "uma-s-1p2", "uma-s-1p2p1")
UMA_REFERENCE_FILES = ("references/iso_atom_elem_refs.yaml", "references/form_elem_refs.yaml")


def fairchem_cache_directory() -> Path:
    """fairchem/core/_config.py CACHE_DIR, which fairchem passes to hf_hub_download as its ``cache_dir``:
    ``$FAIRCHEM_CACHE_DIR``, else ``~/.cache/fairchem`` (not huggingface_hub's own cache)."""
    return Path(os.environ.get("FAIRCHEM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache/fairchem"))


def cached_uma(name: str) -> Path | None:
    """The cached ``NAME.pt`` when it and its reference files are all in fairchem's cache (what
    ``UmaPotential.checkpoint_available`` finds with ``hf_hub_download(local_files_only=True)``; the reference files
    are what fairchem's ``resolve_checkpoint`` fetches next)."""
    name = name.removeprefix("uma:")
    base, separator, _task = name.rpartition(":")  # a ":omat" style task suffix (atomtune.models.uma.split_task)
    name = base if separator else name
    if name not in UMA_NAMES:
        return None
    cache = fairchem_cache_directory()
    checkpoint = huggingface_cached_file(cache, UMA_REPOSITORY, f"checkpoints/{name}.pt")
    references = [huggingface_cached_file(cache, UMA_REPOSITORY, file) for file in UMA_REFERENCE_FILES]
    return checkpoint if checkpoint is not None and all(references) else None


# -- nequip.net: nequip's model cache -------------------------------------------------------------------------------
NEQUIP_NET_PREFIX = "nequip.net:"


def nequip_cache_directory() -> Path:
    """nequip/utils/model_cache.py get_cache_dir: ``$NEQUIP_CACHE_DIR``, else ``~/.nequip/model_cache``."""
    configured = os.environ.get("NEQUIP_CACHE_DIR")
    return Path(configured).expanduser().resolve() if configured else Path.home() / ".nequip" / "model_cache"


def cached_nequip(name: str) -> Path | None:
    """A cached ``KEY.nequip.zip`` whose ``KEY.metadata.json`` names model ``name`` (``nequip.net:group/model:version``,
    with or without atomtune's ``nequip:`` prefix) and whose content matches the recorded sha256, as nequip 0.19.1's
    get_cached_model validates it. The key hashes the model id with the download URL, which only nequip.net knows."""
    model_id = name.removeprefix("nequip:").removeprefix(NEQUIP_NET_PREFIX)
    if model_id == name.removeprefix("nequip:"):
        return None  # not a nequip.net id
    for metadata_file in nequip_cache_directory().glob("*.metadata.json"):
        try:
            metadata = json.loads(metadata_file.read_text())
        except (OSError, ValueError):
            continue
        model = metadata_file.with_name(metadata_file.name.removesuffix(".metadata.json") + ".nequip.zip")
        if not isinstance(metadata, dict) or metadata.get("model_id") != model_id or not model.is_file():
            continue
        if metadata.get("file_sha256") == hashlib.sha256(model.read_bytes()).hexdigest():
            return model
    return None


#: family → (the pure-path check for one of its named checkpoints, where it looks, what "cached" means there)
CACHE_CHECKS = {
    "orb": (cached_orb, lambda: str(cached_path_directory()), "cached_path uses it when the bucket is unreachable"),
    "mattersim": (cached_mattersim, lambda: str(mattersim_directory()), "mattersim loads it without network"),
    "pet": (cached_pet, lambda: str(huggingface_hub_cache()), "used when Hugging Face cannot be reached"),
    "uma": (cached_uma, lambda: str(fairchem_cache_directory()), "no token needed while it is cached"),
    "nequip": (
        cached_nequip, lambda: str(nequip_cache_directory()),
        "but nequip 0.19 asks nequip.net for the model's URL before every load: network still needed",
    ),
}


def is_local_file_row(name: str) -> bool:
    """A spec row that stands for a file the user gives (``orb:NAME@PATH.ckpt``, ``pet:PATH.ckpt``)."""
    return "PATH" in name


def weights_status(family: str, name: str) -> WeightsStatus:
    """Where checkpoint ``name`` of ``family`` stands: a local file the user gives, already in the family's download
    cache (with the path), or downloaded on first use (with the cache it will go to)."""
    if is_local_file_row(name):
        return WeightsStatus("local", "weights: a local file you give")
    check = CACHE_CHECKS.get(family)
    if check is None:
        return WeightsStatus("download", "weights downloaded on first use")
    find, location, meaning = check
    path = find(name)
    if path is not None:
        return WeightsStatus("cached", f"weights in the download cache ({path}; {meaning})", path)
    return WeightsStatus("download", f"weights downloaded on first use (into {location()})")
