"""Exploration: find structures where the committee is unsure (MD with the committee, rattles and strains), flag them.

Each explorer returns candidate frames with their uncertainty; a frame is flagged when its force-spread metric exceeds the
threshold of :class:`~atomtune.learn.spec.FlagSpec`. MD uses the integrators of :mod:`atomtune.tasks.md` (Langevin /
Bussi / Nosé–Hoover NVT, MTK NPT) and its explosion checks (minimum distance, maximum force, runaway temperature), plus a
potential-energy change limit; an exploded run stops there and its time to failure is recorded (MD stability before vs
after retraining). Rattles and strains come from :mod:`atomtune.data.generate`. Deterministic under a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms

from atomtune.data import generate
from atomtune.learn.spec import ExploreSpec, FlagSpec, MDExplorer, RattleExplorer
from atomtune.tasks import md as md_task
from atomtune.uncertainty.committee import CommitteePotential, sigma_energy_gradient


@dataclass
class Candidate:
    """One explored frame: the structure (no labels), its flag metric (unitless for ``relative``, eV/Å for
    ``absolute``), max per-atom σ_F (eV/Å), σ_E per atom (eV/atom), whether it is flagged, where it came from."""

    atoms: Atoms
    uncertainty: float
    max_force_std: float
    energy_std_per_atom: float
    flagged: bool
    source: str


@dataclass
class MDRun:
    """Stability of one MD run: ``temperature_k`` (the highest reached), ``time_ps`` simulated, ``exploded`` and why,
    ``first_flag_ps`` (time of the first flagged frame; None if none), ``hal_tau`` used (eV per eV of σ_E)."""

    start_id: str
    temperatures_k: list[float]
    steps_completed: int
    steps_requested: int
    time_ps: float
    exploded: bool
    reason: str = ""
    first_flag_ps: float | None = None
    hal_tau: float = 0.0


@dataclass
class Exploration:
    """Everything an exploration pass found: candidates (flagged and not) and MD run records."""

    candidates: list[Candidate] = field(default_factory=list)
    md_runs: list[MDRun] = field(default_factory=list)

    @property
    def flagged(self) -> list[Candidate]:
        return [c for c in self.candidates if c.flagged]

    def summary(self) -> dict:
        """Counts, the flagged fraction, σ distribution (max per-atom σ_F quantiles, eV/Å) and MD stability."""
        sigmas = np.array([c.max_force_std for c in self.candidates]) if self.candidates else np.zeros(0)
        metrics = np.array([c.uncertainty for c in self.candidates]) if self.candidates else np.zeros(0)
        return {
            "candidates": len(self.candidates),
            "flagged": len(self.flagged),
            "flagged_fraction": len(self.flagged) / len(self.candidates) if self.candidates else 0.0,
            "max_force_std_quantiles_ev_per_a": (
                {f"q{int(q * 100)}": float(np.quantile(sigmas, q)) for q in (0.1, 0.5, 0.9, 1.0)} if len(sigmas) else {}
            ),
            "uncertainty_values": metrics.tolist(),
            "md_runs": [asdict(run) for run in self.md_runs],
        }


def flag_metric(forces: np.ndarray, forces_std: np.ndarray, flag: FlagSpec) -> float:
    """max over atoms of σ_F / (|F̄| + ε) (``relative``) or of σ_F (``absolute``); forces (n, 3), σ_F (n,) eV/Å."""
    forces_std = np.asarray(forces_std, dtype=float)
    if flag.metric == "absolute":
        return float(forces_std.max()) if forces_std.size else 0.0
    magnitude = np.linalg.norm(np.asarray(forces, dtype=float), axis=1)
    return float((forces_std / (magnitude + flag.epsilon)).max()) if forces_std.size else 0.0


def explore(committee: CommitteePotential, structures: Sequence[Atoms], spec: ExploreSpec, seed: int = 0,
            progress: bool = True) -> Exploration:
    """Run every explorer of ``spec`` from every start structure with ``committee``; deterministic for a ``seed``."""
    result = Exploration()
    structures = list(structures)
    jobs = [(e, k, atoms) for e, explorer in enumerate(spec.explorers) for k, atoms in enumerate(structures)]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="exploring", unit="run")
    for e, k, atoms in iterator:
        explorer = spec.explorers[e]
        run_seed = int(np.random.default_rng([seed, e, k]).integers(1 << 30))
        if isinstance(explorer, MDExplorer):
            candidates, run = explore_md(committee, atoms, explorer, spec.flag, run_seed)
            result.candidates += candidates
            result.md_runs.append(run)
        else:
            result.candidates += explore_rattle(committee, atoms, explorer, spec.flag, run_seed)
    return result


def explore_md(committee: CommitteePotential, start: Atoms, explorer: MDExplorer, flag: FlagSpec, seed: int,
               ) -> tuple[list[Candidate], MDRun]:
    """Committee MD from ``start`` through ``explorer.temperatures_k``; a candidate every ``sample_interval`` steps."""
    from ase.md import velocitydistribution

    atoms = Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    if explorer.supercell:
        atoms = atoms.repeat(explorer.supercell)
    atoms = _at_least(atoms, MIN_MD_ATOMS)
    start_id = str(start.info.get("id", start.get_chemical_formula()))
    n_atoms = len(atoms)
    calculator = committee.calculator()
    atoms.calc = calculator
    tau = 0.0
    if explorer.hal_tau > 0:
        tau = _hal_tau(committee, atoms, explorer.hal_tau)
        calculator = committee.calculator(bias_tau=tau)
        atoms.calc = calculator
    rng = np.random.default_rng(seed)
    thermalize = getattr(velocitydistribution, "thermalize_momenta", velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=explorer.temperatures_k[0], rng=rng)
    velocitydistribution.Stationary(atoms)
    candidates: list[Candidate] = []
    steps_done, reason, first_flag = 0, "", None
    initial_energy = None
    requested = explorer.steps * len(explorer.temperatures_k)
    for segment, temperature in enumerate(explorer.temperatures_k):
        settings = md_task.Settings(
            ensemble=explorer.ensemble, temperature_k=temperature, pressure_gpa=explorer.pressure_gpa,
            timestep_fs=explorer.timestep_fs, thermostat=explorer.thermostat, seed=seed + segment,
        )
        integrator = md_task.make_integrator(atoms, settings)
        done = 0
        while done < explorer.steps and not reason:
            chunk = min(explorer.sample_interval, explorer.steps - done)
            try:
                integrator.run(chunk)
            except Exception as error:  # a blown-up integrator (NaN cell, singular matrix) is a failure, not a crash
                reason = f"integrator failed: {error}"
                break
            done += chunk
            steps_done += chunk
            time_ps = steps_done * explorer.timestep_fs / 1000.0
            results = calculator.results
            forces = np.asarray(results.get("unbiased_forces", atoms.get_forces()))
            energy = float(results.get("unbiased_energy", atoms.get_potential_energy()))
            initial_energy = energy if initial_energy is None else initial_energy
            reason = _explosion(atoms, forces, energy, initial_energy, temperature, explorer)
            if reason:
                break
            metric = flag_metric(forces, results["forces_std"], flag)
            flagged = metric > flag.threshold
            frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            frame.info.update(
                id=f"{start_id}-md{seed}-t{int(temperature)}-s{steps_done}", generator="al-md", parent=start_id,
                temperature_k=float(temperature), time_ps=float(time_ps), uncertainty=metric,
            )
            candidates.append(Candidate(frame, metric, float(np.max(results["forces_std"])),
                                        float(results["energy_std"]) / n_atoms, flagged, "md"))
            if flagged and first_flag is None:
                first_flag = time_ps
                if explorer.stop_on_flag:
                    break
        if reason or (explorer.stop_on_flag and first_flag is not None):
            break
    run = MDRun(
        start_id=start_id, temperatures_k=[float(t) for t in explorer.temperatures_k], steps_completed=steps_done,
        steps_requested=requested, time_ps=steps_done * explorer.timestep_fs / 1000.0, exploded=bool(reason),
        reason=reason, first_flag_ps=first_flag, hal_tau=tau,
    )
    return candidates, run


#: MD of a 1–3-atom primitive cell is meaningless (with the centre of mass fixed a 1-atom cell cannot move at all, and
#: ASE's velocity scaling divides by its zero temperature): such cells are repeated to at least this many atoms.
MIN_MD_ATOMS = 4


def _at_least(atoms: Atoms, count: int) -> Atoms:
    """``atoms`` repeated along its shortest cell vectors until it has ≥ ``count`` atoms (unchanged if it has)."""
    repeats = [1, 1, 1]
    while len(atoms) * np.prod(repeats) < count and atoms.pbc.all():
        lengths = [atoms.cell.lengths()[axis] * repeats[axis] for axis in range(3)]
        repeats[int(np.argmin(lengths))] += 1
    return atoms.repeat(repeats) if repeats != [1, 1, 1] else atoms


def explore_rattle(committee: CommitteePotential, start: Atoms, explorer: RattleExplorer, flag: FlagSpec, seed: int,
                   ) -> list[Candidate]:
    """Rattled (and strained) copies of ``start``, scored by the committee in one batched predict."""
    plain = Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
    start_id = str(start.info.get("id", start.get_chemical_formula()))
    frames = []
    rng = np.random.default_rng(seed)
    for k in range(explorer.count):
        atoms = plain
        if explorer.max_strain > 0:
            (atoms,) = generate.random_strains(atoms, 1, max_strain=explorer.max_strain, seed=int(rng.integers(1 << 30)))
        atoms = generate.rattle(atoms, explorer.stdev, seed=int(rng.integers(1 << 30)))
        atoms.info.update(id=f"{start_id}-rattle{seed}-{k}", parent=start_id)
        frames.append(atoms)
    predictions = committee.predict(frames, stress=False)
    candidates = []
    for atoms, record in zip(frames, predictions):
        metric = flag_metric(record["forces"], record["forces_std"], flag)
        atoms.info["uncertainty"] = metric
        candidates.append(Candidate(atoms, metric, float(np.max(record["forces_std"])),
                                    float(record["energy_std"]) / len(atoms), metric > flag.threshold, "rattle"))
    return candidates


def _hal_tau(committee: CommitteePotential, atoms: Atoms, relative: float) -> float:
    """τ = relative × mean |F̄| / mean |∂σ_E/∂r| at the start structure (HAL's τ_r; bias and physical forces compare)."""
    (record,) = committee.predict([atoms], stress=False, members=True)
    gradient = sigma_energy_gradient(record["energy_members"], record["forces_members"]) * committee.alpha("energy")
    bias = float(np.linalg.norm(gradient, axis=1).mean())
    force = float(np.linalg.norm(record["forces"], axis=1).mean())
    if bias == 0.0:
        return 0.0
    # A perfect crystal has |F̄| ≈ 0: use 0.1 eV/Å (a thermal force scale) as the floor of the physical forces.
    return relative * max(force, 0.1) / bias


def _explosion(atoms: Atoms, forces: np.ndarray, energy: float, initial_energy: float, temperature: float,
               explorer: MDExplorer) -> str:
    """Why the run must stop (tasks/md.py's thresholds plus a potential-energy change limit), or ''."""
    max_force = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
    if not (np.isfinite(energy) and np.isfinite(max_force)):
        return "energy or forces became non-finite"
    distance = md_task.shortest_distance(atoms)
    if distance < md_task.EXPLODED_MIN_DISTANCE:
        return f"atoms {distance:.2f} Å apart (< {md_task.EXPLODED_MIN_DISTANCE} Å)"
    if max_force > md_task.EXPLODED_MAX_FORCE:
        return f"force {max_force:.0f} eV/Å (> {md_task.EXPLODED_MAX_FORCE} eV/Å)"
    current = float(atoms.get_temperature())
    if current > md_task.EXPLODED_TEMPERATURE_FACTOR * max(temperature, 100.0):
        return f"temperature {current:.0f} K (> {md_task.EXPLODED_TEMPERATURE_FACTOR}× target)"
    change = abs(energy - initial_energy) / len(atoms)
    if change > explorer.max_energy_change_ev_per_atom:
        return f"potential energy moved {change:.2f} eV/atom (> {explorer.max_energy_change_ev_per_atom})"
    return ""
