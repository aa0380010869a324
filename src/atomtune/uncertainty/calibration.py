"""Calibration of a committee's spread: is σ the size of the error, and where is it wrong?

A committee's raw spread is usually too small (members share a foundation model and most of their data). Per quantity
(energy, forces, stress) one factor α rescales it; α is fitted on a validation set as the Gaussian negative-log-likelihood
optimum α² = mean(ε² / σ²) (Musil et al., J. Chem. Theory Comput. 15, 906 (2019); Imbalzano et al., J. Chem. Phys.
154, 074102 (2021)). Reported per quantity: α, the NLL before and after, Spearman ρ between σ and |ε| (does the ranking
find the bad structures?), RMSE in bins of σ against the bin's σ, and the fraction of errors inside ±kσ against the
Gaussian expectation, whose mean absolute gap over confidence levels is the miscalibration area (0: perfect; 0.5 worst).
ρ has a ceiling below 1 even for a perfect σ: |ε| drawn from N(0, σ²) scatters around σ, and the less σ varies over the
set, the lower the ρ a calibrated σ reaches (Pernot, J. Chem. Phys. 156, 114109 (2022)); ``spearman_ideal`` is that
ceiling for the set's own σ (the median ρ of errors simulated as N(0, σ²)), so a ρ of 0.3 can be read as "σ ranks the
errors as well as a calibrated σ could" or "no better than chance".
Sits next to :mod:`atomtune.uncertainty.committee`; ``atomtune errors`` and the active-learning loop call it.

Units: energy eV per structure, forces eV/Å per Cartesian component (σ per atom, the same for its three components),
stress eV/Å³ per Voigt component.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from atomtune.data.dataset import labels_of
from atomtune.exceptions import AtomtuneError
from atomtune.uncertainty.committee import QUANTITIES

UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å³"}
#: σ below this (in the quantity's unit) counts as zero spread: it would make ε²/σ² meaningless.
SIGMA_FLOOR = 1e-12
#: Simulated error sets behind ``spearman_ideal`` (its median moves by < 0.01 between seeds at 200 draws).
IDEAL_SPEARMAN_DRAWS = 200


@dataclass
class ErrorsAndSpreads:
    """Paired errors ε (prediction − reference) and raw spreads σ of one quantity, flattened (units: :data:`UNITS`)."""

    quantity: str
    errors: np.ndarray
    sigmas: np.ndarray

    def __post_init__(self):
        self.errors = np.asarray(self.errors, dtype=float).ravel()
        self.sigmas = np.asarray(self.sigmas, dtype=float).ravel()
        if self.errors.shape != self.sigmas.shape:
            raise AtomtuneError(f"{self.quantity}: {self.errors.size} errors but {self.sigmas.size} spreads.")


@dataclass
class QuantityCalibration:
    """Calibration quality of one quantity (σ calibrated by ``alpha`` unless a field says raw).

    ``nll`` / ``nll_raw``: mean Gaussian negative log-likelihood per value (nats; lower is better, unit-dependent);
    ``spearman``: rank correlation of σ and |ε|; ``spearman_ideal``: the median ρ of errors drawn from N(0, σ²) with
    the same σ (what a calibrated σ reaches on this set); ``miscalibration_area``: mean |observed − expected| fraction inside
    ±kσ over confidence levels 0–1; ``rmse`` and ``mean_sigma`` in ``units``; ``curve``: binned σ and RMSE and the
    coverage curve, for the plot."""

    quantity: str
    units: str
    alpha: float
    values: int
    rmse: float
    mean_sigma: float
    nll: float
    nll_raw: float
    spearman: float | None
    miscalibration_area: float
    miscalibration_area_raw: float
    spearman_ideal: float | None = None  # records written before it was measured lack it
    curve: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)


def fit_alpha(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """α = sqrt(mean(ε² / σ²)): the factor that minimises the Gaussian NLL of ε under N(0, (ασ)²)."""
    errors, sigmas = _usable(errors, sigmas)
    return float(math.sqrt(np.mean(errors**2 / sigmas**2)))


def gaussian_nll(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean of ½ log(2πσ²) + ε² / (2σ²) over values (nats)."""
    errors, sigmas = _usable(errors, sigmas)
    return float(np.mean(0.5 * np.log(2 * np.pi * sigmas**2) + errors**2 / (2 * sigmas**2)))


