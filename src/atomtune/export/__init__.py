"""Hand a model to LAMMPS: export a Potential (foundation or fine-tuned) to its backbone's own LAMMPS format.

Where this sits: after ``finetune`` (a fine-tuned model directory is a Potential like any other) and beside
``atomtune.lammps`` (which runs any model in LAMMPS through ``fix external``, one rank). An export is what a cluster user
takes to a LAMMPS built with the backbone's pair style, on many ranks / GPUs. One file per backbone, each written with
the backbone's own deploy code:

- SevenNet (:mod:`atomtune.export.sevennet`): ``sevenn``'s ``deploy`` / ``deploy_parallel`` → ``pair_style e3gnn`` and
  ``e3gnn/parallel``; its ML-IAP wrapper → ``pair_style mliap unified``.
- MACE (:mod:`atomtune.export.mace`): mace's ``LAMMPS_MACE`` wrapper compiled as ``create_lammps_model`` does →
  ``pair_style mace``; the ML-IAP format where cuequivariance is installed.
- CHGNet (:mod:`atomtune.export.chgnet`): no LAMMPS pair style exists; the module says so and what to do instead.

Fine-tuned models export with their LoRA adapters merged and atomtune's per-element energy shift (E0) folded into the
backbone's own per-element energies, so the exported file gives the Potential's energies, not the foundation model's.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from atomtune.exceptions import AtomtuneError

#: backbone → module with ``FORMATS`` and ``export(potential, out_dir, formats)``.
EXPORTERS: dict[str, str] = {
    "sevennet": "atomtune.export.sevennet",
    "mace": "atomtune.export.mace",
    "chgnet": "atomtune.export.chgnet",
}


@dataclass
class ExportedModel:
    """One exported file (or folder) and how LAMMPS uses it.

    ``format``: atomtune's name for it (``e3gnn``, ``e3gnn-parallel``, ``mace-libtorch``, ``mliap``). ``path``: the
    file or folder. ``pair_style`` / ``pair_coeff``: the two LAMMPS lines (``pair_coeff`` lists the model's elements in
    the order of the data file's atom types given to :func:`atomtune.lammps.inputs.pair_lines`). ``elements``: what the
    model covers. ``lammps_build``: what the LAMMPS binary needs. ``notes``: anything a user must know.
    """

    format: str
    path: Path
    backbone: str
    pair_style: str
    elements: list[str]
    cutoff_angstrom: float
    lammps_build: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        record = asdict(self)
        record["path"] = str(self.path)
        return record


def merged_copy(potential):
    """A deep copy of ``potential`` with every parametrised weight (LoRA adapters) folded into a plain parameter.

    ``torch.nn.utils.parametrize`` keeps the parametrised ``weight`` as a property of a class shared between a module
    and its deep copies, so ``remove_parametrizations`` on a copy would also strip the original's property. Here each
    copied module gets its base class back and its merged weight as an ordinary parameter; the original is untouched.
    """
    import torch
    from torch.nn.utils import parametrize

    merged = {
        name: module.weight.detach().clone()
        for name, module in potential.named_modules()
        if parametrize.is_parametrized(module, "weight")
    }
    clone = copy.deepcopy(potential)
    for name, module in clone.named_modules():
        if name not in merged:
            continue
        if set(module.parametrizations.keys()) != {"weight"}:
            raise AtomtuneError(f"{name}: parametrised tensors other than 'weight' cannot be exported.")
        module.__class__ = module.__class__.__bases__[0]
        del module._modules["parametrizations"]
        module.register_parameter("weight", torch.nn.Parameter(merged[name], requires_grad=False))
    return clone


def formats_by_backbone() -> dict[str, tuple[str, ...]]:
    """Which formats each backbone can be exported to (empty for a backbone without a LAMMPS path)."""
    return {backbone: tuple(importlib.import_module(module).FORMATS) for backbone, module in EXPORTERS.items()}


def export(potential, out_dir: str | Path, formats: list[str] | None = None) -> list[ExportedModel]:
    """Export ``potential`` into ``out_dir`` in ``formats`` (default: the backbone's first, single-rank format).

    Writes the model file(s), ``in.lammps-snippet`` per format and ``export.json`` (the records). Raises
    :class:`AtomtuneError` for a backbone with no LAMMPS path or an unknown format, naming the ones that exist.
    """
    import json

    backbone = potential.backbone
    if backbone not in EXPORTERS:
        raise AtomtuneError(f"no exporter for backbone {backbone!r}; exporters exist for {', '.join(EXPORTERS)}.")
    module = importlib.import_module(EXPORTERS[backbone])
    available = tuple(module.FORMATS)
    if not available:
        module.export(potential, out_dir, formats or [])  # raises, saying why there is no path
    formats = list(formats or available[:1])
    unknown = [name for name in formats if name not in available]
    if unknown:
        raise AtomtuneError(
            f"{potential.name}: format(s) {', '.join(unknown)} not available for {backbone}; it exports to "
            f"{', '.join(available)}. (Exports by backbone: "
            + "; ".join(f"{b}: {', '.join(f) or 'none'}" for b, f in formats_by_backbone().items())
            + ")"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import torch

    # mace's converters set torch's global default dtype and leave it set; keep the caller's
    previous_dtype = torch.get_default_dtype()
    try:
        exported = module.export(potential, out_dir, formats)
    finally:
        torch.set_default_dtype(previous_dtype)
    from atomtune.lammps.inputs import input_snippet

    for record in exported:
        (out_dir / f"in.{record.format}.lammps").write_text(input_snippet(record))
    (out_dir / "export.json").write_text(json.dumps([record.to_json() for record in exported], indent=2))
    return exported


__all__ = ["EXPORTERS", "ExportedModel", "export", "formats_by_backbone", "merged_copy"]
