"""Benchmark: one epoch of full MACE fine-tuning with atomtune's ``Trainer`` against mace's own ``mace_run_train``
(``--foundation_model``; CPU, ``--device cuda`` on a GPU).

The real MACE-MP-0 medium cannot be downloaded on the development machines, so by default the foundation model is a
randomly initialised ScaleShiftMACE of the MACE-MP-0 *medium* architecture (128x0e+128x1o hidden, max_L 1, max_ell 3,
correlation 3, 2 residual interactions, r_max 6 Å, 89 elements; ``bench_predict_mace.medium_like_model``): **random
weights at MACE-MP-medium size, a speed measurement only** — the cost of a step is the medium model's, the errors mean
nothing. ``--model tiny`` is the test suite's tiny MACE (the smoke run), ``--model PATH`` any ``.model`` file.

Same data on both sides: EMT-labelled fcc cells of 8–32 atoms (``bench_finetune_chgnet.benchmark_structures`` with Ni,
Cu and Al hosts, which every model here knows; ``--atoms N`` for N-atom cells), the same split, float32 (``--dtype``),
the same loss (mace's ``stress`` loss with its default weights: energy per atom 1, forces 100, stress 1 (eV/Å³)⁻², MSE,
which is also atomtune's ``default_loss_weights("mace")``), batch size, learning rate, epochs, gradient clipping at norm
10, no EMA. ``mace_run_train`` gets the file as ``--foundation_model`` with ``--multiheads_finetuning False`` (the
multi-head replay would download MP data and train a second head: work atomtune does not do),
``--foundation_model_elements True`` (keep all 89 elements, as atomtune does: the symmetric contractions carry weights
per element), ``--E0s foundation`` and ``--plot False``. What still differs: mace uses Adam with AMSGrad, weight decay
5e-7 and ReduceLROnPlateau, atomtune AdamW without weight decay and its ``plateau`` schedule (neither changes the work of
a step); mace's training loader drops a last partial batch, so the training set must be a multiple of the batch size.

mace_run_train runs through its own entry point (``mace.cli.run_train.run`` on the parsed command line, what the console
script calls) inside the side's process, so that its epochs can be timed: from the start of ``train_one_epoch`` to the
end of the validation ``evaluate`` after it (training + validation, as atomtune's history counts an epoch; mace's
checkpoint writing after validation is not counted), in wall and in CPU time (the process's; less sensitive to other
work on a shared machine, so the record also has the CPU-time ratio). Each side runs in its own subprocess with an explicit torch thread
count (peak memory = that process's max RSS); sides alternate over ``--repeats`` rounds and the best round of each is
reported. ``--in-process`` runs atomtune's side in this process (mace_run_train always gets its own process: it sets
torch's default dtype and logging for the whole process). Results go to ``benchmarks/results/finetune_mace.json``.

    python benchmarks/bench_finetune_mace.py --structures 20 --epochs 2 --batch-size 4 --repeats 2 --threads 1
    python benchmarks/bench_finetune_mace.py --model tiny --structures 5 --epochs 1 --batch-size 2 --in-process \\
        --out /tmp/finetune_mace.json                                        # smoke run
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
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

#: Elements of the tiny test model, so that ``--model tiny`` and the medium-size model train on the same cells.
HOSTS = [("Ni", 3.52), ("Cu", 3.61), ("Al", 4.05)]


def loss_weights():
    """atomtune's documented MACE loss weights (mace_run_train's ``stress`` loss defaults); both sides get them."""
    from atomtune.finetune import default_loss_weights

    return default_loss_weights("mace")


def gradient_clip() -> float:
    """atomtune's default gradient clipping norm (also mace_run_train's ``--clip_grad`` default); both sides get it."""
    from atomtune.finetune import TrainingSettings

    return TrainingSettings.gradient_clip


def data(args):
    """The (train, valid) structures of this run."""
    return split(benchmark_structures(args.structures, args.seed, args.atoms, hosts=HOSTS))


def run_atomtune(args) -> dict:
    from atomtune.finetune import Full, Trainer, TrainingSettings
    from atomtune.models import load_potential

    train, valid = data(args)
    potential = load_potential(args.model, device=args.device, dtype=args.dtype, trust=True)  # this run's own file
    settings = TrainingSettings(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        scheduler="plateau",
        ema_decay=None,
        refit_e0=False,
        realign_e0=False,
        early_stopping_patience=None,
        restore_best=False,
        gradient_clip=gradient_clip(),
        progress=False,
        learning_curve=False,
        seed=args.seed,
        loss=loss_weights(),
    )
    trainer = Trainer(settings)
    cpu_seconds = []
    original_epoch = trainer._train_epoch

    def timed_epoch(*a, **k):  # CPU time from the start of an epoch's training to its history record (after validation)
        timed_epoch.started = time.process_time()
        return original_epoch(*a, **k)

    trainer._train_epoch = timed_epoch
    started = time.perf_counter()
    result = trainer.fit(potential, train, valid, Full(),
                         callback=lambda record: cpu_seconds.append(time.process_time() - timed_epoch.started))
    epochs = [h for h in result.history if h["epoch"] > 0]
    return {
        "seconds_per_epoch": min(h["seconds"] for h in epochs),
        "seconds_per_epoch_all": [h["seconds"] for h in epochs],
        "cpu_seconds_per_epoch_all": cpu_seconds,
        "featurize_seconds": result.metrics["featurize_seconds"],
        "total_seconds": time.perf_counter() - started,
        "valid_forces_mae_before": result.history[0]["valid_forces_mae"],
        "valid_forces_mae_after": epochs[-1]["valid_forces_mae"],
    }


def mace_command_line(args, work: Path) -> list[str]:
    """mace_run_train's options for this run (the same as the console script's command line)."""
    weights = loss_weights()
    if weights.kind != "mse":
        raise SystemExit(f"atomtune's MACE loss is {weights.kind}; mace_run_train's stress loss is MSE: not comparable.")
    return [
        "--name", "bench", "--work_dir", str(work), "--seed", str(args.seed), "--device", args.device,
        "--default_dtype", args.dtype,
        "--train_file", str(work / "train.extxyz"), "--valid_file", str(work / "valid.extxyz"),
        "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--stress_key", "REF_stress",
        "--foundation_model", args.model, "--multiheads_finetuning", "False", "--foundation_model_elements", "True",
        "--E0s", "foundation",
        "--loss", "stress", "--energy_weight", str(weights.energy), "--forces_weight", str(weights.forces),
        "--stress_weight", str(weights.stress),
        "--batch_size", str(args.batch_size), "--valid_batch_size", str(args.batch_size),
        "--lr", str(args.learning_rate),
        "--max_num_epochs", str(args.epochs), "--clip_grad", str(gradient_clip()), "--plot", "False",
    ]  # fmt: skip


def write_mace_extxyz(path: Path, structures) -> None:
    """``structures`` with their labels under mace's REF_ keys (ASE units, ASE stress sign, as mace reads them)."""
    from ase.io import write

    from atomtune.data.dataset import labels_of

    copies = []
    for atoms in structures:
        labels, copy = labels_of(atoms), atoms.copy()
        copy.calc = None
        copy.info["REF_energy"] = labels.energy
        copy.arrays["REF_forces"] = labels.forces
        copy.info["REF_stress"] = labels.stress
        copies.append(copy)
    write(path, copies, format="extxyz")


