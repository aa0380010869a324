"""Benchmark: fcc Ni–Al and Ni–Cu cluster expansions + Monte Carlo from zero-shot and fine-tuned CHGNet, set against
the GPAW PBE energies that ship with atomtune.

1. Fine-tune CHGNet 0.3.0 (full, ``--epochs``, E0 re-estimated) on the pool of the shipped GPAW Ni-alloy set (the same
   75 % split as the data-efficiency benchmarks; a fifth of it for validation). Cached in ``--work``.
2. For each model: ``tasks.cluster_expansion`` on fcc Ni with species Ni–Al and Ni–Cu (every structure up to
   ``--max-cell-size`` atoms, relaxed with the model as ``--protocol`` says), then ``tasks.monte_carlo`` canonical cooling at x(Ni) = 0.75
   (Ni₃Al) and x(Ni) = 0.5 (Ni–Cu) on the fitted expansions.
3. GPAW reference points from the shipped data: the shipped Birch–Murnaghan minima give L1₂ Ni₃Al's formation energy
   against fcc Ni and fcc Al; the shipped unstrained Ni–Cu cells (4-atom cubic cells with 1, 2, 3 Cu = L1₂ CuNi₃, L1₀
   CuNi, L1₂ Cu₃Ni at Vegard lattice constants) give the sign and size of the Ni–Cu mixing energy.
4. With ``--reference gpaw``: the same cluster expansion and Monte Carlo on GPAW with the shipped dataset's settings
   (``provenance.json``), as a column next to the models. GPAW's cell-and-ion relaxations are hours here, so
   ``--protocol`` sets what every column does (models and GPAW alike): ``relax`` (cell and ions; the models only),
   ``volume`` (5-point E(V) scan of each structure) or ``pressure`` (end members scanned, every other structure one
   single point with stress at its Vegard volume, less the end members' pressure at their own E(V) minima, corrected to
   zero pressure to second order). GPAW single points are
   cached one file each in ``--work``/gpaw-single-points, so a killed run resumes; ``--reference-only`` computes just
   them (run it in the background, then the full benchmark reads them back).

Writes ``benchmarks/results/baselines_alloy_thermodynamics[_<protocol>].json`` and
``docs/figures/baselines_alloy_thermodynamics[_<protocol>].png``.

    python benchmarks/bench_baselines_alloy_thermodynamics.py --threads 1
    python benchmarks/bench_baselines_alloy_thermodynamics.py --threads 1 --protocol pressure --reference gpaw
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "src" / "atomtune" / "resources" / "ni_alloy"
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"


def gpaw_reference_points() -> dict:
    """Mixing energies (eV/atom) from the shipped GPAW data: L1₂ Ni₃Al (BM minima) and the unstrained Ni–Cu cells."""
    from atomtune.data.dataset import Dataset

    minima = {a.info["system"]: a.get_potential_energy() / len(a)
              for a in Dataset.read(RESOURCES / "ni_alloy_reference.extxyz", require=("energy",))}
    points = {"Ni3Al L12 (Pm-3m)": {"x_ni": 0.75, "mixing_energy_per_atom":
                                    minima["Ni3Al"] - (0.75 * minima["Ni"] + 0.25 * minima["Al"])},
              "NiAl B2 (bcc, off the fcc lattice)": {"x_ni": 0.5, "mixing_energy_per_atom":
                                                     minima["NiAl"] - 0.5 * (minima["Ni"] + minima["Al"])}}
    for atoms in Dataset.read(RESOURCES / "ni_alloy_pbe.extxyz"):
        if atoms.info.get("config_type") == "solid_solution" and atoms.info.get("generator") == "substitution":
            x = atoms.get_chemical_symbols().count("Ni") / len(atoms)
            energy = atoms.get_potential_energy() / len(atoms) - (x * minima["Ni"] + (1 - x) * minima["Cu"])
            points[f"{atoms.get_chemical_formula()} (4-atom cubic cell, Vegard a)"] = {
                "x_ni": x, "mixing_energy_per_atom": energy}
    return points


def gpaw_calculator(primitive):
    """GPAW with the shipped dataset's settings, as ``atomtune bench --reference gpaw`` builds it."""
    from atomtune.data.label import CalculatorSpec

    settings = json.loads((RESOURCES / "provenance.json").read_text())["settings"]
    return CalculatorSpec.parse("gpaw", settings).task_calculator(primitive)


