"""Benchmark: peak memory and time of one predict and one fine-tuning step (batch 1) vs atoms per cell, per backbone
(CPU), with the scaling exponents of time and memory in N.

Cells: fcc Ni–Al (a = 3.57 Å, 25 % Al on random sites, rattled 0.05 Å, EMT labels) of 108, 256, 500 and 1000 atoms
(3³, 4³, 5³ and 5×5×10 conventional cells). For each backbone and size a fresh process loads the model (float32), warms
up on a 4-atom cell (one predict, one step), then measures

- **predict**: ``Potential.predict([cell])`` (energy, forces, stress; featurisation included);
- **fine-tuning step**: what :class:`atomtune.finetune.Trainer` does per step at batch 1 — the featurised cell collated,
  forward with forces and stress, the backbone's default loss (energy, forces, stress), backward through the force /
  stress graph (double backward), AdamW step (featurisation, done once per training run, is timed apart);

each with the process's peak resident memory reset before it (Linux ``/proc/self/clear_refs``), so the peak belongs to
that one call (``--native`` adds, in a process of its own, a training step of CHGNet's / sevenn's own model on the
same cell, warmed up the same way): ``peak_rss_mib`` is the whole process (interpreter, torch, model, cell and the call: what must fit in
RAM), ``peak_above_before_mib`` the growth during the call. The exponents are least-squares slopes of log time and log
peak-above-before memory vs log N over all sizes (and between the two largest). A size whose memory, extrapolated from
the smaller ones with that slope, would pass ``--max-gib`` is not run (the machine is shared; the extrapolation is
written instead). Results go to ``benchmarks/results/memory_scaling.json``.

Models: ``chgnet-0.3.0``, ``sevennet-0``, and ``mace-tiny`` (the test suite's tiny MACE, 16x0e+16x1o: a real MACE-MP
medium cannot be downloaded here, so MACE's numbers are for that tiny architecture, not the foundation model's).

    python benchmarks/bench_memory_scaling.py --threads 1
    python benchmarks/bench_memory_scaling.py --models chgnet-0.3.0 --sizes 108,256 --out /tmp/memory.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "memory_scaling.json"
#: atoms per cell → repeats of the 4-atom conventional fcc cell
REPEATS = {4: (1, 1, 1), 108: (3, 3, 3), 256: (4, 4, 4), 500: (5, 5, 5), 864: (6, 6, 6), 1000: (5, 5, 10), 2048: (8, 8, 8)}
LATTICE_CONSTANT = 3.57  # Å, Ni3Al (L1₂) — the random fcc alloy is close to it


def nial_cell(n_atoms: int, seed: int = 0):
    """A rattled random fcc Ni–Al cell (25 % Al) of ``n_atoms`` atoms (a key of :data:`REPEATS`), EMT-labelled."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from atomtune.data.dataset import attach_labels

    if n_atoms not in REPEATS:
        raise SystemExit(f"--sizes: {n_atoms} atoms is not one of {sorted(REPEATS)}")
    rng = np.random.default_rng(seed)
    atoms = bulk("Ni", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat(REPEATS[n_atoms])
    atoms.set_chemical_symbols(["Al" if rng.random() < 0.25 else "Ni" for _ in range(len(atoms))])
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    attach_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    atoms.info["id"] = f"NiAl-{n_atoms}"
    return atoms


def _memory_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure(call) -> dict:
    """Wall seconds and peak memory of ``call()``: the peak resident set is reset first (``clear_refs`` 5), so
    ``VmHWM`` afterwards is this call's peak."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _memory_kib("VmRSS")
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    peak = _memory_kib("VmHWM")
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "peak_above_before_mib": (peak - before) / 1024}


def fine_tuning_step(potential, loss_function, optimizer, featurized):
    """One step of the Trainer's loop at batch 1 (collate, forward with forces/stress, loss, backward, AdamW)."""
    labelled = featurized.batch([0], potential)
    optimizer.zero_grad(set_to_none=True)
    prediction = potential(labelled.batch, forces=True, stress=loss_function.needs_stress)
    loss, _ = loss_function(prediction, labelled.target, labelled.batch.n_atoms)
    loss.backward()
    optimizer.step()


def native_trainer(backbone: str):
    """The backbone's own model set up for training (float32, Adam): ``(make_step, description)`` where
    ``make_step(atoms)`` gives one training step on ``atoms`` at batch 1 (energy / forces / stress MSE); None for a
    backbone without one here. The reference for "peak memory per atom in training not above the native trainer's":
    CHGNet's ``CHGNet`` module as its ``Trainer`` calls it (task "efs", forces and stress with ``create_graph``); sevenn's
    model as ``sevenn train`` runs it (``ForceStressOutput`` in training mode, e3nn convolutions)."""
    import contextlib
    import io

    import torch

    from atomtune.data.dataset import labels_of

    if backbone == "chgnet":
        from chgnet.model import CHGNet
        from pymatgen.io.ase import AseAtomsAdaptor

        with contextlib.redirect_stdout(io.StringIO()):
            model = CHGNet.load(model_name="0.3.0")
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

        def make_step(atoms):
            labels = labels_of(atoms)
            forces = torch.as_tensor(labels.forces, dtype=torch.float32)
            energy_per_atom = torch.tensor([labels.energy / len(atoms)], dtype=torch.float32)
            graph = model.graph_converter(AseAtomsAdaptor.get_structure(atoms))

            def step():
                optimizer.zero_grad(set_to_none=True)
                prediction = model([graph], task="efs")
                loss = (torch.nn.functional.mse_loss(prediction["e"], energy_per_atom)
                        + torch.nn.functional.mse_loss(prediction["f"][0], forces)
                        + 0.1 * prediction["s"][0].square().mean())
                loss.backward()
                optimizer.step()

            return step

        return make_step, "CHGNet module, task efs, training mode (as chgnet.trainer.Trainer)"
    if backbone == "sevennet":
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.calculator import SevenNetCalculator
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        calculator = SevenNetCalculator("7net-0", device="cpu")
        model = calculator.model
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

        def make_step(atoms):
            labels = labels_of(atoms)
            forces = torch.as_tensor(labels.forces, dtype=torch.float32)

            def step():
                graph = unlabeled_atoms_to_graph(atoms, calculator.cutoff, with_shift=False)
                data = AtomGraphData.from_numpy_dict(graph)
                optimizer.zero_grad(set_to_none=True)
                output = model(data)
                loss = ((output[KEY.PRED_TOTAL_ENERGY] - labels.energy).square().sum() / len(atoms) ** 2
                        + torch.nn.functional.mse_loss(output[KEY.PRED_FORCE], forces)
                        + 0.01 * output[KEY.PRED_STRESS].square().mean())
                loss.backward()
                optimizer.step()

            return step

        return make_step, "sevenn AtomGraphSequential in training mode (as sevenn train: e3nn convolutions)"
    return None


def native_point(model: str, n_atoms: int, threads: int) -> dict:
    """In a fresh process of its own: one training step of the backbone's own model on the ``n_atoms`` cell, warmed
    up on a 4-atom cell as atomtune's side is (so both peaks are measured the same way)."""
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    backbone = next((name for name in ("chgnet", "sevennet") if model.startswith(name)), None)
    trainer = native_trainer(backbone) if backbone else None
    if trainer is None:
        return {}
    make_step, description = trainer
    make_step(nial_cell(4, seed=1))()
    step = make_step(nial_cell(n_atoms))
    return {"native_fine_tuning_step": {**measure(step), "what": description}}


def one_point(model: str, n_atoms: int, threads: int) -> dict:
    """In a fresh process: predict and one fine-tuning step on the ``n_atoms`` cell."""
    import torch

    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.loss import EnergyForceStressLoss, default_loss_weights
    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    potential = load_potential(model, dtype="float32", trust=True)  # mace-tiny: this script's own file
    loss_function = EnergyForceStressLoss(default_loss_weights(potential.backbone))
    optimizer = torch.optim.AdamW([p for p in potential.parameters() if p.requires_grad], lr=1e-6)
    small, atoms = nial_cell(4, seed=1), nial_cell(n_atoms)
    potential.predict([small])  # warm-up: lazy imports, scripted modules, optimizer state
    fine_tuning_step(potential, loss_function, optimizer, FeaturizedSet.build("warm-up", [small], potential))

    predict = measure(lambda: potential.predict([atoms], batch_size=1))
    featurized = {}
    featurize = measure(lambda: featurized.setdefault("set", FeaturizedSet.build("train", [atoms], potential)))
    step = measure(lambda: fine_tuning_step(potential, loss_function, optimizer, featurized["set"]))
    from ase.neighborlist import neighbor_list

    return {
        "model": model,
        "backbone": potential.backbone,
        "n_atoms": len(atoms),
        "edges_within_cutoff": int(len(neighbor_list("i", atoms, potential.cutoff))),
        "cutoff_a": float(potential.cutoff),
        "predict": predict,
        "featurize_for_training": featurize,
        "fine_tuning_step": step,
    }


def slope(sizes, values) -> float | None:
    """Least-squares slope of log(values) vs log(sizes) (None with fewer than two points)."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def exponents(points: list[dict]) -> dict:
    """Scaling exponents of time and memory (peak above before) in N, all sizes and the two largest."""
    result = {}
    for call in ("predict", "fine_tuning_step", "native_fine_tuning_step"):
        if not all(call in point for point in points):
            continue
        sizes = [p["n_atoms"] for p in points]
        seconds = [p[call]["seconds"] for p in points]
        memory = [p[call]["peak_above_before_mib"] for p in points]
        result[call] = {
            "time": slope(sizes, seconds),
            "memory": slope(sizes, memory),
            "time_two_largest": slope(sizes[-2:], seconds[-2:]),
            "memory_two_largest": slope(sizes[-2:], memory[-2:]),
            "between_n_atoms": [sizes[0], sizes[-1]],
        }
    return result


def extrapolated_peak_gib(points: list[dict], n_atoms: int) -> float | None:
    """The fine-tuning step's whole-process peak at ``n_atoms`` (GiB) from the two largest measured sizes."""
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    growth = slope([a["n_atoms"], b["n_atoms"]],
                   [a["fine_tuning_step"]["peak_above_before_mib"], b["fine_tuning_step"]["peak_above_before_mib"]])
    above = b["fine_tuning_step"]["peak_above_before_mib"] * (n_atoms / b["n_atoms"]) ** max(growth, 1.0)
    base = b["fine_tuning_step"]["peak_rss_mib"] - b["fine_tuning_step"]["peak_above_before_mib"]
    return (base + above) / 1024


def largest_cell(points: list[dict], memory_mib: float) -> int | None:
    """Atoms per cell whose fine-tuning step (batch 1) would just fit ``memory_mib`` of RAM, extrapolated from the
    largest measured cell with the memory exponent over all sizes (at least 1: never optimistic)."""
    if len(points) < 2:
        return None
    largest = points[-1]["fine_tuning_step"]
    base = largest["peak_rss_mib"] - largest["peak_above_before_mib"]
    growth = max(exponents(points)["fine_tuning_step"]["memory"], 1.0)
    return int(points[-1]["n_atoms"] * ((memory_mib - base) / largest["peak_above_before_mib"]) ** (1 / growth))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="chgnet-0.3.0,sevennet-0,mace-tiny", help="comma-separated model names")
    parser.add_argument("--sizes", default="108,256,500,1000", help=f"atoms per cell, of {sorted(REPEATS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-gib", type=float, default=12.0,
                        help="skip a size whose extrapolated peak passes this (GiB; the machine is shared)")
    parser.add_argument("--native", action="store_true",
                        help="also measure a training step of CHGNet's / sevenn's own model (own process, same cell)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true",
                        help="add these sizes to the --out file of an earlier run (same sizes are replaced)")
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)  # internal: MODEL N → one point as JSON
    args = parser.parse_args(argv)
    if args.point:
        measured = native_point if args.native else one_point
        print("POINT " + json.dumps(measured(args.point[0], int(args.point[1]), args.threads)))
        return {}

    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    result = {
        "benchmark": "memory_scaling",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30},
        "threads": args.threads,
        "dtype": "float32",
        "cells": "random fcc Ni-Al (25 % Al), a = 3.57 Å, rattled 0.05 Å",
        "models": {},
    }
    if args.append and args.out.exists():  # add or replace sizes of an earlier run, keep the rest of it
        earlier = json.loads(args.out.read_text())
        result["models"] = earlier["models"]
        result["dates"] = earlier.get("dates", [earlier["date"]]) + [result["date"]]
    sizes = [int(s) for s in args.sizes.split(",")]
    for model in args.models.split(","):
        spec = model
        if model == "mace-tiny":
            sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
            from mace_tiny import make_tiny_mace_model

            spec = str(make_tiny_mace_model(workdir / "tiny.model"))
        kept = result["models"].get(model, {})
        points = [point for point in kept.get("points", []) if point["n_atoms"] not in sizes]
        skipped = [entry for entry in kept.get("skipped", []) if entry["n_atoms"] not in sizes]
        for size in sizes:
            projected = extrapolated_peak_gib(points, size)
            if projected is not None and projected > args.max_gib:
                skipped.append({"n_atoms": size, "extrapolated_fine_tuning_peak_gib": projected})
                print(f"{model} {size}: skipped, extrapolated peak {projected:.1f} GiB > --max-gib", flush=True)
                continue
            load = os.getloadavg()[0]
            point = {}
            for native in [False, True] if args.native else [False]:  # each side in a fresh process
                completed = subprocess.run(
                    [sys.executable, __file__, "--point", spec, str(size), "--threads", str(args.threads)]
                    + (["--native"] if native else []),
                    capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                )
                if completed.returncode != 0:
                    skipped.append({"n_atoms": size, "native": native,
                                    "error": (completed.stdout + completed.stderr)[-2000:]})
                    print(f"{model} {size}: failed\n{completed.stderr[-2000:]}", flush=True)
                    break
                point.update(json.loads(completed.stdout.split("POINT ", 1)[1]))
            if "fine_tuning_step" not in point:
                continue
            point["model"], point["load_average_before"] = model, load
            point["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            points.append(point)
            points.sort(key=lambda point: point["n_atoms"])
            print(f"{model:13s} N={size:5d}: predict {point['predict']['seconds']:7.2f} s "
                  f"{point['predict']['peak_rss_mib']:7.0f} MiB; step {point['fine_tuning_step']['seconds']:7.2f} s "
                  f"{point['fine_tuning_step']['peak_rss_mib']:7.0f} MiB "
                  f"(+{point['fine_tuning_step']['peak_above_before_mib']:.0f}); load {load:.1f}", flush=True)
            if "native_fine_tuning_step" in point:
                native = point["native_fine_tuning_step"]
                print(f"{'':13s} native step {native['seconds']:7.2f} s {native['peak_rss_mib']:7.0f} MiB "
                      f"(+{native['peak_above_before_mib']:.0f})", flush=True)
        result["models"][model] = {"points": points, "skipped": skipped,
                                   "scaling_exponents": exponents(points) if len(points) >= 2 else None}
        if points:
            largest = points[-1]
            result["models"][model]["largest_cell_measured"] = {
                "n_atoms": largest["n_atoms"],
                "fine_tuning_step_peak_rss_gib": largest["fine_tuning_step"]["peak_rss_mib"] / 1024,
                "fine_tuning_step_mib_per_atom": largest["fine_tuning_step"]["peak_above_before_mib"] / largest["n_atoms"],
                "extrapolated_largest_cell_for_24_gb": largest_cell(points, 24e9 / 2**20),
            }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({model: entry["scaling_exponents"] for model, entry in result["models"].items()}, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