def run_mace(args) -> dict:
    """``mace_run_train`` on the same data, its epochs timed around its own ``train_one_epoch`` and ``evaluate``."""
    from mace import tools
    from mace.cli import run_train

    train, valid = data(args)
    work = Path(args.scratch) / "mace"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_mace_extxyz(work / "train.extxyz", train)
    write_mace_extxyz(work / "valid.extxyz", valid)

    training = importlib.import_module("mace.tools.train")  # the module (mace.tools.train is also a function's name)
    epoch_seconds, cpu_seconds, valid_force_mae = [], [], []
    original_epoch, original_evaluate = training.train_one_epoch, training.evaluate

    def timed_epoch(*a, **k):
        timed_epoch.started = time.perf_counter(), time.process_time()
        return original_epoch(*a, **k)

    def timed_evaluate(*a, **k):
        result = original_evaluate(*a, **k)
        if getattr(timed_epoch, "started", None) is not None:  # the validation that closes an epoch
            epoch_seconds.append(time.perf_counter() - timed_epoch.started[0])
            cpu_seconds.append(time.process_time() - timed_epoch.started[1])
            timed_epoch.started = None
            valid_force_mae.append(result[1].get("mae_f"))
        return result

    training.train_one_epoch, training.evaluate = timed_epoch, timed_evaluate
    options = tools.build_default_arg_parser().parse_args(mace_command_line(args, work))
    log = io.StringIO()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            run_train.run(options)
    except Exception as error:
        raise RuntimeError(f"mace_run_train failed ({error!r}):\n{log.getvalue()[-4000:]}") from error
    total = time.perf_counter() - started
    if not epoch_seconds:
        raise RuntimeError(f"mace_run_train ran no epoch:\n{log.getvalue()[-4000:]}")
    return {
        "seconds_per_epoch": min(epoch_seconds),
        "seconds_per_epoch_all": epoch_seconds,
        "cpu_seconds_per_epoch_all": cpu_seconds,
        "total_seconds": total,
        "valid_forces_mae_after": None if valid_force_mae[-1] is None else float(valid_force_mae[-1]),
        "command": "mace_run_train " + " ".join(mace_command_line(args, work)),
    }


