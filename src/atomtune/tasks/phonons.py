"""Harmonic phonons by finite displacements (phonopy): band structure, DOS, frequencies at high-symmetry points,
imaginary-mode detection and harmonic thermodynamics (Helmholtz free energy, entropy, heat capacity vs temperature).

A property task (``run`` on the reference and on every model, ``compare`` side by side, ``plot``). Each structure is
relaxed with the calculator, phonopy displaces atoms of a supercell by ``displacement_distance`` and the calculator's
forces give the force constants (symmetrised, so the acoustic sum rule holds and acoustic modes vanish at Γ). Bands
follow the standard high-symmetry path of the primitive cell's Bravais lattice (Setyawan & Curtarolo, Comput. Mater.
Sci. 49, 299 (2010), as tabulated by ASE's ``Cell.bandpath``, which covers all 14 lattices without seekpath), so every
model's bands are on the same path and can be compared point by point. Frequencies are in THz; an imaginary mode is a
negative frequency (phonopy's convention). Thermal properties are phonopy's harmonic (constant-volume) sums over the DOS
mesh, converted from its per-unit-cell kJ/mol and J/(K·mol) to eV per atom and k_B per atom; the three acoustic modes
at Γ (zero up to numerical noise) are left out of the sums, and imaginary modes are excluded by phonopy (the record then
says that the numbers describe an unstable crystal).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units

from atomtune.tasks import as_calculator, run_each
from atomtune.tasks.bulk_reference import starting_bulk, supercell_repeats
from atomtune.tasks.comparison import SUMMARY_ID, compare_properties, records_by_id, safe_filename


@dataclass
class Settings:
    """Supercell, displacements, the path and what counts as imaginary.

    ``supercell_matrix``: 3×3 (or 3 diagonal) integers applied to the input cell; None picks the diagonal supercell
    whose perpendicular widths are all ≥ ``min_supercell_width``.
    ``min_supercell_width``: Å; 10 Å holds the force constants of metals and simple ionic solids to the accuracy of the
    potentials being compared (125 atoms for primitive fcc Cu).
    ``displacement_distance``: Å, phonopy's default; small enough to stay harmonic, large enough for float32 models'
    force noise (~1e-4 eV/Å) to stay far below the ~0.01 eV/Å forces it makes.
    ``relax``: relax cell and positions first (phonons of a strained cell are not the model's phonons).
    ``fmax``: eV/Å for that relaxation; residual forces enter the force constants, hence tighter than other tasks.
    ``max_steps``: optimizer steps before the record is marked failed.
    ``band_points``: q-points along the whole path. ``dos_mesh``: phonopy mesh (a length in Å: q-mesh numbers are
    length × |b_i|; or three integers).
    ``imaginary_threshold_thz``: a mode counts as imaginary below −this; 0.1 THz sits above the numerical noise of
    finite displacements near Γ and below any real instability.
    ``symprec``: Å, symmetry tolerance for phonopy and for recognising the Bravais lattice.
    ``thermal_t_min_k``, ``thermal_t_max_k``, ``thermal_t_step_k``: K, the temperature grid of the free energy, entropy
    and heat capacity curves (phonopy's defaults; 300 K is always reported as well, for the comparison table).
    """

    supercell_matrix: list | None = None
    min_supercell_width: float = 10.0
    displacement_distance: float = 0.01
    relax: bool = True
    fmax: float = 0.001
    max_steps: int = 500
    band_points: int = 150
    dos_mesh: float | list = 50.0
    imaginary_threshold_thz: float = 0.1
    symprec: float = 1e-3
    thermal_t_min_k: float = 0.0
    thermal_t_max_k: float = 1000.0
    thermal_t_step_k: float = 10.0

    def __post_init__(self):
        from atomtune.exceptions import AtomtuneError

        if not 0 <= self.thermal_t_min_k <= self.thermal_t_max_k or self.thermal_t_step_k <= 0:
            raise AtomtuneError(
                f"thermal temperatures: need 0 ≤ thermal_t_min_k ≤ thermal_t_max_k and thermal_t_step_k > 0, got "
                f"{self.thermal_t_min_k}, {self.thermal_t_max_k}, {self.thermal_t_step_k} K."
            )


#: Temperature (K) of the thermal properties in the comparison table.
ROOM_TEMPERATURE_K = 300.0
#: phonopy's thermal units per unit cell → ASE's: kJ/mol → eV, J/(K·mol) → k_B.
KJ_PER_MOL_IN_EV = units.kJ / units.mol
J_PER_K_MOL_IN_KB = units.J / units.mol / units.kB


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure.

    Record: ``id``, ``formula``, ``n_atoms_primitive``, ``supercell_matrix``, ``n_displacements``, ``volume_per_atom``
    (Å³), ``band_path`` (ASE's path string, ``G`` is Γ), ``special_points`` (label → q in reduced coordinates of the
    primitive reciprocal cell), ``frequencies_at_special_points_thz`` (label → ascending frequencies),
    ``band_distances`` (1/Å, incl. 2π), ``band_frequencies_thz`` (q × branch), ``band_label_distances`` and
    ``band_labels`` (ticks),
    ``dos_frequencies_thz`` and ``dos_states_per_thz`` (per primitive cell), ``min_frequency_thz`` (most negative over
    path and mesh) and ``min_frequency_qpoint``, ``max_frequency_thz``, ``has_imaginary_modes``;
    ``mesh_frequencies_thz`` (irreducible q × branch) and ``mesh_weights`` (their multiplicities) of the DOS mesh;
    thermodynamics per atom: ``thermal_temperatures_k``, ``helmholtz_free_energy_ev_per_atom`` (vibrational, zero-point
    energy included), ``entropy_kb_per_atom``, ``heat_capacity_kb_per_atom`` (C_V), ``zero_point_energy_ev_per_atom``,
    the same three at 300 K (``helmholtz_free_energy_300k_ev_per_atom``, ``entropy_300k_kb_per_atom``,
    ``heat_capacity_300k_kb_per_atom``) and ``thermal_properties_note`` (None, or why the numbers are not meaningful).
    """
    settings = settings or Settings()
    calculator = as_calculator(calculator)
    return run_each(structures, lambda atoms, label: _phonons(atoms, label, calculator, settings), "phonons", progress)


def _phonons(atoms: Atoms, label: str, calculator, settings: Settings) -> dict:
    from ase.dft.kpoints import parse_path_string  # imports scipy.integrate (~1 s): only when phonons are computed
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    # phonons of an unrelaxed structure carry spurious imaginary modes: a failed relaxation fails the structure
    atoms = starting_bulk(
        atoms, label, calculator, "the phonon task", settings.relax, settings.fmax, settings.max_steps
    )
    supercell_matrix = settings.supercell_matrix
    if supercell_matrix is None:
        supercell_matrix = np.diag(supercell_repeats(atoms, settings.min_supercell_width))
    unitcell = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.asarray(atoms.cell[:]),
        scaled_positions=atoms.get_scaled_positions(),
    )
    with warnings.catch_warnings():
        # "auto" is asked for on purpose (bands on the primitive cell's path); phonopy warns that v3 defaulted otherwise
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        phonon = Phonopy(unitcell, supercell_matrix=supercell_matrix, primitive_matrix="auto", symprec=settings.symprec)
    phonon.generate_displacements(distance=settings.displacement_distance)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        supercell = Atoms(
            displaced.symbols, cell=displaced.cell, scaled_positions=displaced.scaled_positions, pbc=True
        )
        supercell.calc = calculator
        forces.append(supercell.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants(show_drift=False)
    phonon.symmetrize_force_constants(show_drift=False)

    primitive_cell = np.asarray(phonon.primitive.cell)
    path = Atoms(cell=primitive_cell, pbc=True).cell.bandpath(npoints=settings.band_points, eps=settings.symprec)
    band_frequencies = phonon.run_qpoints(path.kpts).frequencies
    band_distances, label_distances, band_labels = path.get_linear_kpoint_axis()
    on_path = [name for segment in parse_path_string(path.path) for name in segment]
    special_labels = list(dict.fromkeys(on_path))
    special_points = {name: np.asarray(path.special_points[name]) for name in special_labels}
    special_frequencies = phonon.run_qpoints([special_points[name] for name in special_labels]).frequencies

    mesh = phonon.run_mesh(settings.dos_mesh)
    dos = phonon.run_total_dos()
    thermal = _thermal_properties(phonon, settings)

    candidates = [(band_frequencies, path.kpts), (mesh.frequencies, mesh.qpoints)]
    lowest = min(candidates, key=lambda pair: pair[0].min())
    q_index = int(np.unravel_index(np.argmin(lowest[0]), lowest[0].shape)[0])
    min_frequency = float(lowest[0].min())
    return {
        "id": label,
        "formula": atoms.get_chemical_formula(),
        "n_atoms_primitive": len(phonon.primitive),
        "supercell_matrix": np.asarray(phonon.supercell_matrix).tolist(),
        "n_displacements": len(forces),
        "volume_per_atom": atoms.get_volume() / len(atoms),
        "band_path": path.path,
        "special_points": special_points,
        "frequencies_at_special_points_thz": dict(zip(special_labels, special_frequencies)),
        "band_distances": band_distances,
        "band_frequencies_thz": band_frequencies,
        "band_label_distances": label_distances,
        "band_labels": band_labels,
        "dos_frequencies_thz": dos.frequency_points,
        "dos_states_per_thz": dos.dos,
        "min_frequency_thz": min_frequency,
        "min_frequency_qpoint": lowest[1][q_index],
        "max_frequency_thz": float(max(band_frequencies.max(), mesh.frequencies.max())),
        "has_imaginary_modes": min_frequency < -settings.imaginary_threshold_thz,
        "mesh_frequencies_thz": mesh.frequencies,
        "mesh_weights": mesh.weights,
        **thermal,
        "thermal_properties_note": (
            f"imaginary modes (down to {min_frequency:.2f} THz) are left out of the thermal sums: the crystal is "
            f"dynamically unstable for this calculator, so F, S and C_V do not describe it"
            if min_frequency < -settings.imaginary_threshold_thz
            else None
        ),
    }


def _thermal_properties(phonon, settings: Settings) -> dict:
    """Harmonic F, S, C_V per atom on the settings' temperature grid and at 300 K (phonopy, after ``run_mesh``)."""
    n_atoms = len(phonon.primitive)

    def run(**temperatures):
        # exclude_gamma_acoustic: the three Γ acoustic modes are zero but come out as ±1e-8 THz noise; counting them or
        # not would then depend on their signs (phonopy warns about exactly this)
        result = phonon.run_thermal_properties(exclude_gamma_acoustic=True, **temperatures)
        return (
            np.asarray(result.temperatures, dtype=float),
            np.asarray(result.free_energy) * KJ_PER_MOL_IN_EV / n_atoms,
            np.asarray(result.entropy) * J_PER_K_MOL_IN_KB / n_atoms,
            np.asarray(result.heat_capacity) * J_PER_K_MOL_IN_KB / n_atoms,
            float(result.zero_point_energy) * KJ_PER_MOL_IN_EV / n_atoms,
        )

    temperatures, free_energy, entropy, heat_capacity, zero_point = run(
        t_min=settings.thermal_t_min_k, t_max=settings.thermal_t_max_k, t_step=settings.thermal_t_step_k
    )
    _, room_free_energy, room_entropy, room_heat_capacity, _ = run(temperatures=[ROOM_TEMPERATURE_K])
    return {
        "thermal_temperatures_k": temperatures,
        "helmholtz_free_energy_ev_per_atom": free_energy,
        "entropy_kb_per_atom": entropy,
        "heat_capacity_kb_per_atom": heat_capacity,
        "zero_point_energy_ev_per_atom": zero_point,
        "helmholtz_free_energy_300k_ev_per_atom": float(room_free_energy[0]),
        "entropy_300k_kb_per_atom": float(room_entropy[0]),
        "heat_capacity_300k_kb_per_atom": float(room_heat_capacity[0]),
    }


#: Scalar properties ``compare`` tabulates per structure (THz; the flag as 0/1; thermodynamics at 300 K per atom).
PROPERTIES = (
    "max_frequency_thz",
    "min_frequency_thz",
    "has_imaginary_modes",
    "helmholtz_free_energy_300k_ev_per_atom",
    "entropy_300k_kb_per_atom",
    "heat_capacity_300k_kb_per_atom",
)


def frequency_mae_thz(record: dict, reference: dict) -> float | None:
    """Mean |Δω| (THz) over the high-symmetry points both records have, branch by branch (ascending order)."""
    mine = record.get("frequencies_at_special_points_thz") or {}
    theirs = reference.get("frequencies_at_special_points_thz") or {}
    differences = [
        np.asarray(mine[name], dtype=float) - np.asarray(theirs[name], dtype=float)
        for name in mine
        if name in theirs and len(mine[name]) == len(theirs[name])
    ]
    if not differences:
        return None
    return float(np.mean(np.abs(np.concatenate(differences))))


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per structure id: max/min frequency (THz), the imaginary-mode flag, and with ``reference`` the MAE (THz) of
    every model's frequencies at the high-symmetry points against the reference's (``frequency_mae_thz``)."""
    rows = compare_properties(results, PROPERTIES, reference)
    if reference is None or len(results) < 2:
        return rows
    by_id = {model: records_by_id(records) for model, records in results.items()}
    maes: dict[str, list[float]] = {model: [] for model in results if model != reference}
    for structure, reference_record in by_id[reference].items():
        row = {"id": structure, "property": "frequency_mae_thz", reference: 0.0}
        for model in maes:
            record = by_id[model].get(structure)
            row[model] = None if record is None else frequency_mae_thz(record, reference_record)
            if row[model] is not None:
                maes[model].append(row[model])
        rows.append(row)
    rows.append(
        {
            "id": SUMMARY_ID,
            "property": "frequency_mae_thz",
            reference: 0.0,
            **{model: (float(np.mean(values)) if values else None) for model, values in maes.items()},
        }
    )
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Two PNGs per structure: band structure of every model on the same path (left) and DOS (right); free energy,
    entropy and heat capacity vs temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_structure: dict[str, dict[str, dict]] = {}
    for model, records in results.items():
        for record in records:
            if record.get("band_frequencies_thz") is not None:
                by_structure.setdefault(str(record["id"]), {})[model] = record
    paths = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for structure, models in by_structure.items():
        figure, (bands, density) = plt.subplots(
            1, 2, figsize=(9.0, 4.2), sharey=True, gridspec_kw={"width_ratios": [3, 1]}
        )
        first = next(iter(models.values()))
        ticks = np.asarray(first["band_label_distances"], dtype=float)
        for k, (model, record) in enumerate(models.items()):
            colour = colours[k % len(colours)]
            # each model relaxes to its own lattice constant: map its path onto the first model's tick positions
            own_ticks = np.asarray(record["band_label_distances"], dtype=float)
            distances = np.asarray(record["band_distances"], dtype=float)
            if len(own_ticks) == len(ticks):
                distances = np.interp(distances, own_ticks, ticks)
            frequencies = np.asarray(record["band_frequencies_thz"], dtype=float)
            # a path jump (",", e.g. K|U) repeats the distance: break the lines there instead of joining across
            jumps = np.flatnonzero(np.diff(distances) == 0) + 1
            distances = np.insert(distances, jumps, np.nan)
            frequencies = np.insert(frequencies, jumps, np.nan, axis=0)
            for branch, line in enumerate(frequencies.T):
                bands.plot(distances, line, color=colour, lw=1.0, label=model if branch == 0 else None)
            density.plot(record["dos_states_per_thz"], record["dos_frequencies_thz"], color=colour, lw=1.0)
        for tick in ticks:
            bands.axvline(tick, color="0.7", lw=0.6)
        bands.axhline(0.0, color="0.5", lw=0.6, ls="--")
        tick_labels: dict[float, list[str]] = {}
        for tick, name in zip(ticks, first["band_labels"]):
            tick_labels.setdefault(float(tick), []).append("Γ" if name == "G" else name)
        bands.set_xticks(list(tick_labels), ["|".join(names) for names in tick_labels.values()])
        bands.set_xlim(ticks[0], ticks[-1])
        bands.set_ylabel("frequency (THz)")
        bands.set_title(f"phonons: {structure}")
        bands.legend(fontsize="small")
        density.set_xlabel("DOS (states/THz)")
        figure.tight_layout()
        path = out_dir / f"phonons_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
        paths.append(_plot_thermal(structure, models, out_dir, colours))
    return paths


def _plot_thermal(structure: str, models: dict[str, dict], out_dir: Path, colours: list) -> Path:
    """Free energy, entropy and heat capacity per atom vs temperature, one line per model."""
    import matplotlib.pyplot as plt

    panels = (
        ("helmholtz_free_energy_ev_per_atom", "F (eV/atom)"),
        ("entropy_kb_per_atom", "S (k_B/atom)"),
        ("heat_capacity_kb_per_atom", "C_V (k_B/atom)"),
    )
    figure, axes = plt.subplots(1, 3, figsize=(12.0, 3.6))
    for k, (model, record) in enumerate(models.items()):
        if record.get("thermal_temperatures_k") is None:
            continue
        temperatures = np.asarray(record["thermal_temperatures_k"], dtype=float)
        unstable = record.get("thermal_properties_note") is not None
        for axis, (key, _) in zip(axes, panels):
            axis.plot(
                temperatures, np.asarray(record[key], dtype=float), color=colours[k % len(colours)], lw=1.2,
                ls="--" if unstable else "-", label=f"{model}{' (imaginary modes)' if unstable else ''}",
            )
    for axis, (_, label) in zip(axes, panels):
        axis.set_xlabel("T (K)")
        axis.set_ylabel(label)
    axes[2].axhline(3.0, color="0.6", lw=0.6, ls=":")  # Dulong–Petit
    axes[0].legend(fontsize="small")
    figure.suptitle(f"harmonic thermodynamics: {structure}")
    figure.tight_layout()
    path = out_dir / f"phonons_thermal_{safe_filename(structure)}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
