"""Molecular dynamics: is a model stable at temperature, and does it give the reference's liquid/solid structure?

From each structure, runs NVT (Langevin, Bussi or Nosé–Hoover chain) or NPT (isotropic MTK, Berendsen or Melchionna)
with ASE's integrators, then a short NVE segment to measure the energy drift. Reported: the radial distribution function
and the bond-angle distribution over the production part, and stability metrics — NVE drift (eV/atom/ps), the minimum
interatomic distance and maximum force seen, temperature and density traces, and an ``exploded`` flag (a run that leaves
physical territory is stopped there and reported, not dropped). ``compare`` measures how far two models' RDFs and ADFs
are apart (Wasserstein and Jensen–Shannon distances, scipy). Units: fs and ps, K, GPa, g/cm³, Å, eV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units

from atomtune.tasks import as_calculator, run_each
from atomtune.tasks.comparison import compare_properties, plot_properties, records_by_id, safe_filename

THERMOSTATS = ("langevin", "bussi", "nose-hoover")
BAROSTATS = ("mtk", "berendsen", "melchionna")

PROPERTIES = (
    "mean_temperature_k",
    "mean_density_g_per_cm3",
    "nve_energy_drift_ev_per_atom_per_ps",
    "min_interatomic_distance",
    "max_force",
    "exploded",
)

#: Atoms closer than this (Å) mean the run has collapsed (same threshold as dataset validation).
EXPLODED_MIN_DISTANCE = 0.5
#: A force above this (eV/Å) on any atom means the run has left the region a potential describes.
EXPLODED_MAX_FORCE = 50.0
#: Temperature above this multiple of the target means the integrator has blown up.
EXPLODED_TEMPERATURE_FACTOR = 5.0

#: Amount of substance conversion for densities: amu/Å³ → g/cm³.
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


@dataclass
class Settings:
    """``ensemble``: ``"nvt"`` or ``"npt"``. ``temperature_k``: target, K (also the initial Maxwell–Boltzmann
    velocities). ``pressure_gpa``: NPT target, GPa. ``timestep_fs``: 2 fs (metals and oxides without H; use 0.5–1 fs
    with H). ``steps``: NVT/NPT steps (first ``equilibration_fraction`` discarded from RDF/ADF and averages).
    ``nve_steps``: NVE steps after it for the drift (0 skips). ``thermostat``: ``"langevin"`` (friction
    ``friction_per_fs``), ``"bussi"`` or ``"nose-hoover"`` (both with ``thermostat_time_fs``). ``barostat``: ``"mtk"``
    (isotropic MTK with Nosé–Hoover chains), ``"berendsen"`` or ``"melchionna"`` (``ase.md.npt.NPT``), with
    ``barostat_time_fs``; Berendsen needs the compressibility, taken from ``bulk_modulus_gpa``. ``sample_interval``:
    steps between samples (traces, RDF/ADF frames).
    ``rdf_max_distance``: Å; ``rdf_bins``; ``adf_bins`` over 0–180°. ``bond_cutoff_factor``: bonds for the ADF are pairs
    closer than this times the sum of covalent radii (1.2 takes the first shell of fcc metals, not the second).
    ``seed``: velocities and stochastic thermostats. ``engine``: ``"ase"`` (ASE's integrators) or ``"lammps"`` (LAMMPS
    integrates through ``fix external``, the calculator computes; :mod:`atomtune.lammps`), with ``lammps_commands``
    (extra LAMMPS computes / dumps / thermo, run before the integration fixes)."""

    ensemble: str = "nvt"
    temperature_k: float = 300.0
    pressure_gpa: float = 0.0
    timestep_fs: float = 2.0
    steps: int = 1000
    equilibration_fraction: float = 0.25
    nve_steps: int = 200
    thermostat: str = "langevin"
    friction_per_fs: float = 0.01
    thermostat_time_fs: float = 100.0
    barostat: str = "mtk"
    barostat_time_fs: float = 1000.0
    bulk_modulus_gpa: float = 100.0
    sample_interval: int = 10
    rdf_max_distance: float = 6.0
    rdf_bins: int = 120
    adf_bins: int = 90
    bond_cutoff_factor: float = 1.2
    seed: int = 0
    engine: str = "ase"
    lammps_commands: list[str] = field(default_factory=list)


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure: ``steps_completed``, ``exploded`` (and why, in ``"error"``), ``mean_temperature_k``,
    ``mean_density_g_per_cm3``, ``nve_energy_drift_ev_per_atom_per_ps`` (slope of a line through the NVE total energy
    per atom), ``nve_energy_fluctuation_ev_per_atom`` (max − min), ``min_interatomic_distance`` (Å) and ``max_force``
    (eV/Å) over the whole run, ``trace`` (time_ps, temperature_k, density_g_per_cm3, potential_energy_per_atom,
    total_energy_per_atom at each sample), ``rdf`` (``r`` Å, ``g``) and ``adf`` (``angle_deg``, ``density`` per
    degree)."""
    settings = settings or Settings()
    _check(settings)
    calculator = as_calculator(calculator)

    def compute(atoms: Atoms, label: str) -> dict:
        return _molecular_dynamics(atoms, label, calculator, settings)

    return run_each(structures, compute, "md", progress)


