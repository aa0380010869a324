"""Benchmark: one epoch of full CHGNet fine-tuning with atomtune's ``Trainer`` against CHGNet's own ``Trainer`` (CPU;
``--device cuda`` on a GPU).

Same data on both sides: EMT-labelled fcc supercells of 8–32 atoms (Cu, Ni, Al, Pd, Ag, Pt, Au hosts, a third with ~30 %
substituted sites; strained ±3 %, rattled 0.05 Å; ``--atoms N``: every cell the cubic 4-atom cell repeated to N atoms
instead, as close to a cube as N/4 allows), a fixed train/validation split, CHGNet 0.3.0 in float32, full
fine-tuning, the same loss (MSE; energy per atom 1, forces 1, stress 0.1 GPa⁻², CHGNet's defaults), batch size, learning
rate, cosine schedule and epochs; each epoch ends with a validation pass on both sides. CHGNet's side gets stresses in
VASP's kbar convention (its ``StructureData`` multiplies them by −0.1), energies per atom, no magmoms; atomtune's side
trains with E0 re-estimation and EMA off, so the work per epoch is the same.

Each side runs in its own subprocess with an explicit torch thread count (peak memory is that process's max RSS); sides
alternate over ``--repeats`` rounds and the best round of each is reported, so load from other processes on a shared
machine hits both alike. Seconds per epoch = the best epoch of a run (training + validation). Results go to
``benchmarks/results/finetune_chgnet.json``. ``--in-process`` runs both sides in this process instead (the tiny smoke run
of ``gpu_suite.py``; peak RSS is then not per side); on a GPU each side also reports the peak memory torch allocated.

    python benchmarks/bench_finetune_chgnet.py --structures 40 --epochs 2 --threads 1
    python benchmarks/bench_finetune_chgnet.py --atoms 256 --structures 8 --epochs 1 --batch-size 1 --repeats 2 \\
        --out benchmarks/results/finetune_chgnet_large.json                  # 6 train / 2 valid cells of 256 atoms
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HOSTS = [("Cu", 3.61), ("Ni", 3.52), ("Al", 4.05), ("Pd", 3.89), ("Ag", 4.09), ("Pt", 3.92), ("Au", 4.08)]
REPEATS = [(2, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 1), (2, 2, 2)]  # 8–32 atoms from the 4-atom cubic cell


def benchmark_structures(count: int, seed: int = 0, atoms_per_cell: int | None = None, hosts=HOSTS):
    """``count`` EMT-labelled fcc cells (labels on a SinglePointCalculator, ASE units): 8–32 atoms each, or
    ``atoms_per_cell`` each (a multiple of 4); hosts cycle through ``hosts`` ((symbol, lattice constant Å) pairs, EMT
    elements), substitutions draw from the same symbols."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from atomtune.data.dataset import attach_labels

    large_repeat = None if atoms_per_cell is None else cubic_repeat(atoms_per_cell)
    elements = [host for host, _ in hosts]
    rng = np.random.default_rng(seed)
    structures = []
    for k in range(count):
        host, lattice_constant = hosts[k % len(hosts)]
        repeat = REPEATS[rng.integers(len(REPEATS))]  # drawn either way, so the rest of the stream does not change
        atoms = bulk(host, "fcc", a=lattice_constant, cubic=True).repeat(large_repeat or repeat)
        if k % 3 == 0:
            symbols = [
                elements[rng.integers(len(elements))] if rng.random() < 0.3 else symbol
                for symbol in atoms.get_chemical_symbols()
            ]
            atoms.set_chemical_symbols(symbols)
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        attach_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        atoms.info["id"] = f"bench-{k}"
        structures.append(atoms)
    return structures