def measure_side(args) -> dict:
    """One side's run (``args.side``) with its thread count and peak memory; with ``--in-process`` mace_run_train still
    runs in a process of its own (this script with ``--side mace``)."""
    import torch

    if args.side == "mace" and args.in_process:
        import subprocess

        forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in FORWARDED
                     if getattr(args, name) is not None]
        environment = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
        output = subprocess.run([sys.executable, __file__, "--side", "mace", *forwarded], env=environment,
                                capture_output=True, text=True)
        if output.returncode != 0:
            raise SystemExit(output.stdout[-4000:] + output.stderr[-4000:])
        return {**json.loads(output.stdout.split("RESULT ", 1)[1]), "own_process": True}
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = run_atomtune(args) if args.side == "atomtune" else run_mace(args)
    return with_peak_memory(result, args.device)


FORWARDED = ("model", "structures", "atoms", "epochs", "batch_size", "learning_rate", "dtype", "threads", "seed",
             "device", "scratch")


def model_file(choice: str, directory: Path) -> tuple[Path, str]:
    """The foundation ``.model`` file for ``--model`` and how the results name it."""
    if choice == "medium-like":
        from bench_predict_mace import medium_like_model

        note = ("random weights at MACE-MP-medium size (MACE-MP-0 medium architecture, randomly initialised: the real "
                "file cannot be downloaded here; a speed measurement only)")
        return medium_like_model(directory / "medium-like.model"), note
    if choice == "tiny":
        sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
        from mace_tiny import make_tiny_mace_model

        return (make_tiny_mace_model(directory / "tiny.model"),
                "tiny EMT-trained MACE of the test suite (16x0e+16x1o, 2 layers, r_max 4.5)")
    path = Path(choice)
    if not path.is_file():
        raise SystemExit(f"--model {choice}: no such file; pass medium-like, tiny or a MACE .model file.")
    return path, f"model file {path}"


def main(argv=None) -> dict:
    parser = finetune_arguments(__doc__, "finetune_mace", "mace", structures=20, scratch="/tmp/atomtune-bench-finetune-mace")
    parser.add_argument("--model", default="medium-like",
                        help="medium-like (default: random weights at MACE-MP-medium size), tiny, or a .model file")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(measure_side(args)))
        return {}
    if args.atoms is not None:
        cubic_repeat(args.atoms)
    train, _ = split(list(range(args.structures)))
    if len(train) % args.batch_size:
        parser.error(f"{len(train)} training structures (of --structures {args.structures}) are not a multiple of "
                     f"--batch-size {args.batch_size}: mace_run_train drops a last partial batch, so the two sides "
                     "would not do the same work. Change --structures or --batch-size.")
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    chosen = args.model
    path, note = model_file(chosen, scratch)
    args.model = str(path.resolve())  # both sides load this one file
    print(f"model: {note}", flush=True)
    runs = alternate_sides(__file__, ("mace", "atomtune"), args, FORWARDED, measure=measure_side)
    settings = {"model": chosen, **{k: getattr(args, k) for k in (
        "structures", "atoms", "epochs", "batch_size", "learning_rate", "dtype", "threads", "repeats", "seed", "device")}}
    record = write_record("finetune_mace", "mace", args, settings,
                          benchmark_structures(args.structures, args.seed, args.atoms, hosts=HOSTS), runs, model=note)
    # CPU time per epoch is less sensitive than wall time to other work on a shared machine: its ratio goes in too.
    cpu = {side: min(min(run["cpu_seconds_per_epoch_all"]) for run in side_runs) for side, side_runs in runs.items()}
    record["speedup_per_epoch_cpu_time"] = cpu["mace"] / cpu["atomtune"]
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"speed-up per epoch in CPU time: {record['speedup_per_epoch_cpu_time']:.2f}x")
    return record


if __name__ == "__main__":
    main()