def _check(settings: Settings) -> None:
    from atomtune.exceptions import AtomtuneError

    if settings.ensemble not in ("nvt", "npt"):
        raise AtomtuneError(f"md ensemble {settings.ensemble!r}: use 'nvt' or 'npt'.")
    if settings.thermostat not in THERMOSTATS:
        raise AtomtuneError(f"md thermostat {settings.thermostat!r}: use one of {', '.join(THERMOSTATS)}.")
    if settings.barostat not in BAROSTATS:
        raise AtomtuneError(f"md barostat {settings.barostat!r}: use one of {', '.join(BAROSTATS)}.")
    if settings.engine not in ("ase", "lammps"):
        raise AtomtuneError(f"md engine {settings.engine!r}: use 'ase' or 'lammps'.")
    if settings.engine == "lammps":
        from atomtune.lammps import dynamics_for

        dynamics_for(settings, settings.ensemble).check()


def make_integrator(atoms: Atoms, settings: Settings):
    """The dynamics object for ``settings`` on ``atoms`` (ASE's integrator for the ensemble and thermostat / barostat,
    or LAMMPS through ``fix external``); ``.run(steps)`` advances it. Also used by active learning's MD explorer."""
    if settings.engine == "lammps":
        from atomtune.lammps import LammpsIntegrator, dynamics_for

        return LammpsIntegrator(atoms, dynamics_for(settings, settings.ensemble))
    timestep = settings.timestep_fs * units.fs
    temperature = settings.temperature_k
    rng = np.random.default_rng(settings.seed)
    if settings.ensemble == "npt":
        if not atoms.pbc.all():
            raise ValueError("NPT needs a periodic structure (pbc on all three axes); use ensemble='nvt'.")
        pressure = settings.pressure_gpa * units.GPa
        if settings.barostat == "mtk":
            from ase.md.nose_hoover_chain import IsotropicMTKNPT

            return IsotropicMTKNPT(
                atoms,
                timestep,
                temperature_K=temperature,
                pressure_au=pressure,
                tdamp=settings.thermostat_time_fs * units.fs,
                pdamp=settings.barostat_time_fs * units.fs,
            )
        if settings.barostat == "berendsen":
            from ase.md.nptberendsen import NPTBerendsen

            return NPTBerendsen(
                atoms,
                timestep,
                temperature_K=temperature,
                pressure_au=pressure,
                taut=settings.thermostat_time_fs * units.fs,
                taup=settings.barostat_time_fs * units.fs,
                compressibility_au=1.0 / (settings.bulk_modulus_gpa * units.GPa),
            )
        from ase.md.melchionna import MelchionnaNPT

        # Melchionna's barostat mass: pfactor = τ_p² B (ASE's recommendation); it needs a triangular cell.
        _make_triangular(atoms)
        return MelchionnaNPT(
            atoms,
            timestep,
            temperature_K=temperature,
            externalstress=pressure,
            ttime=settings.thermostat_time_fs * units.fs,
            pfactor=(settings.barostat_time_fs * units.fs) ** 2 * settings.bulk_modulus_gpa * units.GPa,
        )
    if settings.thermostat == "langevin":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        # ASE 3.28+ deprecates Langevin's fixcm (it biases the sampled distribution); the constraint is the fix.
        atoms.set_constraint(FixCom())
        return Langevin(
            atoms,
            timestep,
            temperature_K=temperature,
            friction=settings.friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    if settings.thermostat == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep, temperature_K=temperature, taut=settings.thermostat_time_fs * units.fs, rng=rng)
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    return NoseHooverChainNVT(
        atoms, timestep, temperature_K=temperature, tdamp=settings.thermostat_time_fs * units.fs
    )


