"""Benchmark: one epoch of SevenNet-0 fine-tuning with atomtune's ``Trainer`` against ``sevenn train`` (fine_tune preset; CPU, ``--device cuda`` on a GPU).

Same data as ``bench_finetune_chgnet.py`` (EMT-labelled fcc cells of 8–32 atoms, or ``--atoms N`` each; same split). ``sevenn train`` runs the
``fine_tune`` preset (SevenNet-0 11Jul2024, Adam lr 0.004, Huber δ 0.01, force weight 1, stress weight 0.01 in kbar,
stress trained) with our epochs, batch size and files; its epoch time is read from ``log.sevenn`` ("Epoch N elapsed",
training + validation). atomtune trains the same checkpoint (full fine-tuning, Huber δ 0.01, lr 0.004, constant
schedule, E0 re-estimation and EMA off); its epoch time is the history's (training + validation). Each side runs in its
own process with an explicit torch thread count (peak memory = that process's max RSS); sides alternate over
``--repeats`` rounds and the best is reported. Results go to ``benchmarks/results/finetune_sevennet.json``.
``--in-process`` runs atomtune's side in this process (``sevenn train`` is always its own process).

    python benchmarks/bench_finetune_sevennet.py --structures 40 --epochs 2 --threads 1
    python benchmarks/bench_finetune_sevennet.py --atoms 256 --structures 8 --epochs 1 --batch-size 1 --repeats 2 \\
        --out benchmarks/results/finetune_sevennet_large.json                # 6 train / 2 valid cells of 256 atoms
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_finetune_chgnet import (  # noqa: E402  (same data, same runner)
    alternate_sides,
    benchmark_structures,
    cubic_repeat,
    finetune_arguments,
    split,
    with_peak_memory,
    write_record,
)


def run_atomtune(args) -> dict:
    from atomtune.finetune import Full, LossWeights, Trainer, TrainingSettings, default_loss_weights
    from atomtune.models import load_potential

    train, valid = split(benchmark_structures(args.structures, args.seed, args.atoms))
    potential = load_potential("sevennet-0", device=args.device)
    defaults = default_loss_weights("sevennet")
    settings = TrainingSettings(
        epochs=args.epochs,
        learning_rate=0.004,
        batch_size=args.batch_size,
        scheduler="constant",
        ema_decay=None,
        refit_e0=False,
        early_stopping_patience=None,
        restore_best=False,
        gradient_clip=None,
        progress=False,
        seed=args.seed,
        loss=LossWeights(defaults.energy, defaults.forces, defaults.stress, "huber", 0.01, "sevenn fine_tune preset"),
    )
    started = time.perf_counter()
    result = Trainer(settings).fit(potential, train, valid, Full())
    epochs = [h for h in result.history if h["epoch"] > 0]
    return {
        "seconds_per_epoch": min(h["seconds"] for h in epochs),
        "seconds_per_epoch_all": [h["seconds"] for h in epochs],
        "featurize_seconds": result.metrics["featurize_seconds"],
        "total_seconds": time.perf_counter() - started,
        "valid_forces_mae_before": result.history[0]["valid_forces_mae"],
        "valid_forces_mae_after": epochs[-1]["valid_forces_mae"],
    }


def run_sevenn(args) -> dict:
    import yaml
    from ase.io import write

    train, valid = split(benchmark_structures(args.structures, args.seed, args.atoms))
    work = Path(args.scratch) / "sevenn"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name, structures in (("train", train), ("valid", valid)):
        write(work / f"{name}.extxyz", structures, format="extxyz")  # energy/forces/stress from the calculators
    import sevenn

    config = yaml.safe_load((Path(sevenn.__file__).parent / "presets" / "fine_tune.yaml").read_text())
    config["train"].update(epoch=args.epochs, per_epoch=10**6, random_seed=args.seed, device=args.device)
    config["data"].update(
        batch_size=args.batch_size,
        load_trainset_path=[str(work / "train.extxyz")],
        load_validset_path=[str(work / "valid.extxyz")],
    )
    config["data"].pop("load_testset_path", None)
    (work / "input.yaml").write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    # `sevenn train` through its module, so that it also runs where sevenn is on PYTHONPATH without its console script
    sevenn_command = [sys.executable, "-m", "sevenn.main.sevenn", "train", "input.yaml", "-s"]
    process = subprocess.run(sevenn_command, cwd=work, capture_output=True, text=True)
    total = time.perf_counter() - started
    log = (work / "log.sevenn").read_text() if (work / "log.sevenn").exists() else ""
    if process.returncode != 0:
        raise RuntimeError(f"sevenn train failed:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}\n{log[-3000:]}")
    epochs = [_seconds(text) for text in re.findall(r"Epoch \d+ elapsed: ([0-9:.]+)", log)]
    force_mae = re.findall(r"Force\s*\(eV/A\)?\s*[^\n]*", log)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds_per_epoch": min(epochs),
        "seconds_per_epoch_all": epochs,
        "total_seconds": total,
        "peak_rss_mib_sevenn_process": children,
        "log_force_lines": force_mae[-2:],
    }


def _seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def measure_side(args) -> dict:
    """One side's run (``args.side``) with its thread count and peak memory (``sevenn train``: its process's RSS)."""
    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if args.side == "atomtune":
        return with_peak_memory(run_atomtune(args), args.device)
    result = run_sevenn(args)
    result["peak_rss_mib"] = result.pop("peak_rss_mib_sevenn_process")
    result["own_process"] = True  # `sevenn train` is always a process of its own: its peak stands with --in-process
    return result


def main(argv=None) -> dict:
    parser = finetune_arguments(__doc__, "finetune_sevennet", "sevenn")
    args = parser.parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(measure_side(args)))
        return {}
    if args.atoms is not None:
        cubic_repeat(args.atoms)  # a bad --atoms is refused here, not in the first side's process
    runs = alternate_sides(__file__, ("sevenn", "atomtune"), args,
                           ("structures", "atoms", "epochs", "batch_size", "threads", "seed", "device", "scratch"),
                           measure=measure_side)
    settings = {k: getattr(args, k) for k in ("structures", "atoms", "epochs", "batch_size", "threads", "repeats", "seed",
                                              "device")}
    return write_record("finetune_sevennet", "sevenn", args, settings,
                        benchmark_structures(args.structures, args.seed, args.atoms), runs)


if __name__ == "__main__":
    main()
