"""Benchmark: time and peak memory of one energy + forces + stress evaluation vs cell size N, per backbone (CPU).

For each model and each N (default 100, 1000, 10000 atoms) a rattled fcc Cu supercell of ~N atoms is evaluated with
``Potential.predict`` (featurisation, i.e. the backbone's own neighbour list / graph builder, included) in a fresh
subprocess, so the peak resident memory (``ru_maxrss``) belongs to that one evaluation; the memory of the loaded model
and interpreter is measured in the same subprocess before the evaluation and subtracted. The best of ``--repeats``
evaluations is the time. The scaling exponents (slope of log time and log memory vs log N between the two largest N) are
written with the points to ``--out`` (the committed runs: ``benchmarks/results/scale_<backbone>.json``); docs/lammps.md
quotes them. The per-edge memory measured
here sets ``atomtune.lammps.memory.BYTES_PER_EDGE`` (the estimate that refuses cells too large for memory).

``predict`` evaluates a cell whose estimated memory exceeds the budget in exact chunks (``atomtune.models.chunking``) and
refuses it when even one chunk cannot fit: each point records the chunk plan (grid, cluster atoms, work overhead) or the
refusal with its estimate, and the load average of the machine before and after. ``--budget-gib`` sets the budget (the
default: a fraction of MemAvailable), e.g. to measure chunked evaluation of a cell that would fit whole.

``--recompute off,on`` (comma-separated, run alternately for each model and size) forces
``potential.recompute_activations`` off or on (CHGNet, SevenNet: activations recomputed in the backward pass instead of
kept; "auto", the default, leaves it to the memory estimate); the points of a recomputing pass set
``atomtune.lammps.memory.BYTES_PER_EDGE_RECOMPUTED``.

``--neighbours N`` times, on the ~N-atom cell, each backbone's own graph building (``featurize``) against the neighbour
lists of vesin (if importable), matscipy and ASE at the backbone's cutoff, and checks that they find the same pairs.

    python benchmarks/bench_scale.py --threads 1
    python benchmarks/bench_scale.py --models sevennet-0 --sizes 100,1000 --repeats 1   # smoke test
    python benchmarks/bench_scale.py --models MACE.model --sizes 10000 --budget-gib 1 --out results/scale_chunked.json
    python benchmarks/bench_scale.py --neighbours 10000 --out benchmarks/results/scale_neighbours.json
    python benchmarks/bench_scale.py --models chgnet-0.3.0 --sizes 1000 --recompute off,on,off,on --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "scale.json"


def cell(n_atoms: int):
    """A rattled fcc Cu supercell (a = 3.61 Å) with about ``n_atoms`` atoms (4 n³, the cube closest to n_atoms)."""
    from ase.build import bulk

    n = max(1, round((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n, n, n))
    atoms.rattle(0.03, seed=0)
    return atoms


def one_point(model: str, n_atoms: int, repeats: int, threads: int, budget_gib: float | None = None,
              recompute: str = "auto") -> dict:
    """Run in a subprocess: time and peak memory of predict on one cell (chunked or refused as predict decides;
    ``recompute`` "on" / "off" forces ``potential.recompute_activations``, "auto" leaves it to the estimate)."""
    import resource

    from atomtune.models import chunking, load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    load_before = os.getloadavg()
    potential = load_potential(model, trust=True).eval()
    atoms = cell(n_atoms)
    potential.predict([cell(4)])  # warm-up on a tiny cell: lazy imports, scripted modules
    if budget_gib is not None:
        potential.memory_budget = budget_gib * 2**30
    if recompute != "auto":
        if not chunking.can_recompute(potential):
            return {"model": model, "n_atoms": len(atoms), "recompute": recompute, "error": "cannot recompute"}
        potential.recompute_activations = recompute == "on"
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    budget = chunking.memory_budget_bytes(potential)
    point = {
        "model": model,
        "n_atoms": len(atoms),
        "budget_gib": budget / 2**30,
        "estimated_gib": chunking.estimate_bytes(potential, len(atoms), chunking.number_density(atoms)) / 2**30,
        "recompute": recompute,
        "recomputed": chunking.can_recompute(potential) and chunking.recompute_wanted(
            potential, int(chunking.estimate_edges(potential, len(atoms), chunking.number_density(atoms)))
        ),
        "receptive_field_angstrom": potential.receptive_field,
    }
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            (record,) = potential.predict([atoms], batch_size=1)
            times.append(time.perf_counter() - start)
    except chunking.CellTooLargeError as error:
        point.update(refused=str(error), load_average_before=load_before, load_average_after=os.getloadavg())
        return point
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    edges = _edge_count(potential, None, atoms)
    point.update(
        edges=edges,
        seconds=min(times),
        peak_memory_mib=(peak_kib - baseline_kib) / 1024.0,
        bytes_per_edge=(peak_kib - baseline_kib) * 1024.0 / max(edges, 1),
        chunking=record.get("chunking"),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
    )
    return point


def neighbour_lists(models: list[str], n_atoms: int, threads: int, repeats: int = 2) -> list[dict]:
    """Time each backbone's own graph building vs vesin / matscipy / ASE neighbour lists on one ~n_atoms cell."""
    import numpy as np
    from ase.neighborlist import neighbor_list as ase_neighbor_list
    from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    atoms = cell(n_atoms)
    try:
        import vesin
    except ImportError:
        vesin = None

    def best(function):
        times, result = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            result = function()
            times.append(time.perf_counter() - start)
        return min(times), result

    rows = []
    for model in models:
        potential = load_potential(model, trust=True)
        cutoff = potential.cutoff
        own_seconds, graph = best(lambda potential=potential: potential.featurize(atoms))
        row = {"model": model, "n_atoms": len(atoms), "cutoff": cutoff, "load_average": os.getloadavg(),
               "own_graph_seconds": own_seconds, "own_graph_edges": _graph_edges(potential, graph)}
        del graph

        def pairs(i, j, shifts):
            order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i))
            return np.column_stack([i, j, shifts])[order]

        seconds, (i, j, shifts) = best(lambda cutoff=cutoff: matscipy_neighbour_list("ijS", atoms, cutoff))
        reference = pairs(i, j, shifts)
        row["matscipy_seconds"], row["matscipy_edges"] = seconds, len(i)
        seconds, (i, j, shifts) = best(lambda cutoff=cutoff: ase_neighbor_list("ijS", atoms, cutoff))
        row["ase_seconds"], row["ase_edges"] = seconds, len(i)
        row["ase_same_pairs_as_matscipy"] = bool(np.array_equal(pairs(i, j, shifts), reference))
        if potential.backbone == "chgnet":  # CHGNet's graph starts from pymatgen's neighbour list
            from pymatgen.io.ase import AseAtomsAdaptor

            structure = AseAtomsAdaptor.get_structure(atoms)
            seconds, found = best(lambda cutoff=cutoff, structure=structure: structure.get_neighbor_list(cutoff))
            row["pymatgen_seconds"], row["pymatgen_edges"] = seconds, len(found[0])
        if vesin is not None:
            calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
            seconds, (i, j, shifts) = best(
                lambda calculator=calculator: calculator.compute(atoms.positions, atoms.cell[:], True, "ijS")
            )
            row["vesin_version"] = vesin.__version__
            row["vesin_seconds"], row["vesin_edges"] = seconds, len(i)
            row["vesin_same_pairs_as_matscipy"] = bool(np.array_equal(pairs(i, j, shifts.astype(int)), reference))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _graph_edges(potential, graph) -> int:
    """Directed edges of a backbone's own graph (CHGNet: atom graph; SevenNet / MACE: edge_index)."""
    for name in ("atom_graph", "edge_index"):
        value = getattr(graph, name, None)
        if value is not None:
            return int(value.shape[0] if name == "atom_graph" else value.shape[1])
    return -1


