"""Writing atomtune's own files safely: atomic writes, JSON of numpy values, file-name-safe labels, output-directory locks.

Every box writes results (model metadata, fine-tuning metrics, campaign step results, label cache records, scan tables);
they all go through here so that a run killed at any instant leaves either the old file or the new one, and two runs
pointed at one output directory cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np

from atomtune.exceptions import AtomtuneError


def json_default(value):
    """``json.dumps(default=…)`` for numpy values and paths (model metadata, campaign results, fine-tuning metrics)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def lenient_json_default(value):
    """:func:`json_default`, with any other object written as its ``str`` (provenance records of arbitrary settings)."""
    try:
        return json_default(value)
    except TypeError:
        return str(value)


def atomic_write_text(path: str | Path, text: str, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: the file is complete or absent.

    ``fsync``: force the data to disk before the rename (for files a resumed run must be able to trust).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, value, indent: int | None = 2, fsync: bool = False, lenient: bool = False) -> Path:
    """:func:`atomic_write_text` of ``value`` as JSON (numpy values and paths converted; ``lenient``: anything else as
    its ``str`` instead of an error)."""
    default = lenient_json_default if lenient else json_default
    return atomic_write_text(path, json.dumps(value, indent=indent, default=default), fsync=fsync)


def safe_file_name(label: str, keep: str = "") -> str:
    """A label (``chgnet-0.3.0+lora``, a formula, ``runs/ft/``) as a portable file-name stem: every character other
    than letters, digits, ``-``, ``_``, ``.`` and those in ``keep`` becomes ``_``."""
    return re.sub(rf"[^A-Za-z0-9._{re.escape(keep)}-]", "_", str(label)).strip("_") or "unnamed"


LOCK_FILE = ".atomtune.lock"


class DirectoryLockedError(AtomtuneError):
    """Another live atomtune process writes into the same output directory."""


class OutputLock:
    """An exclusive lock on an output directory for the lifetime of a run (a context manager).

    ``fcntl.flock`` on ``DIR/.atomtune.lock``: the kernel releases it when the holder exits, however it exits (SIGKILL
    included), so a lock left by a dead process is simply taken over; the file holds the holder's pid, host and command
    so the second writer is told who holds it. (Hand-written because ``filelock`` reports neither the holder nor lets the
    message name it.) Re-entrant within one process: a campaign step that locks its own sub-directory, or a CLI command
    that locks ``--out`` and calls a trainer that locks it again, does not deadlock.
    """

    _held: dict[Path, int] = {}  # this process's locks: directory → depth
    _handles: dict[Path, object] = {}

    def __init__(self, directory: str | Path, purpose: str = "run"):
        self.directory = Path(directory)
        self.purpose = purpose

    def __enter__(self) -> OutputLock:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory.resolve()
        if key in OutputLock._held:
            OutputLock._held[key] += 1
            return self
        path = key / LOCK_FILE
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise DirectoryLockedError(
                f"{self.directory}: another atomtune process is writing here ({holder}). Wait for it to finish, stop "
                f"it, or choose another output directory; two runs into one directory would overwrite each other."
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, {self.purpose}: {command}\n")
        handle.flush()
        OutputLock._held[key] = 1
        OutputLock._handles[key] = handle
        return self

    def __exit__(self, *exc) -> None:
        key = self.directory.resolve()
        OutputLock._held[key] -= 1
        if OutputLock._held[key] == 0:
            del OutputLock._held[key]
            handle = OutputLock._handles.pop(key)
            handle.close()  # closing the descriptor releases the flock


__all__ = ["DirectoryLockedError", "LOCK_FILE", "OutputLock", "atomic_write_json", "atomic_write_text",
           "json_default", "lenient_json_default", "safe_file_name"]