def _make_triangular(atoms: Atoms) -> None:
    """Rotate the structure so its cell is triangular (a along x, b in the xy plane); lengths and angles unchanged."""
    from ase.geometry import cellpar_to_cell

    cell = atoms.cell[:]
    if np.allclose(np.triu(cell), cell) or np.allclose(np.tril(cell), cell):
        return
    atoms.set_cell(cellpar_to_cell(atoms.cell.cellpar()), scale_atoms=True)


def _molecular_dynamics(atoms: Atoms, label: str, calculator, settings: Settings) -> dict:
    from ase.md import velocitydistribution

    n_atoms = len(atoms)
    record: dict = {"id": label, "formula": atoms.get_chemical_formula(), "n_atoms": n_atoms}
    atoms.calc = calculator
    # ASE 3.29 renamed MaxwellBoltzmannDistribution to thermalize_momenta; pyproject allows ASE ≥ 3.23.
    thermalize = getattr(velocitydistribution, "thermalize_momenta", velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=settings.temperature_k, rng=np.random.default_rng(settings.seed))
    velocitydistribution.Stationary(atoms)
    total_steps = settings.steps + settings.nve_steps
    samples: list[dict] = []
    frames: list[Atoms] = []
    production_start = int(settings.steps * settings.equilibration_fraction)
    state = {"min_distance": np.inf, "max_force": 0.0, "exploded": None, "step": 0}

    def observe(step: int, phase: str) -> bool:
        """Sample the state; False when the run has exploded and must stop."""
        forces = atoms.get_forces()
        max_force = float(np.linalg.norm(forces, axis=1).max()) if n_atoms else 0.0
        min_distance = shortest_distance(atoms)
        potential = float(atoms.get_potential_energy())
        kinetic = float(atoms.get_kinetic_energy())
        temperature = float(atoms.get_temperature())
        state["min_distance"] = min(state["min_distance"], min_distance)
        state["max_force"] = max(state["max_force"], max_force) if np.isfinite(max_force) else np.inf
        density = (
            float(atoms.get_masses().sum() / atoms.get_volume() * AMU_PER_A3_TO_G_PER_CM3) if atoms.pbc.all() else None
        )
        samples.append(
            {
                "time_ps": step * settings.timestep_fs / 1000.0,
                "phase": phase,
                "temperature_k": temperature,
                "density_g_per_cm3": density,
                "potential_energy_per_atom": potential / n_atoms,
                "total_energy_per_atom": (potential + kinetic) / n_atoms,
            }
        )
        reason = None
        if not (np.isfinite(potential) and np.isfinite(max_force)):
            reason = "energy or forces became non-finite"
        elif min_distance < EXPLODED_MIN_DISTANCE:
            reason = f"atoms {min_distance:.2f} Å apart (< {EXPLODED_MIN_DISTANCE} Å)"
        elif max_force > EXPLODED_MAX_FORCE:
            reason = f"force {max_force:.0f} eV/Å (> {EXPLODED_MAX_FORCE} eV/Å)"
        elif temperature > EXPLODED_TEMPERATURE_FACTOR * max(settings.temperature_k, 100.0):
            reason = f"temperature {temperature:.0f} K (> {EXPLODED_TEMPERATURE_FACTOR}× target)"
        if reason:
            state["exploded"] = f"exploded at {step * settings.timestep_fs / 1000.0:.3f} ps: {reason}"
            return False
        if phase == "thermostat" and step >= production_start:
            frames.append(atoms.copy())
        return True

    segments = [("thermostat", make_integrator(atoms, settings), settings.steps)]
    if settings.nve_steps:
        from ase.md.verlet import VelocityVerlet

        segments.append(("nve", None, settings.nve_steps))
    step = 0
    running = observe(0, "thermostat")
    for phase, integrator, steps in segments:
        if not running:
            break
        if integrator is None:
            if settings.engine == "lammps":
                from atomtune.lammps import LammpsIntegrator, dynamics_for

                integrator = LammpsIntegrator(atoms, dynamics_for(settings, "nve"))
            else:
                integrator = VelocityVerlet(atoms, settings.timestep_fs * units.fs)
        if phase == "nve":
            running = observe(step, "nve")  # the NVE segment starts from the last thermostatted state
        done = 0
        while running and done < steps:
            chunk = min(settings.sample_interval, steps - done)
            integrator.run(chunk)
            done += chunk
            step += chunk
            running = observe(step, phase)
    state["step"] = step

    record["steps_completed"] = step
    record["steps_requested"] = total_steps
    record["exploded"] = state["exploded"] is not None
    if state["exploded"]:
        record["error"] = state["exploded"]
    record["min_interatomic_distance"] = state["min_distance"]
    record["max_force"] = state["max_force"]
    production_time_ps = production_start * settings.timestep_fs / 1000.0
    production = [s for s in samples if s["phase"] == "thermostat" and s["time_ps"] >= production_time_ps - 1e-12]
    if production:
        record["mean_temperature_k"] = float(np.mean([s["temperature_k"] for s in production]))
        record["std_temperature_k"] = float(np.std([s["temperature_k"] for s in production]))
        densities = [s["density_g_per_cm3"] for s in production if s["density_g_per_cm3"] is not None]
        if densities:
            record["mean_density_g_per_cm3"] = float(np.mean(densities))
    nve = [s for s in samples if s["phase"] == "nve"]
    if len(nve) >= 3:
        times = np.array([s["time_ps"] for s in nve])
        totals = np.array([s["total_energy_per_atom"] for s in nve])
        record["nve_energy_drift_ev_per_atom_per_ps"] = float(np.polyfit(times - times[0], totals, 1)[0])
        record["nve_energy_fluctuation_ev_per_atom"] = float(totals.max() - totals.min())
    record["trace"] = {key: [s[key] for s in samples] for key in samples[0] if key != "phase"} if samples else {}
    record["trace"]["phase"] = [s["phase"] for s in samples]
    if frames:
        record["rdf"] = radial_distribution(frames, settings.rdf_max_distance, settings.rdf_bins)
        record["adf"] = angular_distribution(frames, settings.bond_cutoff_factor, settings.adf_bins)
    return record


