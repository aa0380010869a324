"""Error benchmark: energy-per-atom, force and stress errors of a model against a labelled Dataset.

The first task of every campaign (zero-shot vs fine-tuned on the held-out test set). ``run`` predicts every structure with
one model — batched through the Potential when given one, an ASE calculator loop otherwise — and returns one record per
structure; ``metrics`` reduces them to MAE / RMSE overall and per element; ``compare`` puts models side by side; ``plot``
draws parity plots.

Units: records and internal arrays are eV, eV/Å, eV/Å³; metrics are reported in meV/atom, meV/Å and GPa (names say so).
With ``align_e0`` the metrics are also computed after refitting one energy offset per element by least squares on the
evaluated set (see :mod:`atomtune.models.element_energies`): DFT codes and functionals differ in absolute energy by up to
several eV/atom, so the aligned numbers measure energy *differences*, the part a potential can be expected to get right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress
from ase.units import GPa

from atomtune.data.dataset import Labels, labels_of
from atomtune.exceptions import AtomtuneError

ALIGN_E0_NOTE = (
    "aligned: one energy offset per element refit by least squares on this set (DFT codes / functionals differ in "
    "absolute energy); measures energy differences, not absolute energies"
)


#: Why a structure has no stress comparison (``record["stress_skipped"]``; counted in ``metrics()["stress_note"]``).
NO_STRESS_LABEL = "no stress label"
NOT_PERIODIC = "not periodic in all three directions (stress is undefined without a cell)"


@dataclass
class Settings:
    """``batch_size``: structures per forward pass (None: the backbone's measured default; else at least 1).
    ``align_e0``: also report errors after a per-element energy offset refit (see module docstring)."""

    batch_size: int | None = None
    align_e0: bool = False

    def __post_init__(self):
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise AtomtuneError(
                f"batch_size (--batch-size) {size!r}: give a whole number of structures per forward pass, at least 1, "
                f"or leave it unset for the backbone's measured default."
            )


def stress_skipped(atoms: Atoms, reference: Labels) -> str | None:
    """Why ``atoms`` gets no stress comparison (:data:`NO_STRESS_LABEL`, :data:`NOT_PERIODIC`), or None."""
    if not atoms.pbc.all():  # first: a label would not help
        return NOT_PERIODIC
    if reference.stress is None:
        return NO_STRESS_LABEL
    return None


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """Predict every structure; one record per structure with reference and predicted labels (eV, eV/Å, eV/Å³ Voigt).

    ``calculator`` is a :class:`~atomtune.models.base.Potential` (batched) or any ASE calculator. Stress is predicted
    and compared only where it is defined and labelled (fully periodic, with a stress label); the other records say why
    in ``stress_skipped``, so a molecule among bulk cells costs the bulk cells nothing. Raises :class:`AtomtuneError`
    when no structure has any reference label.
    """
    from atomtune.models.base import Potential

    settings = settings or Settings()
    structures = list(structures)
    references = [labels_of(atoms) for atoms in structures]
    unlabelled = [lab.energy is None and lab.forces is None and lab.stress is None for lab in references]
    if not structures or all(unlabelled):
        raise AtomtuneError(
            f"the errors task compares predictions with reference labels, and there are no reference labels: none of "
            f"the {len(structures)} structure(s) has an energy, forces or stress label. Label them first (`atomtune "
            f"label --calculator gpaw --data FILE --out labelled.extxyz`), or name the keys they are stored under "
            f"(`atomtune errors --energy-key … --forces-key … --stress-key …`)."
        )
    skipped = [stress_skipped(atoms, lab) for atoms, lab in zip(structures, references)]
    from atomtune.envs.worker import WorkerModel

    # A model of a family environment predicts the whole set as one worker unit (batched there), not one structure
    # at a time over the socket.
    if isinstance(calculator, (Potential, WorkerModel)):
        predictions: list[dict | None] = [None] * len(structures)
        for with_stress in (True, False):  # one batched pass per group: stress where defined, none elsewhere
            indices = [i for i, reason in enumerate(skipped) if (reason is None) == with_stress]
            if not indices:
                continue
            group = calculator.predict(
                [structures[i] for i in indices], batch_size=settings.batch_size, stress=with_stress, progress=progress
            )
            for i, record in zip(indices, group):
                for key in ("stress", "stress_std"):  # stress_std: a committee's spread (atomtune.uncertainty)
                    if with_stress and key in record:
                        record[key] = full_3x3_to_voigt_6_stress(record[key])
                    elif not with_stress:
                        record.pop(key, None)
                predictions[i] = record
    else:
        predictions = []
        iterator = zip(structures, skipped)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(structures), desc="errors", unit="structure")
        for atoms, reason in iterator:
            work = atoms.copy()
            work.calc = calculator
            record = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
            if reason is None:
                record["stress"] = work.get_stress(voigt=True)
            predictions.append(record)
    records = []
    for i, (atoms, predicted, reference, reason) in enumerate(zip(structures, predictions, references, skipped)):
        record = {
            "id": str(atoms.info.get("id", i)),
            "formula": atoms.get_chemical_formula(),
            "symbols": atoms.get_chemical_symbols(),
            "n_atoms": len(atoms),
            "energy_ref": reference.energy,
            "energy_pred": float(predicted["energy"]),
            "forces_ref": None if reference.forces is None else reference.forces.tolist(),
            "forces_pred": np.asarray(predicted["forces"]).tolist(),
        }
        if reason is None:
            record["stress_ref"] = reference.stress.tolist()
            record["stress_pred"] = np.asarray(predicted["stress"]).tolist()
        else:
            record["stress_skipped"] = reason
        for key in ("energy_std", "forces_std", "stress_std"):  # a committee's calibrated spreads
            if key in predicted:
                record[key] = np.asarray(predicted[key]).tolist()
        records.append(record)
    return records


def metrics(records: Sequence[dict], align_e0: bool = False) -> dict:
    """MAE / RMSE overall and per element. Energy in meV/atom, forces in meV/Å (per Cartesian component), stress in GPa
    (per Voigt component). Per element: force errors on atoms of that element; energy errors of structures containing it."""
    energy_ref = np.array([r["energy_ref"] if r["energy_ref"] is not None else np.nan for r in records], dtype=float)
    energy_pred = np.array([r["energy_pred"] for r in records], dtype=float)
    n_atoms = np.array([r["n_atoms"] for r in records], dtype=float)
    result = {
        "n_structures": len(records),
        "n_atoms": int(n_atoms.sum()),
        "n_structures_energy": int(np.isfinite(energy_ref).sum()),
        "n_structures_forces": sum(r["forces_ref"] is not None for r in records),
        "n_structures_stress": sum("stress_ref" in r for r in records),
    }
    note = stress_note(records)
    if note:
        result["stress_note"] = note
    result.update(_energy_metrics(energy_pred, energy_ref, n_atoms, ""))
    if align_e0:
        from atomtune.models.element_energies import apply_element_energies, fit_element_energies

        structures = [Atoms(r["symbols"]) for r in records]
        valid = np.isfinite(energy_ref)
        offsets = fit_element_energies(
            [s for s, ok in zip(structures, valid) if ok], energy_ref[valid], energy_pred[valid]
        )
        aligned = apply_element_energies(structures, energy_pred, offsets)
        result.update(_energy_metrics(aligned, energy_ref, n_atoms, "aligned_"))
        result["aligned_e0_offsets_ev"] = offsets
        result["aligned_note"] = ALIGN_E0_NOTE

    force_errors, force_symbols = [], []
    for r in records:
        if r["forces_ref"] is None:
            continue
        force_errors.append(np.asarray(r["forces_pred"]) - np.asarray(r["forces_ref"]))
        force_symbols.extend(r["symbols"])
    force_errors_mev = np.concatenate(force_errors) * 1000.0 if force_errors else np.zeros((0, 3))
    force_symbols = np.array(force_symbols)
    if force_errors:
        result["force_mae_mev_per_a"] = float(np.abs(force_errors_mev).mean())
        result["force_rmse_mev_per_a"] = float(np.sqrt((force_errors_mev**2).mean()))
    stress_errors = [
        np.asarray(r["stress_pred"]) - np.asarray(r["stress_ref"]) for r in records if "stress_ref" in r
    ]
    if stress_errors:
        errors = np.array(stress_errors) / GPa
        result["stress_mae_gpa"] = float(np.abs(errors).mean())
        result["stress_rmse_gpa"] = float(np.sqrt((errors**2).mean()))

    per_element = {}
    for symbol in sorted({s for r in records for s in r["symbols"]}):
        entry = {}
        containing = np.array([symbol in r["symbols"] for r in records])
        entry.update(_energy_metrics(energy_pred[containing], energy_ref[containing], n_atoms[containing], ""))
        mask = force_symbols == symbol
        if mask.any():
            element_errors = force_errors_mev[mask]
            entry["force_mae_mev_per_a"] = float(np.abs(element_errors).mean())
            entry["force_rmse_mev_per_a"] = float(np.sqrt((element_errors**2).mean()))
            entry["n_atoms"] = int(mask.sum())
        per_element[symbol] = entry
    result["per_element"] = per_element
    if any("forces_std" in r or "energy_std" in r for r in records):  # a committee: how good is its σ here?
        from atomtune.uncertainty.calibration import uncertainty_metrics

        result.update(uncertainty_metrics(records))
    return result


def stress_note(records: Sequence[dict]) -> str | None:
    """One sentence saying which structures the stress metrics leave out and why (None when none is left out)."""
    left_out: dict[str, list[str]] = {}
    for record in records:
        if record.get("stress_skipped"):
            left_out.setdefault(record["stress_skipped"], []).append(str(record["id"]))
    if not left_out:
        return None
    compared = sum("stress_ref" in r for r in records)

    def ids(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    reasons = "; ".join(f"{len(names)} {reason}: {ids(names)}" for reason, names in left_out.items())
    if compared:
        return f"σ rows over {compared} of {len(records)} structures; left out: {reasons}."
    return f"no σ rows: no structure has both a stress label and a periodic cell ({reasons})."


def _energy_metrics(predicted: np.ndarray, reference: np.ndarray, n_atoms: np.ndarray, prefix: str) -> dict:
    valid = np.isfinite(reference)
    if not valid.any():
        return {}
    errors = (predicted[valid] - reference[valid]) / n_atoms[valid] * 1000.0
    return {
        f"{prefix}energy_mae_mev_per_atom": float(np.abs(errors).mean()),
        f"{prefix}energy_rmse_mev_per_atom": float(np.sqrt((errors**2).mean())),
    }


#: Rows of the side-by-side table: (metric key, label).
TABLE_ROWS = (
    ("energy_mae_mev_per_atom", "E MAE (meV/atom)"),
    ("energy_rmse_mev_per_atom", "E RMSE (meV/atom)"),
    ("aligned_energy_mae_mev_per_atom", "E MAE, E0-aligned (meV/atom)"),
    ("aligned_energy_rmse_mev_per_atom", "E RMSE, E0-aligned (meV/atom)"),
    ("force_mae_mev_per_a", "F MAE (meV/Å)"),
    ("force_rmse_mev_per_a", "F RMSE (meV/Å)"),
    ("stress_mae_gpa", "σ MAE (GPa)"),
    ("stress_rmse_gpa", "σ RMSE (GPa)"),
    ("uncertainty_energy_spearman", "committee σ_E vs |ε_E| Spearman ρ"),
    ("uncertainty_forces_spearman", "committee σ_F vs |ε_F| Spearman ρ"),
    ("uncertainty_forces_spearman_ideal", "the ρ a calibrated σ_F would reach here"),
    ("uncertainty_forces_miscalibration_area", "committee σ_F miscalibration area"),
    ("uncertainty_forces_alpha_refit", "committee σ_F α refit here (1: calibrated)"),
)


def compare(results: dict[str, list[dict]], reference: str | None = None, align_e0: bool = False) -> list[dict]:
    """One row per metric (overall, then force MAE per element), one column per model (label → records)."""
    return metric_rows({label: metrics(records, align_e0=align_e0) for label, records in results.items()})


def metric_rows(summary: dict[str, dict]) -> list[dict]:
    """The rows of :func:`compare` from metrics already computed (label → :func:`metrics` result); a row counting the
    structures with a stress comparison when some have none (``stress_note`` in the metrics says why)."""
    rows = []
    for key, label in TABLE_ROWS:
        if any(key in m for m in summary.values()):
            rows.append({"metric": label, **{model: m.get(key) for model, m in summary.items()}})
    if any(m.get("stress_note") for m in summary.values()):  # some structures have no σ: say how many do
        rows.append({"metric": "σ: structures compared", **{m: s.get("n_structures_stress") for m, s in summary.items()}})
    elements = sorted({e for m in summary.values() for e in m["per_element"]})
    for element in elements:
        rows.append(
            {
                "metric": f"F MAE {element} (meV/Å)",
                **{model: m["per_element"].get(element, {}).get("force_mae_mev_per_a") for model, m in summary.items()},
            }
        )
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Parity plots (energy per atom, force components, stress components), one PNG per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, records in results.items():
        panels = [("energy per atom (eV/atom)", *_parity_energy(records))]
        forces_ref = [np.ravel(r["forces_ref"]) for r in records if r["forces_ref"] is not None]
        if forces_ref:
            forces_pred = [np.ravel(r["forces_pred"]) for r in records if r["forces_ref"] is not None]
            panels.append(("force components (eV/Å)", np.concatenate(forces_ref), np.concatenate(forces_pred)))
        stress_ref = [np.asarray(r["stress_ref"]) / GPa for r in records if "stress_ref" in r]
        if stress_ref:
            stress_pred = [np.asarray(r["stress_pred"]) / GPa for r in records if "stress_ref" in r]
            panels.append(("stress components (GPa)", np.concatenate(stress_ref), np.concatenate(stress_pred)))
        figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
        for axis, (title, reference, predicted) in zip(axes[0], panels):
            axis.scatter(reference, predicted, s=6, alpha=0.6)
            low = float(np.nanmin([reference.min(), predicted.min()]))
            high = float(np.nanmax([reference.max(), predicted.max()]))
            axis.plot([low, high], [low, high], "k--", lw=0.8)
            mae = float(np.nanmean(np.abs(predicted - reference)))
            axis.set_title(f"{title}\nMAE {mae:.3g}")
            axis.set_xlabel("reference")
            axis.set_ylabel(label)
        figure.tight_layout()
        path = out_dir / f"parity_{_safe(label)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
        if any("forces_std" in r for r in records):  # a committee: calibration curves of its σ on this set
            from atomtune.uncertainty.calibration import plot_record_calibration

            calibration = plot_record_calibration(records, out_dir / f"calibration_{_safe(label)}.png", label)
            paths += [calibration] if calibration else []
    return paths


def _parity_energy(records):
    reference = np.array([r["energy_ref"] / r["n_atoms"] for r in records if r["energy_ref"] is not None])
    predicted = np.array([r["energy_pred"] / r["n_atoms"] for r in records if r["energy_ref"] is not None])
    return reference, predicted


def _safe(label: str) -> str:
    from atomtune.files import safe_file_name

    return safe_file_name(label)
