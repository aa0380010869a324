"""LoRA: low-rank updates on a frozen foundation model's linear layers, merged into the weights when the model is saved.

Each adapted weight becomes ``W + (α/r)·ΔW`` with ``ΔW`` of rank ≤ r (Hu et al. 2021, arXiv:2106.09685); ``ΔW`` starts at
zero, so training starts from the foundation model exactly. Three kinds of layers are adapted:

- ``torch.nn.Linear`` (CHGNet's MLPs, readouts, radial networks): ``ΔW = B·A`` on the (out × in) matrix;
- e3nn ``o3.Linear`` (SevenNet and MACE node updates): the weight is a flat vector of one (mul_in × mul_out) block per path
  between *equal* irreps, and the layer is equivariant for any values of it, so every update is. Each block gets its own
  ``A·B``: "rank" is then a property of each path's channel-mixing matrix, which is what the low-rank hypothesis is about
  (the flat vector has no matrix structure to be low-rank in);
- e3nn ``nn.FullyConnectedNet`` layers (radial MLPs acting on invariant scalars): ``ΔW = A·B`` on the (in × out) matrix.

The scale is α over the *effective* rank of each update, ``r_eff = min(r, rows, cols)``, not over the requested ``r``:
a layer too small for the requested rank (CHGNet's 64-wide MLPs at ``--lora-rank 128``, a (1 × 8) readout at any rank
above 1, an e3nn path with few channels) gets a full-rank update, and dividing that by the requested ``r`` would shrink
its learning rate by ``r / r_eff`` for nothing — at ranks far above the layer sizes training did nothing at all. With
α/r_eff, any rank at or above a layer's smaller side trains that layer exactly as rank = that side does. Refusing a rank
above the smallest layer instead would forbid every rank above 1 (readouts have one output).

Adapters are ``torch.nn.utils.parametrize`` parametrizations of ``weight``: the layer's own forward stays untouched (e3nn's
code-generated kernels take the weight as an argument), and ``merge`` is ``remove_parametrizations(leave_parametrized=True)``
— no inference cost after saving.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from atomtune.exceptions import AtomtuneError
from atomtune.finetune.strategies.base import Strategy
from atomtune.models.base import Potential

#: Layer kinds LoRA can adapt (``targets`` names).
LAYER_KINDS = ("linear", "e3nn_linear", "e3nn_mlp")


class LowRankMatrix(torch.nn.Module):
    """``(α / r_eff) · left @ right``, a (rows × cols) matrix of rank ``r_eff = min(rank, rows, cols)``, with ``right``
    zero at start (so the update starts at 0). ``rank`` is the effective rank, ``scale`` = α / rank."""

    def __init__(
        self, rows: int, cols: int, rank: int, alpha: float, dtype: torch.dtype, device: torch.device, generator=None
    ):
        super().__init__()
        self.rank = max(1, min(rank, rows, cols))
        self.scale = alpha / self.rank  # over the effective rank: see the module docstring
        # LoRA's init: one factor random (fan-in scaled), the other zero.
        left = torch.randn(rows, self.rank, dtype=dtype, generator=generator) / math.sqrt(rows)
        self.left = torch.nn.Parameter(left.to(device))
        self.right = torch.nn.Parameter(torch.zeros(self.rank, cols, dtype=dtype, device=device))

    def forward(self) -> torch.Tensor:
        return self.scale * (self.left @ self.right)


class LinearUpdate(torch.nn.Module):
    """Parametrization ``W ↦ W + (α/r_eff) · B·A`` of a weight matrix (``torch.nn.Linear``, e3nn MLP layers)."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, generator=None):
        super().__init__()
        self.update = LowRankMatrix(weight.shape[0], weight.shape[1], rank, alpha, weight.dtype, weight.device, generator)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.update().to(weight.dtype)


class IrrepPathUpdate(torch.nn.Module):
    """Parametrization of an e3nn ``o3.Linear`` flat weight: one low-rank (mul_in × mul_out) update per irrep path.

    e3nn lays the flat weight out as the paths' blocks one after the other, each row-major (mul_in, mul_out)
    (``o3.Linear.weight_views``); the update is built in the same layout.
    """

    def __init__(
        self, weight: torch.Tensor, path_shapes: list[tuple[int, int]], rank: int, alpha: float, generator=None
    ):
        super().__init__()
        self.paths = torch.nn.ModuleList(
            LowRankMatrix(mul_in, mul_out, rank, alpha, weight.dtype, weight.device, generator)
            for mul_in, mul_out in path_shapes
        )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = torch.cat([path().reshape(-1) for path in self.paths])  # each path scaled by α over its own rank
        return weight + delta.to(weight.dtype)


