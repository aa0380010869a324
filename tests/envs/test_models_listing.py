"""``atomtune models`` lists every environment family's checkpoints with an honest status: environment built or not, and
weights a local file, already in the family's own download cache (fake cache layouts under a temporary HOME / HF_HOME /
XDG_CACHE_HOME; slow: the same layouts seen by each adapter inside its built environment) or downloaded on first use.
Also: ``sevennet-omni`` resolves to sevenn's own download path and URL without network."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from atomtune.cli.models import environment_family_rows
from atomtune.envs import caches
from atomtune.envs.specs import SPECS


def test_every_family_is_listed_and_nothing_unbuilt_claims_to_be_usable(fake_home):
    rows = environment_family_rows()
    assert {row["backbone"] for row in rows} == set(SPECS)
    for row in rows:
        assert not row["usable"]
        assert "offline" not in row["status"]
        assert f"atomtune env build {row['backbone']}" in row["status"]
    uma = next(row for row in rows if row["name"] == "uma-s-1p1")
    assert "gated" in uma["status"] and "HF_TOKEN" in uma["status"]


# -- weights status from each family's own download cache (fake layouts, no family package imported) ------------------

CACHE_VARIABLES = (
    "CACHED_PATH_CACHE_ROOT", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME",
    "FAIRCHEM_CACHE_DIR", "NEQUIP_CACHE_DIR",
)


@pytest.fixture
def fake_home(tmp_path, monkeypatch) -> Path:
    """An empty HOME with every cache variable unset, and no environment built."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in CACHE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ATOMTUNE_ENV_DIR", str(tmp_path / "envs"))
    return home


def statuses() -> dict[str, dict]:
    return {row["name"]: row for row in environment_family_rows()}


def fill_fake_caches(home: Path, hf_home: Path) -> dict[str, Path]:
    """One cached checkpoint per family, in the layout each family's loader writes; returns name → weights file."""
    files = {}
    orb_cache = home / ".cache" / "cached_path"
    orb_cache.mkdir(parents=True)
    stem = hashlib.sha256(caches.ORB_WEIGHTS_URLS["orb-v3-conservative-inf-omat"].encode()).hexdigest()
    files["orb-v3-conservative-inf-omat"] = orb_cache / f"{stem}.{hashlib.sha256(b'etag').hexdigest()}"
    (orb_cache / f"{stem}.json").write_text("{}")  # cached_path's metadata alone is not the weights
    other = hashlib.sha256(caches.ORB_WEIGHTS_URLS["orb-v3-conservative-20-mpa"].encode()).hexdigest()
    (orb_cache / f"{other}.lock").write_text("")  # a download in progress is not the weights either

    mattersim = home / ".local" / "mattersim" / "pretrained_models"
    mattersim.mkdir(parents=True)
    files["mattersim-v1.0.0-1m"] = mattersim / "mattersim-v1.0.0-1M.pth"

    upet = hf_home / "hub" / "models--lab-cosmo--upet" / "snapshots" / "4a5b6c"
    (upet / "models").mkdir(parents=True)
    (upet / "models" / "pet-mad-s-v1.0.2.ckpt").write_bytes(b"old")
    files["pet-mad"] = upet / "models" / "pet-mad-s-v1.1.0.ckpt"  # newest version wins
    (upet / "models" / "pet-omad-s-v1.0.0.ckpt.incomplete").write_bytes(b"partial")

    uma = home / ".cache" / "fairchem" / "models--facebook--UMA"
    (uma / "refs").mkdir(parents=True)
    (uma / "refs" / "main").write_text("c0ffee")
    for relative in ("checkpoints/uma-s-1p1.pt", "checkpoints/uma-m-1p1.pt", *caches.UMA_REFERENCE_FILES):
        (uma / "snapshots" / "c0ffee" / relative).parent.mkdir(parents=True, exist_ok=True)
        (uma / "snapshots" / "c0ffee" / relative).write_bytes(b"weights")
    files["uma-s-1p1"] = uma / "snapshots" / "c0ffee" / "checkpoints" / "uma-s-1p1.pt"
    files["uma-m-1p1"] = uma / "snapshots" / "c0ffee" / "checkpoints" / "uma-m-1p1.pt"
    # a stale snapshot: refs/main no longer points at it
    (uma / "snapshots" / "0ld" / "checkpoints").mkdir(parents=True)
    (uma / "snapshots" / "0ld" / "checkpoints" / "uma-s-1p2.pt").write_bytes(b"weights")

    nequip = home / ".nequip" / "model_cache"
    nequip.mkdir(parents=True)
    for key, model_id, content, recorded in (
        ("a" * 64, "mir-group/NequIP-OAM-L:0.1", b"zip", b"zip"),
        ("b" * 64, "mir-group/Allegro-OAM-L:0.1", b"zip", b"corrupted"),  # hash mismatch: nequip redownloads
    ):
        (nequip / f"{key}.nequip.zip").write_bytes(content)
        metadata = {"model_id": model_id, "download_url": "https://x", "file_sha256": hashlib.sha256(recorded).hexdigest()}
        (nequip / f"{key}.metadata.json").write_text(json.dumps(metadata))
    files["nequip:nequip.net:mir-group/NequIP-OAM-L:0.1"] = nequip / f"{'a' * 64}.nequip.zip"

    for name in ("orb-v3-conservative-inf-omat", "mattersim-v1.0.0-1m", "pet-mad", "uma-s-1p1"):
        files[name].write_bytes(b"weights")
    return files


