"""Step cache: every campaign step's output lives under a key derived from its inputs and settings.

A step is finished when its ``result.json`` exists (written last, atomically); anything else in its folder is work in
progress that the step itself may resume from (a fine-tune's checkpoint, a labeller's per-structure cache). Rerunning a
campaign therefore reuses every finished step, resumes the interrupted one and recomputes only what changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from atomtune.files import atomic_write_json, safe_file_name

RESULT_FILE = "result.json"


def step_key(kind: str, settings: dict, inputs: list[str]) -> str:
    """12 hex digits from the step kind, its settings and the keys of the steps it reads from."""
    payload = json.dumps({"kind": kind, "settings": settings, "inputs": sorted(inputs)}, sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def step_dir(root: Path, name: str, key: str) -> Path:
    slug = safe_file_name(name, keep="+=")[:80]
    return Path(root) / "steps" / f"{slug}-{key}"


def read_result(directory: Path) -> dict | None:
    path = Path(directory) / RESULT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # a torn write cannot happen with os.replace, but a hand-edited file can
        return None


def write_result(directory: Path, result: dict) -> None:
    atomic_write_json(Path(directory) / RESULT_FILE, result, indent=1)


def file_fingerprint(path: Path) -> str:
    """Content hash of an input file (so editing a data file invalidates the steps that read it)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
