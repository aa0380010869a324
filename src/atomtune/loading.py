"""Loading weight files without running code in them: the one door every backbone, checkpoint and model file goes through.

A ``torch.save`` file is a pickle: loading it with ``weights_only=False`` runs whatever its ``__reduce__`` says. atomtune's
own files (model directories, training checkpoints) hold only tensors and plain data and always load with
``weights_only=True``; formats that are whole pickled modules by design (MACE ``*.model``) load only when the user says
they trust the file (``--trust-model``, ``trust_models: true`` in a campaign). Files that ship inside installed wheels
(CHGNet / SevenNet pretrained weights) are as trusted as the installed code itself.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

from atomtune.exceptions import AtomtuneError

#: How torch's weights-only unpickler words a refused Python object (as opposed to bytes that are no pickle at all).
GLOBAL_MARKS = ("Unsupported global", "Unsupported class", "unsupported GLOBAL")
TRUST_HINT = "--trust-model (or `trust_models: true` in a campaign file)"


class UnsafeFileError(AtomtuneError):
    """A file that would run code when loaded, refused because the user did not say they trust it."""


class CorruptFileError(AtomtuneError):
    """A truncated, empty or foreign file where atomtune expected tensors."""


def _numpy_array_globals() -> list:
    """The numpy globals a pickled ``ndarray`` refers to: reconstructing an array runs no user code, so they are safe
    to allow under ``weights_only`` (SevenNet keeps its shift / scale as numpy arrays in every checkpoint)."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    # files written under numpy < 2 name the function numpy.core.multiarray._reconstruct (the wheels' SevenNet files)
    return [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64)), type(np.dtype(np.int32)),
            type(np.dtype(np.bool_))]


def load_tensors(path: str | Path, what: str, own_file: bool = False):
    """``torch.load(path, weights_only=True)`` on CPU, with one clear error for each way it can go wrong.

    ``what``: what the file is, for messages (``"training checkpoint"``, ``"SevenNet checkpoint"``). ``own_file``: the file
    is one atomtune writes itself, so a refused global means it was not written by atomtune or was altered (no trust
    flag helps); otherwise the message says how to trust it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: {what} not found.")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{path}: {what} is empty (0 bytes); it was not written completely. Delete it and "
                               f"write it again.")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not any(mark in str(error) for mark in GLOBAL_MARKS):
            raise CorruptFileError(
                f"{path}: not a readable {what} (its bytes are not a torch file); the file is truncated, corrupt or of "
                f"another format. Write it again, or pass the right file."
            ) from None
        detail = _unsupported_global(error)
        if own_file:
            raise UnsafeFileError(
                f"{path}: this {what} holds Python objects other than tensors and plain data ({detail}). atomtune never "
                f"writes such objects, so the file was not written by atomtune or was modified; it was not loaded "
                f"(loading it could run code). Delete it, or write it again with atomtune."
            ) from None
        raise UnsafeFileError(
            f"{path}: this {what} holds Python objects other than tensors and plain data ({detail}); loading it could run "
            f"code, so it was not loaded. If you made this file or trust its source, pass {TRUST_HINT}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CorruptFileError(
            f"{path}: not a readable {what} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); the file is "
            f"truncated, corrupt or of another format. Write it again, or pass the right file."
        ) from None


def load_pickle(path: str | Path, what: str, trust: bool):
    """A file that is a pickle by design (a whole ``torch.nn.Module``): loaded only when ``trust`` is true."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: {what} not found.")
    if not trust:
        raise UnsafeFileError(
            f"{path}: a {what} is a Python pickle, and loading a pickle runs any code it contains. atomtune loads it only "
            f"if you say you trust the file: pass {TRUST_HINT}. (Models saved by atomtune, e.g. `atomtune finetune --out "
            f"DIR`, and the checkpoints named in `atomtune models` need no trust.)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
            ModuleNotFoundError) as error:
        raise CorruptFileError(
            f"{path}: could not load this {what} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); it is "
            f"truncated, corrupt or of another format."
        ) from None


def _unsupported_global(error: Exception) -> str:
    for line in str(error).splitlines():
        if any(mark in line for mark in GLOBAL_MARKS):
            return line.strip().removeprefix("WeightsUnpickler error: ").rstrip(".")
    return "an unsupported global"


__all__ = ["CorruptFileError", "TRUST_HINT", "UnsafeFileError", "load_pickle", "load_tensors"]