def shortest_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance in Å, periodic images included (inf for a single atom alone in its cell)."""
    from ase.neighborlist import neighbor_list

    for cutoff in (3.0, 8.0):  # almost always within 3 Å; the wider search only for a dilute or expanded cell
        distances = neighbor_list("d", atoms, cutoff)
        if len(distances):
            return float(distances.min())
    return float("inf")


def radial_distribution(frames: Sequence[Atoms], max_distance: float, bins: int) -> dict:
    """Total g(r) averaged over frames: pair-distance histogram (all periodic images within ``max_distance`` Å) over
    the ideal-gas count N ρ 4πr² dr, so g → 1 at large r in a periodic system."""
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, max_distance, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    total = np.zeros(bins)
    for frame in frames:
        distances = neighbor_list("d", frame, max_distance)
        counts, _ = np.histogram(distances, bins=edges)
        n_atoms = len(frame)
        density = n_atoms / frame.get_volume() if frame.pbc.all() else 1.0
        total += counts / (n_atoms * density * shell)
    return {"r": centres, "g": total / len(frames)}


def angular_distribution(frames: Sequence[Atoms], cutoff_factor: float, bins: int) -> dict:
    """Bond-angle distribution (probability density per degree over 0–180°) of all bonded triplets j–i–k, bonds being
    pairs closer than ``cutoff_factor`` × the sum of covalent radii (``ase.neighborlist.natural_cutoffs``)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    edges = np.linspace(0.0, 180.0, bins + 1)
    counts = np.zeros(bins)
    for frame in frames:
        centre, vectors = neighbor_list("iD", frame, natural_cutoffs(frame, mult=cutoff_factor))
        order = np.argsort(centre, kind="stable")
        centre, vectors = centre[order], vectors[order]
        boundaries = np.flatnonzero(np.diff(centre)) + 1
        for bond_vectors in np.split(vectors, boundaries):
            if len(bond_vectors) < 2:
                continue
            unit = bond_vectors / np.linalg.norm(bond_vectors, axis=1, keepdims=True)
            cosines = np.clip(unit @ unit.T, -1.0, 1.0)[np.triu_indices(len(unit), 1)]
            counts += np.histogram(np.degrees(np.arccos(cosines)), bins=edges)[0]
    density = counts / (counts.sum() * (edges[1] - edges[0])) if counts.sum() else counts
    return {"angle_deg": 0.5 * (edges[1:] + edges[:-1]), "density": density}