def test_empty_caches_say_downloaded_on_first_use_and_where(fake_home):
    rows = statuses()
    for name, row in rows.items():
        assert "download cache" not in row["status"]
        if "PATH" in name:
            assert row["weights"] == "local" and "local file" in row["status"] and "first use" not in row["status"]
        else:
            assert row["weights"] == "download" and "downloaded on first use" in row["status"]
    assert str(fake_home / ".cache" / "cached_path") in rows["orb-v3-conservative-inf-omat"]["status"]
    assert str(fake_home / ".local" / "mattersim" / "pretrained_models") in rows["mattersim-v1.0.0-1m"]["status"]
    assert str(fake_home / ".cache" / "huggingface" / "hub") in rows["pet-mad"]["status"]
    assert str(fake_home / ".cache" / "fairchem") in rows["uma-s-1p1"]["status"]
    assert "gated" in rows["uma-s-1p1"]["status"]
    # the local-file rows of every family that has one
    assert rows["orb:NAME@PATH.ckpt"]["weights"] == "local"
    assert rows["pet:PATH.ckpt"]["weights"] == "local"
    assert rows["nequip:PATH/allegro-fm.nequip.zip"]["weights"] == "local"


def test_cached_weights_are_found_where_each_family_keeps_them(fake_home, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    files = fill_fake_caches(fake_home, hf_home)
    rows = statuses()
    cached = {name for name, row in rows.items() if row["weights"] == "cached"}
    assert cached == set(files)
    for name, path in files.items():
        assert str(path) in rows[name]["status"], name
        assert "offline" not in rows[name]["status"]
        assert not rows[name]["usable"]  # the environments are not built
    assert "gated" not in rows["uma-s-1p1"]["status"]  # no token needed while cached
    assert "gated" in rows["uma-s-1p2"]["status"]  # a snapshot refs/main does not point at does not count
    assert "network still needed" in rows["nequip:nequip.net:mir-group/NequIP-OAM-L:0.1"]["status"]
    assert rows["nequip:nequip.net:mir-group/Allegro-OAM-L:0.1"]["weights"] == "download"
    assert rows["pet-omad"]["weights"] == "download"
    assert rows["orb-v3-conservative-20-mpa"]["weights"] == "download"
    assert rows["mattersim-v1.0.0-5m"]["weights"] == "download"


def test_cache_variables_move_the_caches(fake_home, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    files = fill_fake_caches(fake_home, hf_home)
    # XDG_CACHE_HOME/huggingface is huggingface_hub's home when HF_HOME is unset
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "huggingface").symlink_to(hf_home)
    assert caches.cached_pet("pet-mad") == tmp_path / "huggingface" / files["pet-mad"].relative_to(hf_home)
    moved = {
        "CACHED_PATH_CACHE_ROOT": (tmp_path / "orb", "orb-v3-conservative-inf-omat", caches.cached_orb),
        "FAIRCHEM_CACHE_DIR": (tmp_path / "fairchem", "uma-s-1p1", caches.cached_uma),
        "NEQUIP_CACHE_DIR": (tmp_path / "nequip", "nequip:nequip.net:mir-group/NequIP-OAM-L:0.1", caches.cached_nequip),
        "HF_HUB_CACHE": (tmp_path / "hub", "pet-mad", caches.cached_pet),
    }
    for variable, (directory, name, find) in moved.items():
        assert find(name) is not None, name
        directory.mkdir()
        monkeypatch.setenv(variable, str(directory))
        assert find(name) is None, f"{variable} set: the default location no longer counts"
    assert caches.cached_uma("uma:uma-s-1p1:omat") is None
    monkeypatch.delenv("FAIRCHEM_CACHE_DIR")
    assert caches.cached_uma("uma:uma-s-1p1:omat") == files["uma-s-1p1"]  # the adapter's task suffix


def _adapter_availability(family: str, names: list[str], environment: dict) -> dict[str, bool]:
    """``checkpoint_available`` of the family's own adapter, run in its built environment."""
    from atomtune.envs.build import environment_python, family_spec

    module_name, class_name = family_spec(family).adapter.split(":")
    script = (
        "import importlib, json, sys\n"
        f"cls = getattr(importlib.import_module({module_name!r}), {class_name!r})\n"
        f"print(json.dumps({{name: bool(cls.checkpoint_available(name)) for name in {names!r}}}))\n"
    )
    environment = dict(environment, PYTHONPATH=str(Path(caches.__file__).resolve().parents[2]), OMP_NUM_THREADS="1",
                      HF_HUB_OFFLINE="1")
    result = subprocess.run([str(environment_python(family)), "-c", script], env=environment, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["orb", "mattersim", "pet", "uma"])
def test_pure_path_check_agrees_with_the_adapter_in_its_environment(family, tmp_path):
    """The same fake caches, seen by the adapter's checkpoint_available inside the family's environment (which imports
    the family's own cache code: cached_path, huggingface_hub, fairchem's CACHE_DIR) and by atomtune.envs.caches."""
    from atomtune.envs.build import is_ready
    from atomtune.envs.specs import SPECS

    if not is_ready(family):
        pytest.skip(f"the {family} environment is not built (atomtune env build {family})")
    home, hf_home = tmp_path / "home", tmp_path / "hf"
    home.mkdir()
    fill_fake_caches(home, hf_home)
    environment = {key: value for key, value in os.environ.items() if key not in CACHE_VARIABLES}
    environment.update(HOME=str(home), HF_HOME=str(hf_home))
    names = [checkpoint.name for checkpoint in SPECS[family].checkpoints if not caches.is_local_file_row(checkpoint.name)]
    if family == "pet":
        names = [name for name in names if name in caches.UPET_PUBLIC_NAMES]
    adapter = _adapter_availability(family, names, environment)
    probe = (
        "import json, sys; from atomtune.envs import caches\n"
        f"print(json.dumps({{n: caches.CACHE_CHECKS[{family!r}][0](n) is not None for n in {names!r}}}))\n"
    )
    ours = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True)
    assert json.loads(ours.stdout) == adapter
    assert any(adapter.values()) and not all(adapter.values())  # the fake caches hold some, not all