def _edge_count(potential, graph, atoms) -> int:
    """Directed edges within the model's cutoff (from ASE's neighbour list, the same for every backbone)."""
    from ase.neighborlist import neighbor_list

    return int(len(neighbor_list("i", atoms, potential.cutoff)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="chgnet-0.3.0,sevennet-0", help="comma-separated model names / paths")
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated atom counts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget-gib", type=float, default=None, help="memory budget of predict (default: automatic)")
    parser.add_argument("--neighbours", type=int, default=None, help="time neighbour lists on an N-atom cell instead")
    parser.add_argument(
        "--recompute", default="auto",
        help="comma-separated modes run one after the other for each model and size (interleaved): off (keep every "
        "layer's activations), on (recompute them in the backward pass), auto (as predict decides by the estimate)",
    )
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)  # internal: MODEL N, run one point and print JSON
    args = parser.parse_args(argv)
    if args.point:
        print(json.dumps(one_point(args.point[0], int(args.point[1]), args.repeats, args.threads, args.budget_gib,
                                   args.recompute)))
        return {}
    if args.neighbours:
        rows = neighbour_lists(args.models.split(","), args.neighbours, args.threads, args.repeats)
        result = {"benchmark": "scale_neighbours", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
                  "threads": args.threads, "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        return result
    import numpy as np

    points = []
    modes = args.recompute.split(",")
    for model, size, mode in (
        (model, int(size), mode) for model in args.models.split(",") for size in args.sizes.split(",") for mode in modes
    ):
        started = time.perf_counter()
        completed = subprocess.run(
            [
                sys.executable,
                __file__,
                "--point",
                model,
                str(size),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                *(["--budget-gib", str(args.budget_gib)] if args.budget_gib is not None else []),
                "--recompute",
                mode,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
        )
        if completed.returncode != 0:
            point = {"model": model, "n_atoms": size, "recompute": mode,
                     "error": completed.stderr.strip().splitlines()[-1:]}
        else:
            point = json.loads(completed.stdout.strip().splitlines()[-1])
        point["wall_seconds_including_load"] = time.perf_counter() - started
        print(json.dumps(point), flush=True)
        points.append(point)
    exponents = {}
    for model, mode in ((model, mode) for model in args.models.split(",") for mode in modes):
        mine = sorted(
            (p for p in points if p["model"] == model and p.get("recompute", "auto") == mode and "seconds" in p),
            key=lambda p: p["n_atoms"],
        )
        if len(mine) >= 2:
            n = np.log([p["n_atoms"] for p in mine[-2:]])
            exponents[model if len(modes) == 1 else f"{model} recompute={mode}"] = {
                "time": float(np.diff(np.log([p["seconds"] for p in mine[-2:]]))[0] / np.diff(n)[0]),
                "memory": float(
                    np.diff(np.log([max(p["peak_memory_mib"], 1e-3) for p in mine[-2:]]))[0] / np.diff(n)[0]
                ),
                "between_n_atoms": [p["n_atoms"] for p in mine[-2:]],
            }
    result = {
        "benchmark": "scale",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other sessions)",
        "threads": args.threads,
        "budget_gib": args.budget_gib,
        "points": points,
        "scaling_exponents": exponents,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(exponents, indent=1))
    return result


if __name__ == "__main__":
    main()