def distribution_distances(first: dict, second: dict, x_key: str, y_key: str, weight_r2: bool = False) -> dict:
    """Wasserstein (in the x unit) and Jensen–Shannon distance between two tabulated distributions on the same grid.

    For an RDF the weights are g(r)·r² (the pair-distance distribution), so that both distances compare where pairs are.
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    x = np.asarray(first[x_key], dtype=float)
    p = np.asarray(first[y_key], dtype=float)
    q = np.asarray(second[y_key], dtype=float)
    if weight_r2:
        p, q = p * x**2, q * x**2
    if p.sum() <= 0 or q.sum() <= 0 or len(p) != len(q):
        return {"wasserstein": None, "jensen_shannon": None}
    return {
        "wasserstein": float(wasserstein_distance(x, x, p, q)),
        "jensen_shannon": float(jensenshannon(p / p.sum(), q / q.sum(), base=2)),
    }


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per structure and stability/thermodynamic property, one column per model; then per structure the RDF and
    ADF distance of each model to ``reference`` (or, without one, to the first model): ``rdf_wasserstein_angstrom``,
    ``rdf_jensen_shannon``, ``adf_wasserstein_deg``, ``adf_jensen_shannon`` (0 = identical distributions)."""
    rows = compare_properties(results, PROPERTIES, reference)
    if not results:
        return rows
    baseline = reference if reference is not None else next(iter(results))
    indexed = {model: records_by_id(records) for model, records in results.items()}
    for structure, base in indexed[baseline].items():
        distances: dict[str, dict] = {}
        for model, records in indexed.items():
            record = records.get(structure, {})
            rdf = (
                distribution_distances(base["rdf"], record["rdf"], "r", "g", weight_r2=True)
                if "rdf" in base and "rdf" in record
                else {}
            )
            adf = (
                distribution_distances(base["adf"], record["adf"], "angle_deg", "density")
                if "adf" in base and "adf" in record
                else {}
            )
            distances[model] = {
                "rdf_wasserstein_angstrom": rdf.get("wasserstein"),
                "rdf_jensen_shannon": rdf.get("jensen_shannon"),
                "adf_wasserstein_deg": adf.get("wasserstein"),
                "adf_jensen_shannon": adf.get("jensen_shannon"),
            }
        for quantity in ("rdf_wasserstein_angstrom", "rdf_jensen_shannon", "adf_wasserstein_deg", "adf_jensen_shannon"):
            rows.append(
                {
                    "id": structure,
                    "property": f"{quantity} (vs {baseline})",
                    **{model: distances[model][quantity] for model in results},
                }
            )
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Per structure: RDF and ADF of every model overlaid, and temperature / density / energy traces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indexed = {model: records_by_id(records) for model, records in results.items()}
    ids = list(dict.fromkeys(i for records in indexed.values() for i in records))
    paths = []
    for structure in ids:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for model, records in indexed.items():
            record = records.get(structure, {})
            if "rdf" in record:
                axes[0].plot(record["rdf"]["r"], record["rdf"]["g"], label=model, lw=1.2)
            if "adf" in record:
                axes[1].plot(record["adf"]["angle_deg"], record["adf"]["density"], label=model, lw=1.2)
        axes[0].set_xlabel("r (Å)")
        axes[0].set_ylabel("g(r)")
        axes[1].set_xlabel("bond angle (°)")
        axes[1].set_ylabel("probability density (1/°)")
        for axis in axes:
            axis.legend(fontsize="small")
        figure.suptitle(f"md: {structure}")
        figure.tight_layout()
        path = out_dir / f"md_rdf_adf_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)

        figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for model, records in indexed.items():
            trace = records.get(structure, {}).get("trace") or {}
            if not trace.get("time_ps"):
                continue
            axes[0].plot(trace["time_ps"], trace["temperature_k"], label=model, lw=1)
            if any(d is not None for d in trace.get("density_g_per_cm3", [])):
                axes[1].plot(trace["time_ps"], trace["density_g_per_cm3"], label=model, lw=1)
            axes[2].plot(trace["time_ps"], trace["total_energy_per_atom"], label=model, lw=1)
        for axis, ylabel in zip(axes, ("temperature (K)", "density (g/cm³)", "total energy (eV/atom)")):
            axis.set_xlabel("time (ps)")
            axis.set_ylabel(ylabel)
            axis.legend(fontsize="small")
        figure.suptitle(f"md traces: {structure}")
        figure.tight_layout()
        path = out_dir / f"md_traces_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    paths += plot_properties(results, ("nve_energy_drift_ev_per_atom_per_ps", "mean_density_g_per_cm3"), out_dir, "md")
    return paths
