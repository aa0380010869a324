"""Chunked vs whole-cell evaluation of one large cell in float64: max |ΔE|/atom, |ΔF|, |Δσ| and both times / peak memory.

    python benchmarks/check_chunking_exact.py MODEL --atoms 10000 --budget-gib 1 --out benchmarks/results/scale_chunking_exact.json

Whole and chunked run in separate subprocesses (peak resident memory of each); the chunked one gets the memory budget
(``Potential.memory_budget``) so that ``predict`` splits the cell itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import cell  # noqa: E402


def run(model: str, n_atoms: int, budget_gib: float | None, out: str) -> None:
    import resource

    from atomtune.models import load_potential

    potential = load_potential(model, trust=True, dtype="float64")
    atoms = cell(n_atoms)
    potential.predict([cell(4)])
    if budget_gib is not None:
        potential.memory_budget = budget_gib * 2**30
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    (record,) = potential.predict([atoms])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.savez(out, energy=record["energy"], forces=record["forces"], stress=record["stress"], seconds=seconds,
             peak_mib=(peak - baseline) / 1024.0, chunking=json.dumps(record.get("chunking")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--atoms", type=int, default=10000)
    parser.add_argument("--budget-gib", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(args.model, args.atoms, None if args.run[0] == "none" else float(args.run[0]), args.run[1])
        return
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for label, budget in (("whole", "none"), ("chunked", str(args.budget_gib))):
            path = os.path.join(directory, f"{label}.npz")
            subprocess.run([sys.executable, __file__, args.model, "--atoms", str(args.atoms), "--run", budget, path],
                           check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
            results[label] = dict(np.load(path))
    whole, chunked = results["whole"], results["chunked"]
    n = len(whole["forces"])
    report = {
        "model": args.model, "n_atoms": n, "dtype": "float64", "budget_gib": args.budget_gib,
        "chunking": json.loads(str(chunked["chunking"])),
        "max_energy_difference_ev_per_atom": float(abs(whole["energy"] - chunked["energy"]) / n),
        "max_force_difference_ev_per_angstrom": float(np.abs(whole["forces"] - chunked["forces"]).max()),
        "max_stress_difference_ev_per_angstrom3": float(np.abs(whole["stress"] - chunked["stress"]).max()),
        "whole_seconds": float(whole["seconds"]), "chunked_seconds": float(chunked["seconds"]),
        "whole_peak_mib": float(whole["peak_mib"]), "chunked_peak_mib": float(chunked["peak_mib"]),
        "load_average": os.getloadavg(),
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
