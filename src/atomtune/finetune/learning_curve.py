"""The learning-curve plot written next to every fine-tuned model: losses and validation errors per epoch.

Read by people deciding whether a run converged, over-fitted (validation turning up while training goes down) or needs more
epochs; written by :class:`atomtune.finetune.Trainer` at the end of a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_learning_curve(history: Sequence[dict], path: str | Path, title: str = "fine-tuning") -> Path:
    """Three panels — loss (train / replay / validation), validation energy MAE (meV/atom), force MAE (eV/Å) — to PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    loss_axis, energy_axis, force_axis = axes
    for key, label, style in (
        ("train_loss", "train", "-o"),
        ("replay_loss", "replay", "-s"),
        ("valid_loss", "validation", "-^"),
    ):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            loss_axis.plot(*zip(*points), style, label=label, markersize=3)
    loss_axis.set_yscale("log")
    loss_axis.set_ylabel("loss")
    loss_axis.legend()
    energy_axis.plot(epochs, [h["valid_energy_mae_mev_per_atom"] for h in history], "-o", markersize=3)
    energy_axis.set_ylabel("validation energy MAE (meV/atom)")
    force_axis.plot(epochs, [h["valid_forces_mae"] for h in history], "-o", markersize=3)
    force_axis.set_ylabel("validation force MAE (eV/Å)")
    for axis in axes:
        axis.set_xlabel("epoch (0: before training)")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