def cubic_repeat(atoms_per_cell: int) -> tuple[int, int, int]:
    """The repeat (n1 ≤ n2 ≤ n3, n1·n2·n3 = atoms_per_cell / 4) of the 4-atom cubic fcc cell closest to a cube."""
    if isinstance(atoms_per_cell, bool) or atoms_per_cell < 4 or atoms_per_cell % 4:
        raise SystemExit(f"--atoms {atoms_per_cell}: must be a multiple of 4 (the cubic 4-atom fcc cell is repeated), "
                         "e.g. 108, 216 or 256.")
    cells = atoms_per_cell // 4
    shapes = [(a, b, cells // (a * b)) for a in range(1, cells + 1) for b in range(a, cells + 1)
              if cells % (a * b) == 0 and cells // (a * b) >= b]
    return min(shapes, key=lambda shape: shape[2] / shape[0])


def split(structures, valid_fraction: float = 0.2):
    n_valid = max(1, int(round(len(structures) * valid_fraction)))
    return structures[n_valid:], structures[:n_valid]


def run_atomtune(args) -> dict:
    from atomtune.finetune import Full, Trainer, TrainingSettings
    from atomtune.models import load_potential

    train, valid = split(benchmark_structures(args.structures, args.seed, args.atoms))
    potential = load_potential("chgnet-0.3.0", device=args.device)
    settings = TrainingSettings(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        ema_decay=None,
        refit_e0=False,
        early_stopping_patience=None,
        restore_best=False,
        gradient_clip=None,
        progress=False,
        seed=args.seed,
    )
    started = time.perf_counter()
    result = Trainer(settings).fit(potential, train, valid, Full())
    total = time.perf_counter() - started
    epochs = [h for h in result.history if h["epoch"] > 0]
    return {
        "seconds_per_epoch": min(h["seconds"] for h in epochs),
        "seconds_per_epoch_all": [h["seconds"] for h in epochs],
        "featurize_seconds": result.metrics["featurize_seconds"],
        "total_seconds": total,
        "valid_forces_mae_before": result.history[0]["valid_forces_mae"],
        "valid_forces_mae_after": epochs[-1]["valid_forces_mae"],
    }


def run_chgnet(args) -> dict:
    import contextlib
    import io

    import torch
    from chgnet.data.dataset import StructureData, collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer as ChgnetTrainer
    from pymatgen.io.ase import AseAtomsAdaptor
    from torch.utils.data import DataLoader

    from atomtune.data.dataset import labels_of

    train, valid = split(benchmark_structures(args.structures, args.seed, args.atoms))

    def dataset(structures):
        labels = [labels_of(atoms) for atoms in structures]
        from ase.stress import voigt_6_to_full_3x3_stress

        return StructureData(
            structures=[AseAtomsAdaptor.get_structure(atoms) for atoms in structures],
            energies=[label.energy / len(atoms) for label, atoms in zip(labels, structures)],  # CHGNet: eV/atom
            forces=[label.forces for label in labels],
            # CHGNet's StructureData multiplies by −0.1 (VASP kbar → GPa, VASP sign); CHGNet's own stress has ASE's sign.
            stresses=[-10.0 * voigt_6_to_full_3x3_stress(label.stress) * 160.21766208 for label in labels],
            shuffle=False,
        )

    with contextlib.redirect_stdout(io.StringIO()):
        model = CHGNet.load(model_name="0.3.0")
        train_data, valid_data = dataset(train), dataset(valid)
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_data, batch_size=args.batch_size, shuffle=True, collate_fn=collate_graphs,
                              generator=generator)
    valid_loader = DataLoader(valid_data, batch_size=args.batch_size, shuffle=False, collate_fn=collate_graphs)
    trainer = ChgnetTrainer(
        model=model,
        targets="efs",
        optimizer="Adam",
        scheduler="CosLR",
        criterion="MSE",
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        use_device=args.device,
        print_freq=10**6,
    )
    epoch_seconds = []
    original_train = trainer._train

    def timed_train(*a, **k):  # one epoch = CHGNet's _train + its _validate, timed from the start of _train
        timed_train.started = time.perf_counter()
        return original_train(*a, **k)

    original_validate = trainer._validate

    def timed_validate(*a, **k):
        result = original_validate(*a, **k)
        epoch_seconds.append(time.perf_counter() - timed_train.started)
        return result

    trainer._train, trainer._validate = timed_train, timed_validate
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(train_loader, valid_loader, save_dir=str(Path(args.scratch) / "chgnet-native"))
    total = time.perf_counter() - started
    history = trainer.training_history["f"]["val"]
    return {
        "seconds_per_epoch": min(epoch_seconds),
        "seconds_per_epoch_all": epoch_seconds,
        "total_seconds": total,
        "valid_forces_mae_after": float(history[-1]),
    }


def measure_side(args) -> dict:
    """One side's run (``args.side``) with its thread count, peak RSS (and peak GPU memory on a GPU) added."""
    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = run_atomtune(args) if args.side == "atomtune" else run_chgnet(args)
    return with_peak_memory(result, args.device)


def with_peak_memory(result: dict, device: str) -> dict:
    """``result`` with this process's peak RSS (MiB) and, on a GPU, the peak memory torch allocated there (MiB)."""
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        import torch

        result["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def alternate_sides(
    script: str, sides: tuple[str, str], args, forwarded: tuple[str, ...], measure=measure_side
) -> dict[str, list[dict]]:
    """Run ``script --side S`` for both sides, alternating the order over ``args.repeats`` rounds; parsed results.
    With ``args.in_process`` each side is ``measure(args)`` in this process instead (no interpreter start per side)."""
    environment = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_index in range(args.repeats):
        for side in sides if round_index % 2 == 0 else tuple(reversed(sides)):
            if args.in_process:
                result = measure(argparse.Namespace(**{**vars(args), "side": side}))
                if not result.pop("own_process", False):  # a side that ran in a child process of its own keeps its peak
                    result["peak_rss_mib"] = None  # this process ran every side so far: not this side's peak
                runs[side].append(result)
                print(f"{side:9s} {result['seconds_per_epoch']:.1f} s/epoch (in process)", flush=True)
                continue
            command = [sys.executable, script, "--side", side] + [
                f"--{name.replace('_', '-')}={getattr(args, name)}" for name in forwarded
                if getattr(args, name) is not None
            ]
            output = subprocess.run(command, env=environment, capture_output=True, text=True)
            if output.returncode != 0:
                raise SystemExit(output.stdout[-4000:] + output.stderr[-4000:])
            result = json.loads(output.stdout.split("RESULT ", 1)[1])
            result.pop("own_process", None)  # every side here has its own process
            runs[side].append(result)
            print(f"{side:9s} {result['seconds_per_epoch']:.1f} s/epoch, peak {result['peak_rss_mib']:.0f} MiB", flush=True)
    return runs


def write_record(benchmark: str, native: str, args, settings: dict, structures, runs: dict[str, list[dict]],
                 **extra) -> dict:
    """The result record of a fine-tuning benchmark (best round per side, ``native``'s best epoch over atomtune's as
    the speed-up, machine load now), written to ``args.out``; ``extra`` goes in after the name (e.g. the model)."""
    best = {side: min(results, key=lambda r: r["seconds_per_epoch"]) for side, results in runs.items()}
    record = {
        "benchmark": benchmark,
        **extra,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        "settings": settings,
        "atoms_per_structure": [int(min(len(a) for a in structures)), int(max(len(a) for a in structures))],
        "best": best,
        "runs": runs,
        "speedup_per_epoch": best[native]["seconds_per_epoch"] / best["atomtune"]["seconds_per_epoch"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"speed-up per epoch: {record['speedup_per_epoch']:.2f}x ({native} / atomtune); wrote {out}")
    return record


def finetune_arguments(doc: str, benchmark: str, native: str, structures: int = 40, in_process_help: str = "",
                       scratch: str = "/tmp/atomtune-bench-finetune") -> argparse.ArgumentParser:
    """The options every fine-tuning benchmark shares (``--side`` is atomtune or ``native``; the result goes to
    ``results/<benchmark>.json`` unless ``--out``); a script adds its own (learning rate, model, dtype)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--structures", type=int, default=structures)
    parser.add_argument("--atoms", type=int, default=None,
                        help="atoms per cell, a multiple of 4 (default: a mix of 8–32-atom cells)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device of both sides: cpu (default) or cuda")
    parser.add_argument("--in-process", action="store_true",
                        help=in_process_help or "run atomtune's side in this process (smoke runs)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"{benchmark}.json"))
    parser.add_argument("--side", choices=("atomtune", native), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=scratch, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> dict:
    parser = finetune_arguments(__doc__, "finetune_chgnet", "chgnet",
                                in_process_help="run both sides in this process (smoke runs)")
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    args = parser.parse_args(argv)
    if args.side:
        print("RESULT " + json.dumps(measure_side(args)))
        return {}

    if args.atoms is not None:
        cubic_repeat(args.atoms)  # a bad --atoms is refused here, not in the first side's process
    runs = alternate_sides(__file__, ("chgnet", "atomtune"), args,
                           ("structures", "atoms", "epochs", "batch_size", "learning_rate", "threads", "seed",
                            "device", "scratch"))
    settings = {k: getattr(args, k) for k in ("structures", "atoms", "epochs", "batch_size", "learning_rate", "threads",
                                              "repeats", "seed", "device")}
    return write_record("finetune_chgnet", "chgnet", args, settings,
                        benchmark_structures(args.structures, args.seed, args.atoms), runs)


if __name__ == "__main__":
    main()
