"""A crafted pickle for the safe-loading tests: unpickling it would run a shell command that creates a marker file."""

from __future__ import annotations

import os

import torch


class Payload:
    """Unpickling this runs ``os.system`` (what an attacker would put in a weights file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, marker, wrap=None):
    payload = {"model": Payload(marker)} if wrap is None else wrap(Payload(marker))
    torch.save(payload, path)
    return path