class LoRA(Strategy):
    """Freeze the foundation model; train rank-``rank`` updates on its linear layers.

    ``targets``: layer kinds to adapt (``"linear"``, ``"e3nn_linear"``, ``"e3nn_mlp"``; all by default). ``seed`` fixes
    the random factor's initialisation. Example: ``LoRA(rank=8, alpha=16).apply(potential)``. A layer (or e3nn path)
    whose smaller side is below ``rank`` gets rank = that side, and every update is scaled by ``alpha`` over its own
    effective rank (module docstring), so a rank larger than a layer never silences that layer's training.
    """

    name = "lora"

    def __init__(self, rank: int = 8, alpha: float | None = None, targets: tuple[str, ...] = LAYER_KINDS, seed: int = 0):
        self.rank = rank
        # α = 2r unless given (the update then starts at scale 2 whatever the rank, the common LoRA choice; 16 at r = 8)
        self.alpha = 2.0 * rank if alpha is None else alpha
        self.targets = tuple(targets)
        self.seed = seed

    def _check(self) -> None:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise AtomtuneError(f"LoRA rank must be a positive integer, got {self.rank!r}.")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise AtomtuneError(f"LoRA alpha must be a positive number, got {self.alpha!r}.")
        unknown = set(self.targets) - set(LAYER_KINDS)
        if unknown:
            raise AtomtuneError(f"unknown LoRA target(s) {sorted(unknown)}; use {', '.join(LAYER_KINDS)}.")

    def adapted_layers(self, potential: Potential) -> list[tuple[str, str, torch.nn.Module]]:
        """``(module name, kind, module)`` of every layer this LoRA adapts in ``potential``.

        Layers whose weight the backbone keeps fixed (``requires_grad=False``, e.g. CHGNet's ``AtomRef``) are left alone.
        """
        layers = []
        # A backbone whose layers are copies of these classes (nequip's, loaded from a torch.package archive) names its
        # own kinds with ``lora_layer_kind(module)``; every other backbone goes by the classes themselves.
        kind_of = getattr(potential, "lora_layer_kind", layer_kind)
        for name, module in _named_python_modules(potential):
            kind = kind_of(module)
            if kind in self.targets and module.weight.requires_grad:
                layers.append((name, kind, module))
        return layers

    def select(self, potential: Potential) -> None:
        self._check()
        generator = torch.Generator().manual_seed(self.seed)
        layers = self.adapted_layers(potential)
        for parameter in potential.parameters():
            parameter.requires_grad_(False)
        if not layers:
            raise AtomtuneError(
                f"LoRA found no layer of kinds {', '.join(self.targets)} in {getattr(potential, 'name', potential)}; "
                f"use --strategy freeze."
            )
        for _, kind, module in layers:
            if parametrize.is_parametrized(module, "weight"):
                continue
            weight = module.weight
            if kind == "e3nn_linear":
                update = IrrepPathUpdate(weight, _path_shapes(module), self.rank, self.alpha, generator)
            else:  # a plain matrix: nn.Linear's (out × in) or an e3nn MLP layer's (in × out)
                update = LinearUpdate(weight, self.rank, self.alpha, generator)
            parametrize.register_parametrization(module, "weight", update)
            module.parametrizations.weight.original.requires_grad_(False)

    def merge(self, potential: Potential) -> Potential:
        """Fold every ``B·A`` into its weight and drop the adapters: the plain backbone module structure is back."""
        for _, module in list(potential.named_modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return super().merge(potential)

    def settings(self) -> dict:
        return {"strategy": self.name, "lora_rank": self.rank, "lora_alpha": self.alpha, "lora_targets": list(self.targets)}


def layer_kind(module: torch.nn.Module) -> str | None:
    """``"linear"``, ``"e3nn_linear"``, ``"e3nn_mlp"`` for layers LoRA can adapt, else None."""
    if isinstance(module, torch.nn.Linear):
        return "linear"
    try:
        from e3nn import o3
        from e3nn.nn._fc import _Layer
    except ImportError:  # e3nn absent: only plain torch layers
        return None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.nn.Parameter) or weight.numel() == 0:
        return None
    if isinstance(module, o3.Linear) and weight.dim() == 1 and module.internal_weights:
        return "e3nn_linear"
    if isinstance(module, _Layer) and weight.dim() == 2:
        return "e3nn_mlp"
    return None


def _path_shapes(module) -> list[tuple[int, int]]:
    """(mul_in, mul_out) of each weighted path of an e3nn ``o3.Linear`` in flat-weight order."""
    shapes = [tuple(ins.path_shape) for ins in module.instructions if ins.i_in != -1]
    if sum(a * b for a, b in shapes) != module.weight.numel():
        raise AtomtuneError(
            f"unexpected e3nn Linear weight layout ({module}): LoRA cannot adapt it; use --lora-targets linear."
        )
    return shapes


def _named_python_modules(root: torch.nn.Module):
    """``named_modules`` without descending into TorchScript modules (parametrizations cannot be added there)."""
    stack = [("", root)]
    while stack:
        name, module = stack.pop()
        if isinstance(module, torch.jit.ScriptModule):
            continue
        yield name, module
        children = list(module.named_children())
        for child_name, child in reversed(children):
            if child_name == "parametrizations":
                continue
            stack.append((f"{name}.{child_name}" if name else child_name, child))