def gpaw_ni3al_orderings(work: Path, per_model: dict) -> dict:
    """L1₂ and D0₂₂ Ni₃Al with GPAW by the ``pressure`` protocol (end members from the GPAW column's cache), and where
    every column puts them against the hull of the structures the GPAW column has (mixing energies, meV/atom); a
    model's L1₂ / D0₂₂ come from its run of the same protocol up to 4-atom cells in ``work``, when there is one.

    For when the GPAW column stops short of 4-atom cells: these two 4-atom cells are computed directly (cached in
    ``--work``/gpaw-direct, their k-mesh from their own cells). Their pressures are taken less the end members' pressures
    at their own E(V) minima (interpolated in x), as the task does."""
    from ase.build import bulk
    from icet.tools import ConvexHull

    from atomtune.tasks import cluster_expansion

    primitive = bulk("Ni", "fcc", a=3.52)
    cached = cluster_expansion.SinglePoints(gpaw_calculator(primitive), work / "gpaw-single-points")
    ends = {}
    for symbol, x in (("Al", 0.0), ("Ni", 1.0)):  # as the task scans them: from the element's own ASE volume
        atoms = bulk(symbol, "fcc", a=3.52)
        volume = cluster_expansion._element_volume_per_atom(atoms)
        atoms.set_cell(atoms.cell[:] * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        ends[x] = cluster_expansion.volume_scan(atoms, cached)
        ends[x]["pressure_at_minimum_gpa"] = cluster_expansion.pressure_at_volume(
            atoms, cached, ends[x]["volume_per_atom"])
    direct = cluster_expansion.SinglePoints(gpaw_calculator(primitive), work / "gpaw-direct")
    points = {}
    for atoms in cluster_expansion.enumerate_decorations(primitive, [["Al", "Ni"]], 4, 100):
        name = f"{atoms.get_chemical_formula()} {cluster_expansion._space_group(atoms)}"
        if name not in ("AlNi3 Pm-3m", "AlNi3 I4/mmm"):
            continue
        x = 0.75
        volume = (1 - x) * ends[0.0]["volume_per_atom"] + x * ends[1.0]["volume_per_atom"]
        atoms.set_cell(atoms.cell[:] * (volume * len(atoms) / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        before = direct.cost()["cpu_seconds"]
        result = cluster_expansion.pressure_corrected(
            atoms, direct, (1 - x) * ends[0.0]["bulk_modulus_gpa"] + x * ends[1.0]["bulk_modulus_gpa"],
            (1 - x) * ends[0.0]["pressure_at_minimum_gpa"] + x * ends[1.0]["pressure_at_minimum_gpa"])
        result["mixing_energy_per_atom"] = result["energy_per_atom"] - (
            (1 - x) * ends[0.0]["energy_per_atom"] + x * ends[1.0]["energy_per_atom"])
        result["cpu_seconds"] = direct.cost()["cpu_seconds"] - before
        points[name] = result
    gpaw_name = next(name for name, column in per_model.items() if "GPAW" in name)
    ids = {r["id"] for r in per_model[gpaw_name]["structures"]}
    hulls = {}
    for name, column in per_model.items():
        rows = [(f"{r['formula']} {r['space_group']}", r["concentration"], r["mixing_energy_per_atom"])
                for r in column["structures"] if r["id"] in ids and r["mixing_energy_per_atom"] is not None]
        if name == gpaw_name:
            rows += [(key, 0.75, value["mixing_energy_per_atom"]) for key, value in points.items()]
        else:  # the models' own L1₂ / D0₂₂, from their run of the same protocol up to 4-atom cells
            four = work / f"column_Ni-Al_{name.split()[-1].strip('()')}_pressure_4.json"
            if four.exists():
                rows += [(f"{r['formula']} {r['space_group']}", 0.75, r["mixing_energy_per_atom"])
                         for r in json.loads(four.read_text())["structures"]
                         if f"{r['formula']} {r['space_group']}" in points]
        x = np.array([row[1] for row in rows])
        energies = np.array([row[2] for row in rows])
        hull = ConvexHull(x, energies)
        above = (energies - hull.get_energy_at_convex_hull(x)) * 1000
        hulls[name] = {"vertices": [rows[k][0] for k in hull.structures],
                       "structures": {row[0]: {"mixing_energy_mev_per_atom": row[2] * 1000,
                                               "above_hull_mev_per_atom": float(d)} for row, d in zip(rows, above)}}
    return {"ends": ends, "points": points, "hulls": hulls,
            "d022_minus_l12_mev_per_atom": (points["AlNi3 I4/mmm"]["mixing_energy_per_atom"]
                                            - points["AlNi3 Pm-3m"]["mixing_energy_per_atom"]) * 1000}


def protocol_check(primitive, species, max_cell_size: int, pressure_records: list[dict]) -> dict:
    """How far the one-point pressure correction is from the 5-point E(V) minimum, measured with zero-shot CHGNet (the
    error the ``pressure`` protocol adds to every column, GPAW's included): per structure, meV/atom and %."""
    from atomtune.models import load_potential
    from atomtune.tasks import cluster_expansion

    started = time.perf_counter()
    settings = cluster_expansion.Settings(species=species, max_cell_size=max_cell_size, relax="volume",
                                          cutoff_candidates=[[5.0], [6.0], [6.0, 4.5], [7.0, 5.0]])
    scanned = {r["id"]: r for r in cluster_expansion.run([primitive], load_potential("chgnet-0.3.0"), settings,
                                                         progress=False) if r["kind"] == "structure"}
    rows = []
    for record in pressure_records:
        other = scanned[record["id"]]
        if record.get("energy_per_atom") is None or other.get("energy_per_atom") is None:
            continue
        rows.append({"id": record["id"], "formula": record["formula"], "space_group": record["space_group"],
                     "mixing_energy_difference_mev_per_atom":
                         (record["mixing_energy_per_atom"] - other["mixing_energy_per_atom"]) * 1000,
                     "volume_difference_percent": (record["volume_per_atom"] / other["volume_per_atom"] - 1) * 100,
                     "volume_change_from_vegard_percent":
                         (other["volume_per_atom"] / record["equation_of_state"]["volume_at_start_per_atom"] - 1) * 100
                         if "volume_at_start_per_atom" in (record.get("equation_of_state") or {}) else None})
    differences = np.array([r["mixing_energy_difference_mev_per_atom"] for r in rows])
    return {"max_abs_mev_per_atom": float(np.abs(differences).max()),
            "rms_mev_per_atom": float(np.sqrt(np.mean(differences**2))), "structures": rows,
            "seconds": time.perf_counter() - started}


def stress_offsets(calculators: dict, elements=("Ni", "Al", "Cu"), step: float = 0.005) -> dict:
    """Per calculator and end member: the pressure from its stress at the minimum of its 5-point E(V) scan (what the
    ``pressure`` protocol subtracts, GPa) and −dE/dV there by central differences (± ``step`` in volume). Where the
    stress is the energy's derivative the two agree, and what remains of the offset is the equation-of-state fit's
    minimum missing the calculator's own; where they differ the stress has a genuine offset (Pulay stress)."""
    from ase.build import bulk
    from ase.units import GPa

    from atomtune.tasks import cluster_expansion

    rows = {}
    for name, calculator in calculators.items():
        single_points = cluster_expansion.SinglePoints(calculator)
        for symbol in elements:
            atoms = bulk(symbol, "fcc", a=3.52)  # as the task scans an end member: from the element's own ASE volume
            volume = cluster_expansion._element_volume_per_atom(atoms)
            atoms.set_cell(atoms.cell[:] * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
            scan = cluster_expansion.volume_scan(atoms, single_points)
            v0 = scan["volume_per_atom"]
            above, below = (atoms.copy(), atoms.copy())
            for scaled, factor in ((above, 1 + step), (below, 1 - step)):
                scaled.set_cell(atoms.cell[:] * (factor * v0 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
            rows[f"{name}: {symbol}"] = {
                "volume_per_atom": v0, "bulk_modulus_gpa": scan["bulk_modulus_gpa"],
                "pressure_from_stress_gpa": cluster_expansion.pressure_at_volume(atoms, single_points, v0),
                "minus_de_dv_gpa": -(single_points(above) - single_points(below)) / (2 * step * v0) / GPa}
            print(f"{name} {symbol}: {rows[f'{name}: {symbol}']}", flush=True)
    return rows


def fine_tuned(work: Path, epochs: int, seed: int):
    from atomtune.data.dataset import Dataset
    from atomtune.finetune import Full, Trainer, TrainingSettings
    from atomtune.models import load_potential

    directory = work / f"chgnet-full-{epochs}ep-seed{seed}"
    if (directory / "atomtune.json").exists():
        return load_potential(str(directory)), None
    data = Dataset.read(RESOURCES / "ni_alloy_pbe.extxyz")
    pool = list(data.split({"pool": 0.75, "test": 0.25}, seed=seed)["pool"])
    n_valid = len(pool) // 5
    settings = TrainingSettings(epochs=epochs, seed=seed, progress=False, drop_missing_stress=True)
    started = time.perf_counter()
    result = Trainer(settings).fit(load_potential("chgnet-0.3.0"), pool[n_valid:], pool[:n_valid], Full())
    seconds = time.perf_counter() - started
    result.potential.save(directory)
    return load_potential(str(directory)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/atomtune-bench-alloy")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-cell-size", nargs="+", default=["4"],
                        help="largest enumerated cell, for every system (4) or per system (Ni-Al=4 Ni-Cu=3)")
    parser.add_argument("--supercell", type=int, default=4)
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=["relax", "volume", "pressure"], default="relax",
                        help="how every column treats each structure (see the module docstring)")
    parser.add_argument("--reference", choices=["gpaw"], default=None, help="add a GPAW column (shipped settings)")
    parser.add_argument("--reference-only", action="store_true", help="compute only the GPAW single points")
    parser.add_argument("--systems", nargs="+", default=["Ni-Al", "Ni-Cu"])
    parser.add_argument("--offsets-only", action="store_true",
                        help="only the models' (and EMT's) stress offsets at their end members' E(V) minima, written to "
                             "baselines_alloy_thermodynamics_pressure_offsets.json")
    parser.add_argument("--reuse", action="store_true",
                        help="read back a column's cluster-expansion and MC records from --work when an earlier run of "
                             "the same protocol left them (to add the GPAW column without recomputing the models)")
    args = parser.parse_args()
    if args.reference and args.protocol == "relax":
        parser.error("--reference gpaw needs --protocol volume or pressure (GPAW relaxations are hours here)")

    from ase.build import bulk

    from atomtune.models import load_potential
    from atomtune.runtime import configure_threads
    from atomtune.tasks import cluster_expansion, monte_carlo

    configure_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started_all = time.perf_counter()
    models, finetune_seconds = {}, None
    if args.offsets_only:
        from ase.calculators.emt import EMT

        tuned, _ = fine_tuned(work, args.epochs, args.seed)
        offsets = stress_offsets({"EMT": EMT(), "CHGNet 0.3.0 zero-shot": load_potential("chgnet-0.3.0"),
                                  "CHGNet 0.3.0 fine-tuned (full)": tuned})
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "baselines_alloy_thermodynamics_pressure_offsets.json").write_text(json.dumps({
            "benchmark": "baselines_alloy_thermodynamics stress offsets",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "load_average_at_end": os.getloadavg()},
            "settings": vars(args), "offsets": offsets, "seconds": time.perf_counter() - started_all}, indent=1))
        return
    if args.reference == "gpaw":
        models["GPAW (PBE, shipped settings)"] = "gpaw"
    if not args.reference_only:
        tuned, finetune_seconds = fine_tuned(work, args.epochs, args.seed)
        models.update({"CHGNet 0.3.0 zero-shot": load_potential("chgnet-0.3.0"),
                       "CHGNet 0.3.0 fine-tuned (full)": tuned})
    relax = {"relax": True, "volume": "volume", "pressure": "pressure"}[args.protocol]
    cell_sizes = {system: int(value) for item in args.max_cell_size
                  for system, value in [item.split("=") if "=" in item else (None, item)]}
    systems = {
        "Ni-Al": {"species": ["Ni", "Al"], "concentration": 0.75,
                  "temperatures": [float(t) for t in range(3500, 249, -250)]},
        "Ni-Cu": {"species": ["Ni", "Cu"], "concentration": 0.5,
                  "temperatures": [float(t) for t in range(1500, 99, -100)]},
    }
    results: dict = {"gpaw_reference": gpaw_reference_points(), "finetune_seconds": finetune_seconds, "systems": {}}
    for system, setup in systems.items():
        if system not in args.systems:
            continue
        primitive = bulk("Ni", "fcc", a=3.52)
        primitive.info["id"] = f"fcc-{system}"
        per_model = {}
        for name, potential in models.items():
            is_gpaw = potential == "gpaw"
            tag = "gpaw" if is_gpaw else name.split()[-1].strip("()")
            max_cell_size = cell_sizes.get(system, cell_sizes.get(None, 4))
            saved = work / f"column_{system}_{tag}_{args.protocol}_{max_cell_size}.json"
            if args.reuse and saved.exists() and not args.reference_only:
                column = json.loads(saved.read_text())
                if args.protocol != "pressure" or column["expansion"].get("pressure_offsets_gpa") is not None:
                    per_model[name] = column
                    print(f"{system} {name}: read back from {saved}", flush=True)
                    continue
                # written before the pressure protocol subtracted the end members' stress offsets: computed again
                print(f"{system} {name}: {saved} has no pressure offsets; computed again", flush=True)
            calculator = gpaw_calculator(primitive) if is_gpaw else potential
            settings = cluster_expansion.Settings(species=setup["species"], max_cell_size=max_cell_size,
                                                  cutoff_candidates=[[5.0], [6.0], [6.0, 4.5], [7.0, 5.0]],
                                                  relax=relax,
                                                  cache_dir=str(work / "gpaw-single-points") if is_gpaw else None)
            records = cluster_expansion.run([primitive], calculator, settings, progress=False)
            (summary,) = cluster_expansion.expansion_records(records)
            if "error" in summary:
                raise SystemExit(f"{system} {name}: {summary['error']}")
            path = work / f"ce_{system}_{tag}_{args.protocol}_{max_cell_size}.json"
            path.write_text(json.dumps(records))
            if args.reference_only:
                print(f"{system} {name}: {summary['n_fitted']} fitted, CV {summary['cv_rmse_mev_per_atom']:.1f} "
                      f"meV/atom, single points "
                      f"{sum(r.get('single_points') or 0 for r in records if r['kind'] == 'structure')}", flush=True)
                continue
            mc_settings = monte_carlo.Settings(
                temperatures=setup["temperatures"], concentration=setup["concentration"], supercell=args.supercell,
                equilibration_sweeps=args.sweeps // 4, sampling_sweeps=args.sweeps, expansion=str(path),
                seed=args.seed,
            )
            mc_records = monte_carlo.run([primitive], None if is_gpaw else potential, mc_settings, progress=False)
            (transition,) = monte_carlo.transition_records(mc_records)
            structures = [r for r in records if r["kind"] == "structure"]
            cpu = [r.get("single_point_cpu_seconds") for r in structures if r.get("single_point_cpu_seconds")]
            summary["single_point_cpu_seconds"] = float(sum(cpu)) if is_gpaw else None
            per_model[name] = {
                "expansion": {k: v for k, v in summary.items() if k not in ("expansion",)},
                "structures": structures,
                "monte_carlo": {"transition": transition,
                                "points": [r for r in mc_records if r["kind"] == "temperature"]},
            }
            saved.write_text(json.dumps(per_model[name]))
            line = (f"{system} {name}: CV {summary['cv_rmse_mev_per_atom']:.1f} meV/atom, {summary['n_fitted']} fitted / "
                    f"{summary['n_failed']} left out, ground states "
                    f"{[g['formula'] + ' ' + g['space_group'] for g in summary['ground_states']]}; MC C-peak "
                    f"{transition['transition_temperature_k']} K ({transition['ordering']}), pressure offsets "
                    f"{summary.get('pressure_offsets_gpa')} GPa, relax "
                    f"{summary['relax_seconds']:.0f} s, MC {transition['seconds']:.0f} s")
            print(line, flush=True)
        results["systems"][system] = per_model
        if system == "Ni-Al" and args.reference == "gpaw" and not args.reference_only:
            results["gpaw_ni3al_orderings"] = gpaw_ni3al_orderings(work, per_model)
        if args.protocol == "pressure" and not args.reference_only:
            results.setdefault("protocol_check", {})[system] = protocol_check(
                primitive, setup["species"], max_cell_size, per_model["CHGNet 0.3.0 zero-shot"]["structures"])
    if args.reference_only:
        print(f"GPAW single points done in {time.perf_counter() - started_all:.0f} s")
        return
    results.update({
        "benchmark": "baselines_alloy_thermodynamics",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "note": "shared 2-core machine, other sessions running"},
        "settings": vars(args),
        "total_seconds": time.perf_counter() - started_all,
    })
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.protocol == "relax" else f"_{args.protocol}"
    (RESULTS / f"baselines_alloy_thermodynamics{suffix}.json").write_text(json.dumps(results, indent=1))
    plot(results, suffix)
    print(f"done in {results['total_seconds']:.0f} s")


def plot(results: dict, suffix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for row, (system, per_model) in enumerate(results["systems"].items()):
        hull_axis, heat_axis, sro_axis = axes[row]
        for name, result in per_model.items():
            structures = result["structures"]
            # x of Ni: the species are sorted, so Ni is the second mixing species in both systems
            x = np.array([r["concentration"] for r in structures])
            computed = np.array([np.nan if r["mixing_energy_per_atom"] is None else r["mixing_energy_per_atom"]
                                 for r in structures])
            (points,) = hull_axis.plot(x, computed * 1000, "o", ms=3, alpha=0.45, label=f"{name}: computed")
            ground = sorted(result["expansion"]["ground_states"], key=lambda g: g["concentration"])
            hull_axis.plot([g["concentration"] for g in ground], [g["mixing_energy_per_atom"] * 1000 for g in ground],
                           "-", color=points.get_color(), label=f"{name}: expansion hull")
            mc = sorted(result["monte_carlo"]["points"], key=lambda r: r["temperature_k"])
            heat_axis.plot([r["temperature_k"] for r in mc], [r["heat_capacity_kb_per_atom"] for r in mc], "-o", ms=3,
                           label=name)
            sro_axis.plot([r["temperature_k"] for r in mc], [r["sro_first_shell"] for r in mc], "-o", ms=3, label=name)
        for label, point in results["gpaw_reference"].items():
            if ("Al" in label) == (system == "Ni-Al"):
                hull_axis.plot(point["x_ni"], point["mixing_energy_per_atom"] * 1000, "k*", ms=10)
                hull_axis.annotate("GPAW " + label.split(" (")[0], (point["x_ni"], point["mixing_energy_per_atom"] * 1000),
                                   fontsize=6, xytext=(3, 3), textcoords="offset points")
        hull_axis.set_xlabel("x(Ni)")
        hull_axis.set_ylabel("mixing energy (meV/atom)")
        hull_axis.set_title(f"fcc {system}: cluster expansion")
        hull_axis.axhline(0, color="gray", lw=0.6)
        hull_axis.legend(fontsize=6)
        heat_axis.set_title(f"{system}: canonical MC, heat capacity")
        heat_axis.set_ylabel("C (k_B/atom)")
        sro_axis.set_title(f"{system}: Warren–Cowley α, 1st shell")
        for axis in (heat_axis, sro_axis):
            axis.set_xlabel("temperature (K)")
            axis.legend(fontsize=6)
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(FIGURES / f"baselines_alloy_thermodynamics{suffix}.png", dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
