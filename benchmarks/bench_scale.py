"""Benchmark: time and peak memory of one energy + forces + stress evaluation vs cell size N, per backbone (CPU).

For each model and each N (default 100, 1000, 10000 atoms) a rattled fcc Cu supercell of ~N atoms is evaluated with
``Potential.predict`` (featurisation, i.e. the backbone's own neighbour list / graph builder, included) in a fresh
subprocess, so the peak resident memory (``ru_maxrss``) belongs to that one evaluation; the memory of the loaded model
and interpreter is measured in the same subprocess before the evaluation and subtracted. The best of ``--repeats``
evaluations is the time. The scaling exponents (slope of log time and log memory vs log N between the two largest N) are
written with the points to ``--out`` (the committed runs: ``benchmarks/results/scale_<backbone>.json``); docs/lammps.md
quotes them. The per-edge memory measured
here sets ``atomtune.lammps.memory.BYTES_PER_EDGE`` (the estimate that refuses cells too large for memory).

    python benchmarks/bench_scale.py --threads 1
    python benchmarks/bench_scale.py --models sevennet-0 --sizes 100,1000 --repeats 1   # smoke test
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


def one_point(model: str, n_atoms: int, repeats: int, threads: int) -> dict:
    """Run in a subprocess: time and peak memory of predict on one cell."""
    import resource

    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    potential = load_potential(model, trust=True)
    atoms = cell(n_atoms)
    potential.predict([cell(4)])  # warm-up on a tiny cell: lazy imports, scripted modules
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    graph = potential.featurize(atoms)
    edges = _edge_count(potential, graph, atoms)
    del graph
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        potential.predict([atoms], batch_size=1)
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "n_atoms": len(atoms),
        "edges": edges,
        "seconds": min(times),
        "peak_memory_mib": (peak_kib - baseline_kib) / 1024.0,
        "bytes_per_edge": (peak_kib - baseline_kib) * 1024.0 / max(edges, 1),
    }


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
    parser.add_argument("--point", nargs=2, help=argparse.SUPPRESS)  # internal: MODEL N, run one point and print JSON
    args = parser.parse_args(argv)
    if args.point:
        print(json.dumps(one_point(args.point[0], int(args.point[1]), args.repeats, args.threads)))
        return {}
    import numpy as np

    points = []
    for model in args.models.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
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
                ],
                capture_output=True,
                text=True,
                env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
            )
            if completed.returncode != 0:
                point = {"model": model, "n_atoms": size, "error": completed.stderr.strip().splitlines()[-1:]}
            else:
                point = json.loads(completed.stdout.strip().splitlines()[-1])
            point["wall_seconds_including_load"] = time.perf_counter() - started
            print(json.dumps(point), flush=True)
            points.append(point)
    exponents = {}
    for model in args.models.split(","):
        mine = sorted((p for p in points if p["model"] == model and "error" not in p), key=lambda p: p["n_atoms"])
        if len(mine) >= 2:
            n = np.log([p["n_atoms"] for p in mine[-2:]])
            exponents[model] = {
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
        "points": points,
        "scaling_exponents": exponents,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(exponents, indent=1))
    return result


if __name__ == "__main__":
    main()
