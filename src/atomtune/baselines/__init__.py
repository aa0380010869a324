"""Baselines that answer "would something simpler do as well?" next to the fine-tuned models.

Three kinds, one module each, each with one typed spec:

- :mod:`atomtune.baselines.mace_scratch` — a small MACE trained from scratch with mace's own ``mace_run_train`` on the
  same splits, saved as an atomtune model directory, so it is a ``--model DIR`` like any other (errors and every task).
- :mod:`atomtune.baselines.nequip_scratch` — a small NequIP trained from scratch with nequip's own ``nequip-train``
  inside the nequip environment and packaged with ``nequip-package``; it loads as a ``nequip:`` model.
- :mod:`atomtune.baselines.regression` — classic descriptor regression (composition fractions, SOAP, ACSF, or a
  foundation model's own per-atom embeddings → scikit-learn Ridge / LASSO / kNN / random forest / SVR / Gaussian
  process with cross-validated hyperparameters) for energy per atom or any per-structure scalar; saved as plain data.

``atomtune baseline --kind mace-scratch|nequip-scratch|regression`` (:mod:`atomtune.cli.baseline`) is the command-line
face of all three; a campaign's ``baselines:`` entries (:mod:`atomtune.campaign`) run them on the campaign's splits.
"""

from __future__ import annotations

import importlib

from atomtune.exceptions import AtomtuneError

KINDS = {
    "mace-scratch": "atomtune.baselines.mace_scratch",
    "nequip-scratch": "atomtune.baselines.nequip_scratch",
    "regression": "atomtune.baselines.regression",
}
#: The spec dataclass of each kind (in its module).
SPEC_CLASSES = {"mace-scratch": "MaceScratchSpec", "nequip-scratch": "NequipScratchSpec", "regression": "RegressionSpec"}


def spec_class(kind: str) -> type:
    """The spec dataclass of baseline ``kind``."""
    if kind not in KINDS:
        raise AtomtuneError(f"baseline kind {kind!r}: use one of {', '.join(KINDS)}.")
    return getattr(importlib.import_module(KINDS[kind]), SPEC_CLASSES[kind])


def build_spec(kind: str, values: dict, where: str):
    """The kind's spec from ``values`` (field → value); :class:`AtomtuneError` naming unknown fields and bad values."""
    from dataclasses import fields

    cls = spec_class(kind)
    known = {field.name for field in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AtomtuneError(f"{where}: unknown field(s) {', '.join(unknown)} of {cls.__name__}; known: "
                            f"{', '.join(sorted(known))}.")
    try:
        return cls(**values)
    except TypeError as error:
        raise AtomtuneError(f"{where}: {error}") from None
