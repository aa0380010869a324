"""Monte Carlo on a fitted cluster expansion: order–disorder and miscibility-gap temperatures of an alloy.

The step after :mod:`atomtune.tasks.cluster_expansion`: the expansion fitted to one calculator's energies (reference DFT,
zero-shot or fine-tuned model) is sampled with mchammer (icet's Monte Carlo package) on a supercell of the primitive
cell, so "does the fine-tuned model change which phases form, and at what temperature?" is the same call per model.

- **canonical** (fixed composition ``concentration``): cooling runs over ``temperatures`` (hot to cold, each
  temperature starting from the previous one's last configuration); per temperature the mean mixing energy per atom, the
  heat capacity from the energy fluctuations, C = (⟨E²⟩ − ⟨E⟩²) / (k_B T² N) in k_B per atom, and the Warren–Cowley
  short-range order α of the nearest-neighbour shell (mchammer's observer: negative = unlike neighbours preferred,
  ordering; positive = like neighbours, clustering). The transition temperature is the grid temperature of the
  heat-capacity peak: an order–disorder transition for an ordering alloy, the top of the miscibility gap at that
  composition for a phase-separating one (α > 0 below it).
- **semi-grand canonical** (``chemical_potential_differences`` Δμ, eV): the equilibrium concentration x of the second
  species at each Δμ and temperature, and its susceptibility dx/dΔμ = N var(x) / k_B T from the fluctuations. Between
  neighbouring Δμ a one-phase curve moves by about the mean susceptibility × the Δμ step; a jump larger than
  ``gap_threshold`` *and* more than :data:`GAP_JUMP_FACTOR` times that is a two-phase region (a miscibility gap), and
  the highest temperature that still has one is reported as the miscibility-gap temperature (within the grid). A jump
  the fluctuations can explain is a steep but continuous curve, whatever the grid.

The expansion comes from the ``expansion`` records file the cluster-expansion task wrote (``Settings.expansion``; then the
calculator, if given, must be the one it was fitted to), or is fitted here with ``Settings.cluster_expansion`` settings.
Temperatures in K; energies in eV/atom (mixing energy, the expansion's own scale).

- **mixing free energy** (canonical): temperature integration of the cooling run's energies (Gibbs–Helmholtz,
  A(T)/T = A(T₁)/T₁ + ∫_T^{T₁} U/T'² dT', trapezoid on the grid) from the hottest temperature T₁, where A(T₁) ≈ U(T₁) −
  T₁ S_ideal (ideal mixing entropy of the mixing sites; exact for a non-interacting expansion, good when k_B T₁ is well
  above the interactions). A coarse grid or a first-order transition inside it makes the integral approximate; the
  semi-grand-canonical route (integrating Δμ over x) is not implemented.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import kB

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import json_ready, structure_label
from atomtune.tasks.comparison import records_by_id, safe_filename

ENSEMBLES = ("canonical", "semi-grand-canonical")
PROPERTIES = ("transition_temperature_k", "miscibility_gap_temperature_k")
#: A concentration jump between neighbouring Δμ counts as a two-phase region when it exceeds the fluctuation-response
#: estimate of a continuous curve (mean susceptibility × Δμ step) by this factor (and ``gap_threshold``).
GAP_JUMP_FACTOR = 3.0


@dataclass
class Settings:
    """``ensemble``: ``canonical`` or ``semi-grand-canonical``. ``temperatures``: K (run from the highest down).
    ``concentration``: canonical; fraction of the second mixing species (the cluster-expansion record's
    ``mixing_species[1]``) on the mixing sites. ``chemical_potential_differences``: semi-grand canonical; Δμ (eV) of
    the second species relative to the first. ``supercell``: repeats of the conventional cell (an int for all three
    directions or three ints; 6 on fcc: 864 sites). ``equilibration_sweeps`` / ``sampling_sweeps``: Monte Carlo sweeps
    (one sweep = one trial per site) discarded / averaged per temperature. ``gap_threshold``: a concentration jump
    between neighbouring Δμ larger than this marks a two-phase region. ``seed``: initial decoration and MC moves.
    ``expansion``: a records JSON from the cluster-expansion task (``records_<label>.json``), else the expansion is
    fitted here with ``cluster_expansion`` (settings of :class:`atomtune.tasks.cluster_expansion.Settings`)."""

    ensemble: str = "canonical"
    temperatures: list = field(default_factory=lambda: [float(t) for t in range(2000, 199, -100)])
    concentration: float = 0.25
    chemical_potential_differences: list = field(default_factory=list)
    supercell: int | list = 6
    equilibration_sweeps: int = 100
    sampling_sweeps: int = 300
    gap_threshold: float = 0.15
    seed: int = 0
    expansion: str | None = None
    cluster_expansion: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise AtomtuneError(f"ensemble {self.ensemble!r}: use {' or '.join(ENSEMBLES)}.")
        if not self.temperatures:
            raise AtomtuneError("temperatures is empty: give the grid in K, e.g. [1500, 1400, …, 300].")
        if any(not np.isfinite(t) or t <= 0 for t in self.temperatures):
            raise AtomtuneError(f"temperatures must be positive numbers of K; got {self.temperatures}.")
        if self.ensemble == "canonical" and not 0.0 < self.concentration < 1.0:
            raise AtomtuneError(f"concentration {self.concentration} must lie strictly between 0 and 1.")
        if self.ensemble == "semi-grand-canonical" and not self.chemical_potential_differences:
            raise AtomtuneError("semi-grand-canonical needs chemical_potential_differences (eV), e.g. [-0.2, …, 0.2].")
        if self.sampling_sweeps < 1 or self.equilibration_sweeps < 0:
            raise AtomtuneError("sampling_sweeps must be ≥ 1 and equilibration_sweeps ≥ 0.")


@dataclass
class TemperaturePoint:
    """One temperature of a canonical run (or one (T, Δμ) point of a semi-grand-canonical one)."""

    id: str
    kind: str
    parent: str
    temperature_k: float
    mixing_energy_per_atom: float
    heat_capacity_kb_per_atom: float
    concentration: float
    sro_first_shell: float | None
    acceptance_ratio: float
    chemical_potential_difference: float | None = None
    susceptibility_per_ev: float | None = None
    mixing_free_energy_per_atom: float | None = None


@dataclass
class TransitionRecord:
    """The summary of one parent: the temperatures found and what it cost. ``peak_at_grid_edge``: the heat-capacity
    peak is the coldest or hottest temperature of the grid, so the transition is only bounded by it (widen the grid)."""

    id: str
    kind: str
    parent: str
    ensemble: str
    calculator: str
    mixing_species: list
    n_sites: int
    temperatures_k: list
    grid_resolution_k: float
    transition_temperature_k: float | None
    peak_at_grid_edge: bool
    miscibility_gap_temperature_k: float | None
    ordering: str | None
    sweeps_per_temperature: int
    seconds: float
    expansion_source: str


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """For each input primitive cell: one record per temperature (or per temperature and Δμ) and one ``transition``
    record (see the module docstring). ``calculator`` fits the expansion (or is checked against the stored one); it
    may be None when ``settings.expansion`` names a file."""
    settings = settings or Settings()
    settings.check()
    stored = _stored_expansions(settings.expansion, calculator) if settings.expansion else None
    records: list[dict] = []
    for index, primitive in enumerate(structures):
        label = structure_label(primitive, index)
        expansion_record = _expansion_for(label, primitive, calculator, settings, stored, progress)
        records.extend(_sample(label, expansion_record, settings, progress))
    return records


def _stored_expansions(path: str, calculator) -> list[dict]:
    from atomtune.models.base import Potential
    from atomtune.tasks.cluster_expansion import expansion_records

    file = Path(path)
    try:
        records = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise AtomtuneError(f"{file}: cannot read the cluster-expansion records ({error}).") from None
    found = [r for r in expansion_records(records if isinstance(records, list) else []) if "expansion" in r]
    if not found:
        raise AtomtuneError(
            f"{file}: no expansion record in it; pass the records_<model>.json that `atomtune bench --task "
            f"cluster_expansion` wrote."
        )
    if isinstance(calculator, Potential):
        fitted_with = {record["calculator"] for record in found}
        if calculator.name not in fitted_with:
            raise AtomtuneError(
                f"{file}: the expansion was fitted to {', '.join(sorted(fitted_with))}, not to {calculator.name}; pass "
                f"that model's records file, or leave out `expansion` to fit one for {calculator.name}."
            )
    return found


def _expansion_for(label: str, primitive: Atoms, calculator, settings: Settings, stored, progress: bool) -> dict:
    from atomtune.tasks import cluster_expansion

    if stored is not None:
        matching = [record for record in stored if record["id"].rsplit("/", 1)[0] == label]
        if len(stored) == 1:
            matching = stored
        if not matching:
            raise AtomtuneError(
                f"{settings.expansion}: no expansion for structure {label!r} (it has "
                f"{', '.join(r['id'] for r in stored)})."
            )
        return {**matching[0], "source": str(settings.expansion)}
    if calculator is None:
        raise AtomtuneError("no calculator and no expansion file: give a model / reference, or Settings.expansion.")
    records = cluster_expansion.run(
        [primitive], calculator, cluster_expansion.Settings(**settings.cluster_expansion), progress=progress
    )
    (record,) = cluster_expansion.expansion_records(records)
    return {**record, "source": "fitted here"}


def conventional_supercell(primitive: Atoms, repeats) -> Atoms:
    """The conventional cell of ``primitive`` (spglib's standard cell: cubic for fcc/bcc) built as an integer
    supercell of it (so the cluster space maps onto it exactly), repeated ``repeats`` times."""
    import spglib
    from ase.build import make_supercell

    cell = (primitive.cell[:], primitive.get_scaled_positions(), primitive.numbers)
    dataset = spglib.get_symmetry_dataset(cell, symprec=1e-3)
    n_cells = 1
    if dataset is not None:
        n_cells = max(1, int(round(abs(np.linalg.det(dataset.std_lattice)) / primitive.get_volume())))
    if n_cells > 1:
        from ase.build import find_optimal_cell_shape

        matrix = find_optimal_cell_shape(primitive.cell, n_cells, "sc")
        conventional = make_supercell(primitive, matrix)
    else:
        conventional = primitive.copy()
    repeats = (int(repeats),) * 3 if np.isscalar(repeats) else tuple(int(r) for r in repeats)
    return conventional.repeat(repeats)


def _sample(label: str, expansion_record: dict, settings: Settings, progress: bool) -> list[dict]:
    from mchammer.calculators import ClusterExpansionCalculator

    from atomtune.tasks.cluster_expansion import expansion_from_dict

    expansion = expansion_from_dict(expansion_record["expansion"])
    species = list(expansion_record["mixing_species"])
    per_site = expansion_record["expansion"]["chemical_symbols"]
    primitive = Atoms(
        numbers=expansion_record["expansion"]["numbers"], positions=expansion_record["expansion"]["positions"],
        cell=expansion_record["expansion"]["cell"], pbc=expansion_record["expansion"]["pbc"],
    )
    for site, allowed in zip(primitive, per_site):  # inert sites carry their species, mixing sites start as species 0
        site.symbol = allowed[0] if len(allowed) == 1 else species[0]
    supercell = conventional_supercell(primitive, settings.supercell)
    mixing_sites = [i for i, s in enumerate(supercell.get_chemical_symbols()) if s == species[0]]
    rng = np.random.default_rng(settings.seed)
    if settings.ensemble == "canonical":
        n_second = int(round(settings.concentration * len(mixing_sites)))
        if n_second in (0, len(mixing_sites)):
            raise AtomtuneError(
                f"concentration {settings.concentration} on {len(mixing_sites)} mixing sites leaves no "
                f"{species[1] if n_second == 0 else species[0]}: raise supercell or change the concentration."
            )
        chosen = rng.choice(mixing_sites, size=n_second, replace=False)
        symbols = supercell.get_chemical_symbols()
        for i in chosen:
            symbols[i] = species[1]
        supercell.set_chemical_symbols(symbols)
    calculator = ClusterExpansionCalculator(supercell, expansion)
    started = time.perf_counter()
    temperatures = sorted((float(t) for t in settings.temperatures), reverse=True)
    points: list[TemperaturePoint] = []
    total = len(temperatures) * (1 if settings.ensemble == "canonical" else len(settings.chemical_potential_differences))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"monte carlo {label}", unit="point")
    structure = supercell
    try:
        for temperature in temperatures:
            if settings.ensemble == "canonical":
                point, structure = _canonical_point(
                    label, structure, calculator, expansion, temperature, species, mixing_sites, settings, rng
                )
                points.append(point)
                if bar is not None:
                    bar.update()
                continue
            sgc_structure = structure
            for delta_mu in sorted(float(d) for d in settings.chemical_potential_differences):
                point, sgc_structure = _sgc_point(
                    label, sgc_structure, calculator, expansion, temperature, delta_mu, species, mixing_sites,
                    settings, rng,
                )
                points.append(point)
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    if settings.ensemble == "canonical":
        _add_mixing_free_energy(points, len(mixing_sites) / len(supercell))
    summary = _summary(label, points, expansion_record, settings, len(supercell), temperatures, seconds)
    return [json_ready(asdict(p)) for p in points] + [json_ready(asdict(summary))]


def _add_mixing_free_energy(points: list[TemperaturePoint], mixing_fraction: float) -> None:
    """Mixing free energy per atom (eV) at each temperature of a canonical cooling run (see module docstring)."""
    ordered = sorted(points, key=lambda p: p.temperature_k, reverse=True)  # hottest first
    x = ordered[0].concentration
    entropy = -kB * mixing_fraction * sum(c * np.log(c) for c in (x, 1 - x) if c > 0)  # eV/K per atom
    hottest = ordered[0]
    free_over_t = (hottest.mixing_energy_per_atom - hottest.temperature_k * entropy) / hottest.temperature_k
    hottest.mixing_free_energy_per_atom = free_over_t * hottest.temperature_k
    for warmer, colder in zip(ordered, ordered[1:]):
        # ∫_{T_c}^{T_w} U/T² dT by the trapezoid rule
        free_over_t += 0.5 * (warmer.mixing_energy_per_atom / warmer.temperature_k**2
                              + colder.mixing_energy_per_atom / colder.temperature_k**2) * (
            warmer.temperature_k - colder.temperature_k)
        colder.mixing_free_energy_per_atom = free_over_t * colder.temperature_k


def _observer(expansion, structure: Atoms, species: list[str]):
    """Warren–Cowley α of the nearest-neighbour shell (radius just beyond the first pair orbit)."""
    from mchammer.observers import ShortRangeOrderObserver

    space = expansion.get_cluster_space_copy()
    pair_radii = sorted({float(orbit["radius"]) for orbit in space.as_list if orbit["order"] == 2})
    if not pair_radii:
        return None
    first = 2 * pair_radii[0]  # icet's orbit radius is half the pair distance
    second = 2 * pair_radii[1] if len(pair_radii) > 1 else 1.5 * first
    return ShortRangeOrderObserver(space, structure, radius=(first + second) / 2, pairs=[tuple(species)])


def _run_ensemble(ensemble, structure: Atoms, settings: Settings, observer) -> dict:
    n = len(structure)
    ensemble.run(settings.equilibration_sweeps * n)
    if observer is not None:
        ensemble.attach_observer(observer)
    ensemble.run(settings.sampling_sweeps * n)
    data = ensemble.data_container.data
    sampled = data[data["mctrial"] > settings.equilibration_sweeps * n]
    return {"data": sampled, "structure": ensemble.structure}


def _sro_value(frame) -> float | None:
    columns = [c for c in frame.columns if str(c).lower().startswith("sro")]
    if not columns:
        return None
    values = frame[columns[0]].dropna().to_numpy(dtype=float)
    return float(values.mean()) if len(values) else None


def _energy_stats(frame, temperature: float, n_sites: int) -> tuple[float, float, float]:
    energies = frame["potential"].dropna().to_numpy(dtype=float)
    heat_capacity = float(np.var(energies) / (kB * temperature**2) / n_sites)  # in k_B per site: C/(k_B N)
    acceptance = frame["acceptance_ratio"].dropna().to_numpy(dtype=float)
    return float(energies.mean()) / n_sites, heat_capacity / kB, float(acceptance.mean()) if len(acceptance) else 0.0


def _canonical_point(label, structure, calculator, expansion, temperature, species, mixing_sites, settings, rng):
    from mchammer.ensembles import CanonicalEnsemble

    ensemble = CanonicalEnsemble(
        structure=structure, calculator=calculator, temperature=temperature, dc_filename=None,
        random_seed=int(rng.integers(1 << 31)), ensemble_data_write_interval=len(structure),
    )
    sampled = _run_ensemble(ensemble, structure, settings, _observer(expansion, structure, species))
    energy, heat_capacity, acceptance = _energy_stats(sampled["data"], temperature, len(structure))
    final = sampled["structure"]
    concentration = final.get_chemical_symbols().count(species[1]) / len(mixing_sites)
    point = TemperaturePoint(
        id=f"{label}/T={temperature:g}", kind="temperature", parent=label, temperature_k=temperature,
        mixing_energy_per_atom=energy, heat_capacity_kb_per_atom=heat_capacity, concentration=concentration,
        sro_first_shell=_sro_value(sampled["data"]), acceptance_ratio=acceptance,
    )
    return point, final


def _sgc_point(label, structure, calculator, expansion, temperature, delta_mu, species, mixing_sites, settings, rng):
    from mchammer.ensembles import SemiGrandCanonicalEnsemble

    ensemble = SemiGrandCanonicalEnsemble(
        structure=structure, calculator=calculator, temperature=temperature, dc_filename=None,
        chemical_potentials={species[0]: 0.0, species[1]: delta_mu},
        random_seed=int(rng.integers(1 << 31)), ensemble_data_write_interval=len(structure),
    )
    sampled = _run_ensemble(ensemble, structure, settings, None)
    frame = sampled["data"]
    energy, heat_capacity, acceptance = _energy_stats(frame, temperature, len(structure))
    column = f"{species[1]}_count"
    counts = frame[column].dropna().to_numpy(dtype=float) if column in frame.columns else None
    final = sampled["structure"]
    if counts is not None and len(counts):
        concentration = float(counts.mean()) / len(mixing_sites)
        # fluctuation–response: d<n>/dΔμ = var(n) / k_B T, so dx/dΔμ = var(n) / (N k_B T)
        susceptibility = float(np.var(counts)) / (len(mixing_sites) * kB * temperature)
    else:
        concentration = final.get_chemical_symbols().count(species[1]) / len(mixing_sites)
        susceptibility = None
    point = TemperaturePoint(
        id=f"{label}/T={temperature:g}/dmu={delta_mu:g}", kind="sgc_point", parent=label, temperature_k=temperature,
        mixing_energy_per_atom=energy, heat_capacity_kb_per_atom=heat_capacity, concentration=concentration,
        sro_first_shell=None, acceptance_ratio=acceptance, chemical_potential_difference=delta_mu,
        susceptibility_per_ev=susceptibility,
    )
    return point, final


def _summary(label, points, expansion_record, settings: Settings, n_sites, temperatures, seconds) -> TransitionRecord:
    resolution = float(np.min(np.abs(np.diff(sorted(temperatures))))) if len(temperatures) > 1 else float("nan")
    transition = gap = ordering = None
    at_edge = False
    if settings.ensemble == "canonical":
        peak = max(points, key=lambda p: p.heat_capacity_kb_per_atom)
        transition = peak.temperature_k
        # a peak at the coldest or hottest grid point is no transition found, only a bound: widen the grid
        at_edge = len(temperatures) > 1 and transition in (min(temperatures), max(temperatures))
        coldest = min(points, key=lambda p: p.temperature_k)
        if coldest.sro_first_shell is not None:
            ordering = "ordering" if coldest.sro_first_shell < 0 else "clustering"
    else:
        for temperature in temperatures:  # hottest first
            curve = sorted((p for p in points if p.temperature_k == temperature),
                           key=lambda p: p.chemical_potential_difference)
            if any(_two_phase(a, b, settings.gap_threshold) for a, b in zip(curve, curve[1:])):
                gap = temperature
                break
    return TransitionRecord(
        id=f"{label}/transition", kind="transition", parent=label, ensemble=settings.ensemble,
        calculator=expansion_record.get("calculator", ""), mixing_species=list(expansion_record["mixing_species"]),
        n_sites=n_sites, temperatures_k=sorted(temperatures), grid_resolution_k=resolution,
        transition_temperature_k=transition, peak_at_grid_edge=at_edge, miscibility_gap_temperature_k=gap,
        ordering=ordering,
        sweeps_per_temperature=settings.equilibration_sweeps + settings.sampling_sweeps, seconds=seconds,
        expansion_source=expansion_record.get("source", ""),
    )


def _two_phase(a: TemperaturePoint, b: TemperaturePoint, threshold: float) -> bool:
    """A concentration jump between neighbouring Δμ that a continuous curve cannot make (see module docstring)."""
    jump = abs(b.concentration - a.concentration)
    slope = np.mean([p.susceptibility_per_ev or 0.0 for p in (a, b)])
    continuous = slope * abs(b.chemical_potential_difference - a.chemical_potential_difference)
    return jump > threshold and jump > GAP_JUMP_FACTOR * continuous


def transition_records(records: Sequence[dict]) -> list[dict]:
    return [record for record in records if record.get("kind") == "transition"]


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Per input structure: transition / miscibility-gap temperature of each model (and the difference to
    ``reference``), and the grid resolution they are known to."""
    rows = []
    parents = list(dict.fromkeys(r["id"] for records in results.values() for r in transition_records(records)))
    for parent in parents:
        for key in (*PROPERTIES, "peak_at_grid_edge", "ordering", "grid_resolution_k"):
            row = {"id": parent, "property": key}
            for model, records in results.items():
                row[model] = records_by_id(records).get(parent, {}).get(key)
            if reference is not None and reference in results:
                for model in results:
                    numbers = [row[m] for m in (model, reference)]
                    if model != reference and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in numbers):
                        row[f"{model} − {reference}"] = row[model] - row[reference]
            if any(row[model] is not None for model in results):
                rows.append(row)
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Canonical: energy, heat capacity and first-shell SRO against temperature, one line per model. Semi-grand
    canonical: concentration against Δμ, one panel per model, one line per temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    parents = list(dict.fromkeys(r["parent"] for records in results.values() for r in transition_records(records)))
    for parent in parents:
        canonical = {m: [r for r in rs if r.get("kind") == "temperature" and r["parent"] == parent]
                     for m, rs in results.items()}
        if any(canonical.values()):
            figure, axes = plt.subplots(1, 3, figsize=(12.5, 3.8))
            for model, rows in canonical.items():
                rows = sorted(rows, key=lambda r: r["temperature_k"])
                if not rows:
                    continue
                t = [r["temperature_k"] for r in rows]
                axes[0].plot(t, [r["mixing_energy_per_atom"] * 1000 for r in rows], "-o", ms=3, label=model)
                axes[1].plot(t, [r["heat_capacity_kb_per_atom"] for r in rows], "-o", ms=3, label=model)
                sro = [np.nan if r["sro_first_shell"] is None else r["sro_first_shell"] for r in rows]
                axes[2].plot(t, sro, "-o", ms=3, label=model)
            for axis, ylabel in zip(axes, ("mixing energy (meV/atom)", "heat capacity (k_B/atom)",
                                            "Warren–Cowley α, 1st shell")):
                axis.set_xlabel("temperature (K)")
                axis.set_ylabel(ylabel)
                axis.grid(alpha=0.3)
            axes[0].legend(fontsize="x-small")
            figure.suptitle(f"canonical Monte Carlo: {parent}")
            figure.tight_layout()
            path = out_dir / f"monte_carlo_{safe_filename(parent)}.png"
            figure.savefig(path, dpi=110)
            plt.close(figure)
            paths.append(path)
        sgc = {m: [r for r in rs if r.get("kind") == "sgc_point" and r["parent"] == parent] for m, rs in results.items()}
        models = [m for m, rows in sgc.items() if rows]
        if models:
            figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
            for axis, model in zip(axes[0], models):
                for temperature in sorted({r["temperature_k"] for r in sgc[model]}):
                    rows = sorted((r for r in sgc[model] if r["temperature_k"] == temperature),
                                  key=lambda r: r["chemical_potential_difference"])
                    axis.plot([r["chemical_potential_difference"] for r in rows], [r["concentration"] for r in rows],
                              "-o", ms=3, label=f"{temperature:g} K")
                axis.set_xlabel("Δμ (eV)")
                axis.set_ylabel("concentration")
                axis.set_title(model)
                axis.legend(fontsize="xx-small")
            figure.tight_layout()
            path = out_dir / f"monte_carlo_sgc_{safe_filename(parent)}.png"
            figure.savefig(path, dpi=110)
            plt.close(figure)
            paths.append(path)
    return paths
