"""Source paths for the readers: a file, a folder, a glob (``'LeMat-Bulk/*.parquet'``) or a list of them."""

from __future__ import annotations

import glob
from pathlib import Path

from atomtune.exceptions import DatasetError


def expand_paths(source) -> list[Path]:
    """Existing paths named by ``source`` (globs expanded and sorted; folders returned as folders).

    Raises :class:`DatasetError` for a missing file or a pattern that matches nothing.
    """
    items = [source] if isinstance(source, (str, Path)) else list(source)
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if any(char in text for char in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise DatasetError(f"{text}: no file matches this pattern.")
            paths.extend(Path(match) for match in matches)
        elif Path(text).exists():
            paths.append(Path(text))
        else:
            raise DatasetError(f"{text}: file not found (relative paths are from {Path.cwd()}).")
    if not paths:
        raise DatasetError("no source given.")
    return paths