def test_sevennet_omni_resolves_to_sevenns_download_without_network(monkeypatch):
    """``sevennet-omni`` is sevenn 0.13's 7net-omni (multi-fidelity, MPtrj+sAlex head): the registry hands the name to
    sevenn, whose resolver picks its own download path and URL; the download itself is stopped here."""
    import sevenn._const
    import sevenn.util

    from atomtune.exceptions import ModelNotFoundError
    from atomtune.models.registry import (
        available_models,
        find_checkpoint,
        load_potential,
    )

    info = find_checkpoint("sevennet-omni")
    assert (info.backbone, info.checkpoint, info.offline) == ("sevennet-mf", "7net-omni:mpa", False)
    requested = []

    class DownloadStopped(Exception):
        pass

    def no_download(path, url):
        requested.append((path, url))
        raise DownloadStopped

    monkeypatch.setattr(sevenn.util, "download_checkpoint", no_download)
    exists = os.path.exists  # as on a machine without the file (whether or not this one has it)
    monkeypatch.setattr(sevenn.util.osp, "exists", lambda path: "SevenNet_omni" not in str(path) and exists(path))
    with pytest.raises((DownloadStopped, ModelNotFoundError)):
        load_potential("sevennet-omni")
    assert requested == [(sevenn._const.SEVENNET_omni, sevenn._const.CHECKPOINT_DOWNLOAD_LINKS[sevenn._const.SEVENNET_omni])]
    assert requested[0][1].endswith("/checkpoint_sevennet_omni.pth")
    row = next(row for row in available_models() if row["name"] == "sevennet-omni")
    assert row["status"] == "download on first use"
