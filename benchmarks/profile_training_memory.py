"""Where a fine-tuning step's memory goes: the tensors autograd keeps for the backward pass of one step (batch 1), summed
per module of the backbone, largest first (CPU).

A fine-tuning step keeps, until its backward pass, every tensor the forward pass (and the force / stress gradient
built with ``create_graph``) saved for backward; their total is most of the step's peak memory. This script counts them
with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once), attributes each to the innermost module running
when it was saved (forward hooks; what the force / stress gradient with ``create_graph`` saves is attributed to
``torch.autograd.grad``), and prints the table. Used to find what to make smaller in ``bench_memory_scaling.py``'s large cells.

    python benchmarks/profile_training_memory.py --model sevennet-0 --atoms 108
    python benchmarks/profile_training_memory.py --model chgnet-0.3.0 --atoms 256 --top 15
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory_scaling import REPEATS, nial_cell  # noqa: E402  (a sibling script, not a package)


def saved_bytes_per_module(potential, atoms) -> dict[str, float]:
    """MiB saved for backward during one forward with forces and stress of ``atoms``, per module name."""
    import torch

    from atomtune.finetune.featurized import FeaturizedSet

    names = {module: name or type(module).__name__ for name, module in potential.named_modules()}
    stack: list[str] = []

    def enter(module, _inputs):
        stack.append(names[module])

    def leave(module, _inputs, _output):
        stack.pop()

    handles = []
    for module in names:
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    restore = _attribute_sevennet_fast_convolution(stack, names)
    per_module: dict[str, float] = defaultdict(float)
    seen: set[int] = set()

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            owner = stack[-1] if len(stack) > 1 else "<potential's own code, outside submodules>"
            per_module[owner] += storage.nbytes() / 2**20
        return tensor

    original_grad = torch.autograd.grad

    def named_grad(*args, **kwargs):  # forces / stress: the gradient graph kept for the training backward
        stack.append("<torch.autograd.grad with create_graph: forces / stress>")
        try:
            return original_grad(*args, **kwargs)
        finally:
            stack.pop()

    labelled = FeaturizedSet.build("profile", [atoms], potential).batch([0], potential)
    potential.train()
    try:
        torch.autograd.grad = named_grad
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            potential(labelled.batch, forces=True, stress=True)
    finally:
        torch.autograd.grad = original_grad
        for handle in handles:
            handle.remove()
        restore()
    return dict(sorted(per_module.items(), key=lambda item: -item[1]))


def _attribute_sevennet_fast_convolution(stack: list[str], names: dict):
    """atomtune's SevenNet convolution runs outside the sevenn module's ``forward`` (no hook fires): name it while it
    runs. Returns the function that undoes this."""
    from atomtune.models import sevennet

    original = sevennet.EdgeTensorProductConvolution.__call__

    def named_call(self, module, data):
        stack.append(f"{names.get(module, type(module).__name__)} (atomtune convolution)")
        try:
            return original(self, module, data)
        finally:
            stack.pop()

    sevennet.EdgeTensorProductConvolution.__call__ = named_call
    return lambda: setattr(sevennet.EdgeTensorProductConvolution, "__call__", original)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sevennet-0", help="a model name load_potential knows")
    parser.add_argument("--atoms", type=int, default=108, help=f"atoms per Ni–Al cell, of {sorted(REPEATS)}")
    parser.add_argument("--top", type=int, default=12, help="rows to print")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(args.threads)
    potential = load_potential(args.model, dtype="float32", trust=True)
    per_module = saved_bytes_per_module(potential, nial_cell(args.atoms))
    total = sum(per_module.values())
    print(f"{args.model}, {args.atoms} atoms: {total:.0f} MiB saved for backward")
    for name, mib in list(per_module.items())[: args.top]:
        print(f"{mib:9.1f} MiB {100 * mib / total:5.1f} %  {name}")
    return per_module


if __name__ == "__main__":
    main()
