"""Training checkpoints: the complete state of an unfinished run, written atomically after every epoch.

``torch.save`` to ``checkpoint.pt.tmp`` then ``os.replace`` onto ``checkpoint.pt``: a run killed at any instant (SIGKILL,
out of memory, a node reboot) leaves either the previous checkpoint or the new one, never half a file, so ``--resume``
always has a consistent state to continue from. Used by :class:`atomtune.finetune.Trainer`.

A checkpoint holds tensors and plain data only (numbers, strings, lists, dicts) and is read with ``weights_only=True``: a
crafted ``checkpoint.pt`` dropped into an output directory cannot run code (:mod:`atomtune.loading`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_FILE = "checkpoint.pt"


def checkpoint_path(out: str | Path) -> Path:
    return Path(out) / CHECKPOINT_FILE


def write_checkpoint(out: str | Path, state: dict) -> Path:
    """Write ``state`` to ``out/checkpoint.pt`` atomically; return the path."""
    path = checkpoint_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as handle:  # data on disk before the rename makes it visible
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_checkpoint(out: str | Path) -> dict | None:
    """The last checkpoint in ``out``, or None when there is none."""
    path = checkpoint_path(out)
    if not path.exists():
        return None
    from atomtune.loading import load_tensors

    return load_tensors(path, "training checkpoint", own_file=True)


def has_checkpoint(out: str | Path) -> bool:
    """Whether ``out`` holds an unfinished run's checkpoint (the file is not read)."""
    return checkpoint_path(out).is_file()
