"""Calibration: α recovered on synthetic Gaussian errors, the NLL optimum, Spearman, coverage and miscalibration area,
errors records of a committee, and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from atomtune.exceptions import AtomtuneError
from atomtune.uncertainty.calibration import (
    ErrorsAndSpreads,
    assess,
    fit_alpha,
    gaussian_nll,
    miscalibration_area,
    plot_calibration,
    uncertainty_metrics,
)


def _synthetic(alpha: float, count: int = 20000, seed: int = 0):
    rng = np.random.default_rng(seed)
    sigmas = rng.uniform(0.01, 0.2, size=count)  # raw committee spreads, eV/Å
    errors = rng.normal(0.0, alpha * sigmas)  # true errors: Gaussian with α × σ
    return errors, sigmas


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.7])
def test_fit_alpha_recovers_a_known_factor(alpha):
    errors, sigmas = _synthetic(alpha)
    assert fit_alpha(errors, sigmas) == pytest.approx(alpha, rel=0.02)


def test_alpha_is_the_nll_optimum():
    errors, sigmas = _synthetic(2.5, count=5000, seed=1)
    best = fit_alpha(errors, sigmas)
    for factor in (0.8, 0.95, 1.05, 1.25):
        assert gaussian_nll(errors, sigmas * best) < gaussian_nll(errors, sigmas * best * factor)


def test_calibration_record_before_and_after():
    errors, sigmas = _synthetic(3.0, seed=2)
    record = assess(ErrorsAndSpreads("forces", errors, sigmas))
    assert record.alpha == pytest.approx(3.0, rel=0.02)
    assert record.nll < record.nll_raw
    assert record.miscalibration_area < 0.02  # calibrated Gaussian errors: on the diagonal
    assert record.miscalibration_area_raw > 0.2  # σ three times too small: far off
    assert record.spearman > 0.3  # larger σ → larger |ε| in rank
    assert record.curve["bin_rmse"] == pytest.approx(record.curve["bin_sigma"], rel=0.1)


def test_uninformative_sigma_has_no_rank_correlation():
    rng = np.random.default_rng(3)
    sigmas = rng.uniform(0.01, 0.2, size=5000)
    errors = rng.normal(0.0, 0.1, size=5000)  # errors independent of σ
    record = assess(ErrorsAndSpreads("forces", errors, sigmas))
    assert abs(record.spearman) < 0.05
    assert miscalibration_area(errors, sigmas * record.alpha) > 0.03  # a constant-width truth is not ασ


def test_zero_spread_cannot_be_calibrated():
    with pytest.raises(AtomtuneError, match="no usable spread"):
        fit_alpha(np.ones(4), np.zeros(4))


def test_metrics_from_errors_records_and_plot(tmp_path):
    rng = np.random.default_rng(4)
    records = []
    for k in range(40):
        sigma = rng.uniform(0.02, 0.2, size=4)
        reference = rng.normal(size=(4, 3))
        predicted = reference + rng.normal(0.0, sigma[:, None], size=(4, 3))
        records.append({
            "energy_ref": 0.0, "energy_pred": float(rng.normal(0, 0.05)), "energy_std": 0.05,
            "forces_ref": reference.tolist(), "forces_pred": predicted.tolist(), "forces_std": sigma.tolist(),
        })
    metrics = uncertainty_metrics(records)
    assert metrics["uncertainty_forces_alpha_refit"] == pytest.approx(1.0, rel=0.15)
    assert metrics["uncertainty_forces_spearman"] > 0.3
    assert metrics["uncertainty_energy_spearman"] is None  # a constant σ_E ranks nothing
    errors, sigmas = _synthetic(1.0, count=500)
    path = plot_calibration({"forces": assess(ErrorsAndSpreads("forces", errors, sigmas))}, tmp_path / "c.png")
    assert path.stat().st_size > 1000


def test_the_rank_correlation_a_calibrated_sigma_reaches():
    """Spearman ρ between σ and |ε| has a ceiling below 1 for a perfect σ, set by how much σ varies: calibrated errors
    reach it, errors independent of σ stay near 0 below it, and a σ that hardly varies has a low ceiling."""
    from atomtune.uncertainty.calibration import ideal_spearman

    errors, sigmas = _synthetic(2.0, count=4000, seed=4)
    record = assess(ErrorsAndSpreads("forces", errors, sigmas))
    assert 0.2 < record.spearman_ideal < 0.6
    assert record.spearman == pytest.approx(record.spearman_ideal, abs=0.05)
    rng = np.random.default_rng(5)
    unrelated = assess(ErrorsAndSpreads("forces", rng.normal(0.0, 0.1, size=4000), sigmas))
    assert unrelated.spearman_ideal > unrelated.spearman + 0.2
    narrow = rng.uniform(0.09, 0.11, size=4000)  # σ within ±10 %: even a perfect σ barely ranks the errors
    assert ideal_spearman(narrow) < 0.15 < ideal_spearman(sigmas)
    assert ideal_spearman(np.full(10, 0.1)) is None
    # scaling σ by α changes nothing in ranks
    assert ideal_spearman(3.0 * sigmas) == pytest.approx(ideal_spearman(sigmas), abs=1e-12)