def coverage_curve(errors: np.ndarray, sigmas: np.ndarray, levels: int = 99) -> tuple[np.ndarray, np.ndarray]:
    """(expected, observed): for confidence p on a grid of ``levels`` in (0, 1), the fraction of |ε| ≤ k_p σ where
    k_p = Φ⁻¹((1 + p) / 2) (a Gaussian's central interval)."""
    from scipy.stats import norm

    errors, sigmas = _usable(errors, sigmas)
    expected = np.linspace(0.0, 1.0, levels + 2)[1:-1]
    k = norm.ppf((1 + expected) / 2)
    ratio = np.abs(errors) / sigmas
    observed = np.array([(ratio <= kp).mean() for kp in k])
    return expected, observed


def miscalibration_area(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean |observed − expected| coverage over confidence levels (area between the curve and the diagonal)."""
    expected, observed = coverage_curve(errors, sigmas)
    return float(np.mean(np.abs(observed - expected)))


def ideal_spearman(sigmas: np.ndarray, draws: int = IDEAL_SPEARMAN_DRAWS, seed: int = 0) -> float | None:
    """Median Spearman ρ between σ and |ε| over ``draws`` sets of errors ε ~ N(0, σ²): the ρ a perfectly calibrated σ
    reaches with this spread of σ (None when σ does not vary: ρ is undefined)."""
    from scipy.stats import spearmanr

    sigmas = np.asarray(sigmas, dtype=float).ravel()
    if len(sigmas) < 3 or np.ptp(sigmas) == 0:
        return None
    rng = np.random.default_rng(seed)
    simulated = np.abs(rng.standard_normal((draws, len(sigmas)))) * sigmas
    return float(np.median([spearmanr(sigmas, row).statistic for row in simulated]))


def binned_rmse(errors: np.ndarray, sigmas: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean σ, RMSE of ε, count) in ``bins`` bins of equal count ordered by σ: calibrated points lie on y = x."""
    errors, sigmas = _usable(errors, sigmas)
    order = np.argsort(sigmas, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    mean_sigma = np.array([np.sqrt(np.mean(sigmas[g] ** 2)) for g in groups])
    rmse = np.array([np.sqrt(np.mean(errors[g] ** 2)) for g in groups])
    return mean_sigma, rmse, np.array([len(g) for g in groups])


def assess(data: ErrorsAndSpreads, alpha: float | None = None) -> QuantityCalibration:
    """Calibration record of one quantity; ``alpha`` None fits it on ``data`` (for a held-out check pass the saved α)."""
    errors, sigmas = _usable(data.errors, data.sigmas, data.quantity)
    alpha = fit_alpha(errors, sigmas) if alpha is None else float(alpha)
    calibrated = sigmas * alpha
    spearman = None
    if len(errors) > 2 and np.ptp(sigmas) > 0 and np.ptp(np.abs(errors)) > 0:
        from scipy.stats import spearmanr

        spearman = float(spearmanr(sigmas, np.abs(errors)).statistic)
    expected, observed = coverage_curve(errors, calibrated)
    bin_sigma, bin_rmse, bin_count = binned_rmse(errors, calibrated)
    return QuantityCalibration(
        quantity=data.quantity,
        units=UNITS.get(data.quantity, ""),
        alpha=alpha,
        values=len(errors),
        rmse=float(np.sqrt(np.mean(errors**2))),
        mean_sigma=float(np.sqrt(np.mean(calibrated**2))),
        nll=gaussian_nll(errors, calibrated),
        nll_raw=gaussian_nll(errors, sigmas),
        spearman=spearman,
        spearman_ideal=ideal_spearman(sigmas) if spearman is not None else None,
        miscalibration_area=float(np.mean(np.abs(observed - expected))),
        miscalibration_area_raw=miscalibration_area(errors, sigmas),
        curve={
            "bin_sigma": bin_sigma.tolist(),
            "bin_rmse": bin_rmse.tolist(),
            "bin_count": bin_count.tolist(),
            "expected": expected.tolist(),
            "observed": observed.tolist(),
        },
    )


def errors_and_spreads(predictions: Sequence[dict], structures: Sequence[Atoms], alphas: dict | None = None,
                       ) -> dict[str, ErrorsAndSpreads]:
    """Pair each committee prediction (``predict`` records with ``*_std``) with the structure's labels, per quantity.

    ``alphas``: the α the predictions' spreads were scaled by (divided out, so the result holds raw σ)."""
    alphas = alphas or {}
    collected: dict[str, tuple[list, list]] = {q: ([], []) for q in QUANTITIES}
    for atoms, record in zip(structures, predictions):
        label = labels_of(atoms)
        if label.energy is not None and "energy_std" in record:
            collected["energy"][0].append(record["energy"] - label.energy)
            collected["energy"][1].append(record["energy_std"] / alphas.get("energy", 1.0))
        if label.forces is not None and "forces_std" in record:
            collected["forces"][0].append(np.ravel(np.asarray(record["forces"]) - label.forces))
            # σ is per atom: the same for its x, y and z components.
            collected["forces"][1].append(np.repeat(np.asarray(record["forces_std"]) / alphas.get("forces", 1.0), 3))
        if label.stress is not None and "stress_std" in record:
            predicted = np.asarray(record["stress"])
            spread = np.asarray(record["stress_std"])
            if predicted.shape == (3, 3):
                predicted, spread = full_3x3_to_voigt_6_stress(predicted), full_3x3_to_voigt_6_stress(spread)
            collected["stress"][0].append(predicted - label.stress)
            collected["stress"][1].append(spread / alphas.get("stress", 1.0))
    result = {}
    for quantity, (errors, sigmas) in collected.items():
        if errors:
            result[quantity] = ErrorsAndSpreads(quantity, np.concatenate([np.ravel(e) for e in errors]),
                                                np.concatenate([np.ravel(s) for s in sigmas]))
    return result


def calibrate(committee, structures: Sequence[Atoms], apply: bool = True, batch_size: int | None = None,
              ) -> dict[str, QuantityCalibration]:
    """Fit α per quantity on labelled ``structures`` (a validation set), store it in ``committee`` when ``apply``, and
    return the calibration records (quantity → :class:`QuantityCalibration`)."""
    structures = list(structures)
    if not structures:
        raise AtomtuneError("calibration needs labelled validation structures; the set is empty.")
    want_stress = all(atoms.pbc.all() and labels_of(atoms).stress is not None for atoms in structures)
    predictions = committee.predict(structures, batch_size=batch_size, stress=want_stress)
    pairs = errors_and_spreads(predictions, structures, committee.calibration)
    records = _assess_each(pairs, {})
    if apply:
        committee.set_calibration({quantity: record.alpha for quantity, record in records.items()})
    return records


def evaluate(committee, structures: Sequence[Atoms], batch_size: int | None = None) -> dict[str, QuantityCalibration]:
    """Calibration quality on held-out ``structures`` with the committee's saved α (nothing is refitted)."""
    structures = list(structures)
    want_stress = all(atoms.pbc.all() and labels_of(atoms).stress is not None for atoms in structures)
    predictions = committee.predict(structures, batch_size=batch_size, stress=want_stress)
    pairs = errors_and_spreads(predictions, structures, committee.calibration)
    return _assess_each(pairs, {q: committee.alpha(q) for q in pairs})


def _assess_each(pairs: dict[str, ErrorsAndSpreads], alphas: dict[str, float]) -> dict[str, QuantityCalibration]:
    """:func:`assess` per quantity; a quantity with no spread at all is left out with a warning (its α stays 1)."""
    import warnings

    records = {}
    for quantity, data in pairs.items():
        try:
            records[quantity] = assess(data, alpha=alphas.get(quantity))
        except AtomtuneError as error:
            warnings.warn(str(error), stacklevel=3)
    return records


def plot_calibration(records: dict[str, QuantityCalibration], path: str | Path, title: str = "") -> Path:
    """Two rows of panels per quantity: binned RMSE vs binned σ (calibrated: on the diagonal), and the fraction of
    errors inside ±kσ vs the Gaussian expectation (shaded: the miscalibration area). PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quantities = [q for q in QUANTITIES if q in records]
    figure, axes = plt.subplots(2, max(1, len(quantities)), figsize=(4.0 * max(1, len(quantities)), 7.2), squeeze=False)
    for column, quantity in enumerate(quantities):
        record = records[quantity]
        curve = record.curve
        top, bottom = axes[0][column], axes[1][column]
        top.loglog(curve["bin_sigma"], curve["bin_rmse"], "o-", label=f"α = {record.alpha:.2f}")
        low = min(curve["bin_sigma"] + curve["bin_rmse"])
        high = max(curve["bin_sigma"] + curve["bin_rmse"])
        top.plot([low, high], [low, high], "k--", lw=0.8)
        rho = "–" if record.spearman is None else f"{record.spearman:.2f}"
        if record.spearman_ideal is not None:
            rho += f", calibrated σ: {record.spearman_ideal:.2f}"
        top.set_title(f"{quantity}: RMSE vs σ (ρ = {rho})")
        top.set_xlabel(f"binned calibrated σ ({record.units})")
        top.set_ylabel(f"binned RMSE ({record.units})")
        top.legend(fontsize=8)
        expected, observed = np.asarray(curve["expected"]), np.asarray(curve["observed"])
        bottom.plot(expected, observed, "-", label="observed")
        bottom.plot([0, 1], [0, 1], "k--", lw=0.8, label="Gaussian")
        bottom.fill_between(expected, expected, observed, alpha=0.25)
        bottom.set_title(f"inside ±kσ (miscalibration area {record.miscalibration_area:.3f})")
        bottom.set_xlabel("expected fraction")
        bottom.set_ylabel("observed fraction")
        bottom.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _usable(errors, sigmas, quantity: str = "") -> tuple[np.ndarray, np.ndarray]:
    errors = np.asarray(errors, dtype=float).ravel()
    sigmas = np.asarray(sigmas, dtype=float).ravel()
    keep = np.isfinite(errors) & np.isfinite(sigmas) & (sigmas > SIGMA_FLOOR)
    if not keep.any():
        what = f" of {quantity}" if quantity else ""
        raise AtomtuneError(
            f"no usable spread{what}: every σ is zero or missing, so the committee cannot be calibrated (identical "
            f"members? train them with different seeds / bootstrap resamples)."
        )
    return errors[keep], sigmas[keep]


# -- from the records of atomtune.tasks.errors (``atomtune errors --model committee/``) --------------------------------


def pairs_from_error_records(records: Sequence[dict]) -> dict[str, ErrorsAndSpreads]:
    """Errors and (calibrated) spreads per quantity from :func:`atomtune.tasks.errors.run` records of a committee."""
    collected: dict[str, tuple[list, list]] = {q: ([], []) for q in QUANTITIES}
    for r in records:
        if "energy_std" in r and r.get("energy_ref") is not None:
            collected["energy"][0].append([r["energy_pred"] - r["energy_ref"]])
            collected["energy"][1].append([r["energy_std"]])
        if "forces_std" in r and r.get("forces_ref") is not None:
            collected["forces"][0].append(np.ravel(np.asarray(r["forces_pred"]) - np.asarray(r["forces_ref"])))
            collected["forces"][1].append(np.repeat(np.asarray(r["forces_std"], dtype=float), 3))
        if "stress_std" in r and "stress_ref" in r:
            collected["stress"][0].append(np.asarray(r["stress_pred"]) - np.asarray(r["stress_ref"]))
            collected["stress"][1].append(np.asarray(r["stress_std"], dtype=float))
    return {
        q: ErrorsAndSpreads(q, np.concatenate([np.ravel(e) for e in errors]), np.concatenate([np.ravel(s) for s in sigmas]))
        for q, (errors, sigmas) in collected.items() if errors
    }


def uncertainty_metrics(records: Sequence[dict]) -> dict:
    """Flat calibration metrics of a committee's error records, for the errors table: per quantity Spearman ρ, NLL and
    miscalibration area of σ as predicted (the saved α applied), and ``alpha_refit`` (the α this set would fit: 1 means
    the saved calibration holds here). A quantity without any spread is left out with a warning."""
    import warnings

    result = {}
    for quantity, data in pairs_from_error_records(records).items():
        try:
            as_predicted = assess(data, alpha=1.0)
        except AtomtuneError as error:
            warnings.warn(str(error), stacklevel=2)
            continue
        prefix = f"uncertainty_{quantity}_"
        result[prefix + "spearman"] = as_predicted.spearman
        result[prefix + "spearman_ideal"] = as_predicted.spearman_ideal
        result[prefix + "nll"] = as_predicted.nll
        result[prefix + "miscalibration_area"] = as_predicted.miscalibration_area
        result[prefix + "alpha_refit"] = fit_alpha(data.errors, data.sigmas)
    return result


def plot_record_calibration(records: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """:func:`plot_calibration` of a committee's error records (σ as predicted); None when there is no spread."""
    assessed = {}
    for quantity, data in pairs_from_error_records(records).items():
        try:
            assessed[quantity] = assess(data, alpha=1.0)
        except AtomtuneError:
            continue
    return plot_calibration(assessed, path, title=title) if assessed else None
