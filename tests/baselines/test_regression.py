"""Descriptor regression: exact recovery of a linear target, no test-fold leakage, plain-data save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomtune.baselines import regression
from atomtune.baselines.regression import RegressionModel, RegressionSpec
from atomtune.exceptions import AtomtuneError
from emt_data import emt_structures


def _with_linear_target(structures, weights, intercept):
    for atoms in structures:
        symbols = atoms.get_chemical_symbols()
        fractions = np.array([symbols.count(e) / len(atoms) for e in ("Al", "Ni", "Cu")])
        atoms.info["linear"] = float(fractions @ weights + intercept)
    return structures


def test_linear_target_recovered_exactly():
    structures = _with_linear_target(emt_structures(30, seed=3), np.array([0.7, -1.3, 2.1]), -0.25)
    spec = RegressionSpec(features="composition", estimator="ridge", target="linear", cv_folds=4)
    train, test = regression.split_for_regression(structures, spec)
    result = regression.fit(train, spec, test)
    assert result.metrics.n_test == 6
    assert result.metrics.test_mae < 1e-6, result.metrics
    assert result.model.parameters["alpha"] <= 1e-6  # cross-validation picked the (near) unregularised fit


def test_test_fold_never_enters_the_search(monkeypatch):
    from sklearn.model_selection import GridSearchCV

    structures = emt_structures(24, seed=1)
    for k, atoms in enumerate(structures):
        atoms.info["split"] = "test" if k % 4 == 0 else "train"
    spec = RegressionSpec(features="soap", estimator="knn", cv_folds=3, soap={"r_cut": 3.5, "n_max": 2, "l_max": 2})
    seen = []
    original = GridSearchCV.fit

    def spy(self, features, targets, **kwargs):
        seen.append(np.array(features))
        return original(self, features, targets, **kwargs)

    monkeypatch.setattr(GridSearchCV, "fit", spy)
    train, test = regression.split_for_regression(structures, spec)
    assert {a.info["id"] for a in test} == {f"emt-{k}" for k in range(0, 24, 4)}  # the data's own split is used
    result = regression.fit(train, spec, test)
    (searched,) = seen
    test_features = regression.Featurizer(spec, result.model.elements)(test)
    assert searched.shape[0] == len(train) == 18
    for row in test_features:  # no test structure's features reached the hyperparameter search
        assert not np.any(np.all(np.isclose(searched, row), axis=1))
    assert set(result.test_ids).isdisjoint(result.train_ids)


@pytest.mark.parametrize("estimator", regression.ESTIMATORS)
def test_save_load_plain_data_round_trip(tmp_path, estimator):
    structures = emt_structures(20, seed=2)
    grid = {"random_forest": {"max_depth": [None]}, "svr": {"C": [1.0, 10.0]}}.get(estimator)
    spec = RegressionSpec(features="composition", estimator=estimator, cv_folds=3, grid=grid)
    train, test = regression.split_for_regression(structures, spec)
    result = regression.fit(train, spec, test)
    result.save(tmp_path)
    document = json.loads((tmp_path / regression.MODEL_FILE).read_text())  # plain JSON
    assert document["spec"]["estimator"] == estimator and "forces" in document
    with np.load(tmp_path / regression.DATA_FILE, allow_pickle=False) as data:  # no object arrays
        assert data["features"].shape[0] == len(train)
    loaded = RegressionModel.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(test), result.test_predictions, atol=1e-9)
    energies = loaded.predict_energies(test)
    np.testing.assert_allclose(energies / [len(a) for a in test], result.test_predictions, atol=1e-9)


def test_load_refuses_data_that_do_not_reproduce(tmp_path):
    structures = emt_structures(12, seed=4)
    spec = RegressionSpec(features="composition", estimator="ridge", cv_folds=3)
    regression.fit(structures, spec).save(tmp_path)
    with np.load(tmp_path / regression.DATA_FILE) as data:
        arrays = dict(data)
    arrays["predictions"] = arrays["predictions"] + 0.1
    np.savez(tmp_path / regression.DATA_FILE, **arrays)
    with pytest.raises(AtomtuneError, match="does not reproduce"):
        RegressionModel.load(tmp_path)
    with pytest.raises(AtomtuneError, match="not a regression baseline"):
        RegressionModel.load(tmp_path / "missing")


def test_errors_records_give_energy_metrics_and_no_forces():
    from atomtune.tasks import errors

    structures = emt_structures(15, seed=5)
    spec = RegressionSpec(features="composition", estimator="ridge", cv_folds=3)
    train, test = regression.split_for_regression(structures, spec)
    result = regression.fit(train, spec, test)
    records = regression.errors_records(result.model, test)
    assert all(r["forces_pred"] is None and "no forces" in r["note"] for r in records)
    summary = errors.metrics(records)
    assert summary["energy_mae_mev_per_atom"] == pytest.approx(result.metrics.test_mae_mev_per_atom)
    assert "force_mae_mev_per_a" not in summary


def test_bad_input():
    with pytest.raises(AtomtuneError, match="unknown"):
        RegressionSpec(features="mbtr")
    with pytest.raises(AtomtuneError, match="needs a model"):
        RegressionSpec(features="embeddings")
    with pytest.raises(AtomtuneError, match="estimator"):
        RegressionSpec(estimator="xgboost")
    with pytest.raises(AtomtuneError, match="not parameters"):
        RegressionSpec(estimator="ridge", grid={"n_neighbors": [3]})
    structures = emt_structures(12, seed=6, elements=("Cu", "Ni"))
    spec = RegressionSpec(features="composition", cv_folds=3)
    model = regression.fit(structures, spec).model
    with pytest.raises(AtomtuneError, match="Al, which the regression model never saw"):
        model.predict(emt_structures(3, seed=7, elements=("Al",)))
    with pytest.raises(AtomtuneError, match="no numeric 'band_gap'"):
        regression.fit(structures, RegressionSpec(target="band_gap", cv_folds=3))


def test_embedding_features_from_a_backbone(tiny_mace_model_file):
    structures = emt_structures(12, seed=8)
    spec = RegressionSpec(
        features=f"embeddings:{tiny_mace_model_file}", estimator="ridge", cv_folds=3, trust_model=True
    )
    result = regression.fit(structures[:9], spec, structures[9:])
    assert result.train_features.shape == (9, 16)  # the tiny MACE's 16 invariant channels, averaged over atoms
    gold = emt_structures(3, seed=9, elements=("Au",))  # the tiny MACE knows Ni, Cu, Al only
    with pytest.raises(AtomtuneError, match="cannot be made: .*Au"):
        regression.fit(structures[:9] + gold, spec)


def test_features_constant_up_to_round_off_do_not_blow_up():
    """A feature whose training values differ only by round-off must not be scaled by that round-off."""
    structures = emt_structures(16, seed=13)
    spec = RegressionSpec(features="composition", estimator="ridge", cv_folds=4, grid={"alpha": [1e-8]})
    model = regression.fit(structures[:12], spec).model
    features = regression.Featurizer(spec, model.elements)(structures)
    features = np.hstack([features, np.zeros((len(structures), 1))])
    features[:12, -1] = np.random.default_rng(0).normal(0, 1e-17, 12)  # noise-level "signal" on the training part
    features[12:, -1] = 0.3  # a real value on test structures
    pipeline = regression._pipeline("ridge", 0, {"alpha": 1e-8})
    pipeline.fit(features[:12], regression.targets(structures[:12], "energy_per_atom"))
    predicted = pipeline.predict(features[12:])
    np.testing.assert_allclose(predicted, model.predict(structures[12:]), atol=1e-6)


def test_learning_curve_nested_sizes_same_test_set():
    structures = _with_linear_target(emt_structures(30, seed=14), np.array([0.2, -0.5, 1.1]), 0.1)
    spec = RegressionSpec(features="composition", estimator="ridge", target="linear", cv_folds=3)
    points = regression.learning_curve(structures[:24], structures[24:], spec, sizes=[5, 12, 100])
    assert [p.n_train for p in points] == [5, 12, 24]  # 100 capped at the 24 available
    assert all(p.test_mae < 1e-5 for p in points)  # an exactly linear target: exact from 5 structures on
    with pytest.raises(AtomtuneError, match="below cv_folds"):
        regression.learning_curve(structures[:24], structures[24:], spec, sizes=[2])
