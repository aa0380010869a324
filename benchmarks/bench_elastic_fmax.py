"""Benchmark: how tight must the elastic task's relaxations be? Cᵢⱼ of Cu, Al and Si with CHGNet 0.3.0 against fmax.

The elastic task relaxes the cell first and then the ions in each strained cell (relaxed-ion constants); both stop at
``fmax``. Too loose a tolerance leaves the ions of a strained cell where they were (the internal relaxation under shear of
Si is then missing) and the residual forces move the stresses. This script runs the task on the primitive cells at a
range of ``fmax`` values (0.01 was the default before issue 16, 5e-4 is the default now) with everything else at the
task's defaults, and compares C11, C12, C44 with the converged
finite-difference value (``--converged`` eV/Å, by default 1e-4, in float64 so the forces are resolved at that level).

    python benchmarks/bench_elastic_fmax.py --threads 1 --out benchmarks/results/elastic_fmax.json

Results: ``benchmarks/results/elastic_fmax.json``; summarised in docs/performance.md ("Elastic constants: relaxation
tolerance").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path

CRYSTALS = {"Cu": ("fcc", 3.62), "Al": ("fcc", 4.04), "Si": ("diamond", 5.47)}
CONSTANTS = ("c11_gpa", "c12_gpa", "c44_gpa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="chgnet-0.3.0")
    parser.add_argument("--fmax", default="0.01,0.005,0.002,0.001,0.0005", help="comma-separated eV/Å")
    parser.add_argument("--converged", type=float, default=1e-4, help="fmax of the converged reference (eV/Å)")
    parser.add_argument("--dtype", default="float32", help="precision of the runs at --fmax (the reference: float64)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/elastic_fmax.json"))
    args = parser.parse_args()

    from atomtune.runtime import configure_threads

    configure_threads(args.threads)
    from ase.build import bulk

    from atomtune.models import load_potential
    from atomtune.tasks import elastic

    structures = []
    for symbol, (lattice, a) in CRYSTALS.items():
        atoms = bulk(symbol, lattice, a=a)
        atoms.info["id"] = symbol
        structures.append(atoms)
    defaults = elastic.Settings()
    runs = [(float(f), args.dtype) for f in args.fmax.split(",")] + [(args.converged, "float64")]
    potentials = {dtype: load_potential(args.model, dtype=dtype) for dtype in {dtype for _, dtype in runs}}
    rows = []
    for fmax, dtype in runs:
        reference = fmax == args.converged and dtype == "float64"
        # the task's own max_steps at each fmax (what a user gets); the reference gets room to converge
        settings = replace(defaults, fmax=fmax, max_steps=2000 if reference else defaults.max_steps)
        start = time.perf_counter()
        records = elastic.run(structures, potentials[dtype], settings, progress=False)
        seconds = time.perf_counter() - start
        for record in records:
            if "error" in record:
                raise SystemExit(f"{record['id']} at fmax {fmax}: {record['error']}")
            rows.append(
                {
                    "id": record["id"],
                    "fmax": fmax,
                    "dtype": dtype,
                    **{key: record[key] for key in CONSTANTS},
                    "fit_rmse_gpa": record["fit_rmse_gpa"],
                    "unconverged_relaxations": record.get("unconverged_relaxations", 0),
                    "wall_s_all_three": seconds,
                }
            )
        print(f"fmax {fmax:g} ({dtype}): {seconds:.1f} s", flush=True)
    converged = {row["id"]: row for row in rows if row["fmax"] == args.converged and row["dtype"] == "float64"}
    for row in rows:
        reference = converged[row["id"]]
        for key in CONSTANTS:
            row[f"{key}_deviation_percent"] = 100.0 * (row[key] - reference[key]) / abs(reference[key])
    print(f"{'id':3} {'fmax':>7} {'dtype':8} " + " ".join(f"{k[:3]:>8} {'Δ%':>6}" for k in CONSTANTS))
    for row in rows:
        cells = " ".join(f"{row[k]:8.2f} {row[f'{k}_deviation_percent']:+6.2f}" for k in CONSTANTS)
        print(f"{row['id']:3} {row['fmax']:7.0e} {row['dtype']:8} {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    args.out.write_text(
        json.dumps(
            {
                "model": args.model,
                "settings_other_than_fmax": {k: v for k, v in asdict(defaults).items() if k != "fmax"},
                "converged_reference": {"fmax": args.converged, "dtype": "float64"},
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} "
                f"thread(s), load average {load[0]:.1f} (shared machine)",
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
