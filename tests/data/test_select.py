"""Selection: mean-pooled embeddings, Kaiser PCA, BIRCH clustering, DIRECT picks per cluster, random and farthest-point
baselines, coverage scores, the `atomtune data select` command; one test on real CHGNet 0.3.0 embeddings."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from atomtune.data.dataset import Dataset
from atomtune.data.select import (
    DirectSampler,
    FarthestPointSampler,
    FeatureSpace,
    RandomSampler,
    birch_clusters,
    compare_samplers,
    coverage,
    structure_features,
)
from atomtune.exceptions import AtomtuneError


def blobs(sizes=(40, 5, 5, 5, 5), spread=0.05, seed=0, dimension=6):
    """Well separated Gaussian blobs (one big, several small) and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(len(sizes), dimension))
    points = np.concatenate([c + rng.normal(scale=spread, size=(n, dimension)) for c, n in zip(centres, sizes)])
    return points, np.repeat(np.arange(len(sizes)), sizes)


def test_structure_features_are_mean_pooled_embeddings(toy_potential, emt_dataset):
    structures = list(emt_dataset)[:6]
    features = structure_features(toy_potential, structures)
    assert features.shape == (6, toy_potential.width)
    per_atom = toy_potential.embed(structures)
    np.testing.assert_allclose(features, [a.mean(axis=0) for a in per_atom])


def test_feature_space_keeps_components_with_eigenvalue_above_one():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(500, 2))
    # 6 features driven by 2 latent factors plus small noise: standardised, two eigenvalues ≈ 3, the rest ≈ 0
    mixing = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=float)
    features = latent @ mixing + 0.05 * rng.normal(size=(500, 6))
    space = FeatureSpace.fit(features)
    assert space.n_components == 2 and space.explained_variance_ratio > 0.95
    assert space.transform(features).shape == (500, 2)
    assert FeatureSpace.fit(np.ones((5, 3))).n_components == 1  # constant features: still one axis, no NaN


def test_birch_finds_the_requested_clusters_even_when_blobs_are_tight():
    points, blob = blobs(spread=0.001)
    labels = birch_clusters(points, 5, threshold=50.0)  # threshold far too big: it must shrink until 5 subclusters
    assert len(np.unique(labels)) == 5
    for k in range(5):  # each cluster is one blob
        assert len(np.unique(labels[blob == k])) == 1
    assert len(np.unique(birch_clusters(np.zeros((6, 2)), 3))) == 1  # identical points cannot make 3 clusters


def test_direct_picks_one_per_cluster_nearest_the_centre():
    points, blob = blobs()
    sampler = DirectSampler(n_clusters=5)
    chosen = sampler.select(points)
    assert sorted(blob[chosen]) == [0, 1, 2, 3, 4]
    space = sampler.space_.transform(points)
    for index in chosen:
        members = np.flatnonzero(blob == blob[index])
        centre = space[members].mean(axis=0)
        distances = np.linalg.norm(space[members] - centre, axis=1)
        assert index == members[np.argmin(distances)]
    three = DirectSampler(n_clusters=5, per_cluster=3, choose="random", seed=1).select(points)
    assert len(three) == 15 and all(np.sum(blob[three] == k) == 3 for k in range(5))
    with pytest.raises(AtomtuneError, match="choose"):
        DirectSampler(3, choose="edge")


def test_coverage_direct_beats_random_on_imbalanced_data():
    points, _ = blobs(sizes=(200, 3, 3, 3, 3, 3, 3, 3, 3, 3))
    selections, rows = compare_samplers(points, n=10)
    by_method = {row["method"]: row for row in rows}
    assert by_method["direct"]["cluster_coverage"] == 1.0
    assert by_method["random"]["cluster_coverage"] < 0.5  # random mostly samples the big blob
    assert by_method["farthest-point"]["cluster_coverage"] >= by_method["random"]["cluster_coverage"]
    assert {len(indices) for indices in selections.values()} == {10}
    assert coverage(points, [], 10)["cluster_coverage"] == 0.0
    assert coverage(points, np.arange(len(points)), 10)["feature_coverage"] == 1.0


def test_baselines_and_small_pools():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 10.0], [0.5, 0.5]])
    assert set(FarthestPointSampler(3, seed=0).select(points)) >= {2, 3}
    assert len(RandomSampler(3, seed=0).select(points)) == 3
    assert len(RandomSampler(99).select(points)) == 5
    assert len(DirectSampler(99).select(points)) == 5  # more clusters than structures: take them all
    with pytest.raises(AtomtuneError, match="NaN"):
        DirectSampler(2).select(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_select_command(tmp_path, monkeypatch, toy_potential, emt_dataset):
    from atomtune import models
    from atomtune.cli import app

    monkeypatch.setattr(models, "load_potential", lambda spec, **options: toy_potential)
    data = emt_dataset.write(tmp_path / "pool.extxyz")
    out = tmp_path / "chosen.extxyz"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "select",
            "--data",
            str(data),
            "--n",
            "4",
            "--model",
            "toy",
            "--out",
            str(out),
            "--rest",
            str(tmp_path / "rest.extxyz"),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "direct" in result.output and "farthest-point" in result.output and "clusters covered" in result.output
    chosen = Dataset.read(out)
    assert len(chosen) == 4 and len(Dataset.read(tmp_path / "rest.extxyz")) == 8
    record = json.loads((tmp_path / "chosen.selection.json").read_text())
    assert record["selected_ids"] == chosen.ids() and [row["method"] for row in record["coverage"]][0] == "direct"


def test_direct_on_chgnet_embeddings(emt_dataset):
    from atomtune.models import load_potential

    try:
        potential = load_potential("chgnet-0.3.0")
    except (ImportError, AtomtuneError) as error:  # backbone not installed in this environment
        pytest.skip(f"chgnet-0.3.0 unavailable: {error}")
    structures = list(emt_dataset)
    features = structure_features(potential, structures)
    assert features.shape[0] == 12 and features.shape[1] > 8 and np.all(np.isfinite(features))
    selections, rows = compare_samplers(features, n=4)
    assert len(selections["direct"]) == 4 and rows[0]["cluster_coverage"] == 1.0


# -- issue 16: n = 0 refused; n ≥ pool size keeps every structure ------------------------------------------------------


@pytest.mark.parametrize("sampler", [DirectSampler, RandomSampler, FarthestPointSampler])
def test_zero_or_negative_budget_is_refused(sampler):
    points, _ = blobs()
    for n in (0, -3):
        with pytest.raises(AtomtuneError, match="at least 1"):
            sampler(n).select(points)
    with pytest.raises(AtomtuneError, match="at least 1"):
        compare_samplers(points, n=0)


def test_a_budget_at_or_above_the_pool_size_keeps_every_structure():
    # two near-duplicates (features 1e-9 apart) in 20 points: BIRCH cannot split them into separate clusters
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20, 4))
    points[7] = points[3] + 1e-9
    for n in (20, 21, 500):
        selections, rows = compare_samplers(points, n=n)
        for method, chosen in selections.items():
            assert chosen.tolist() == list(range(20)), (n, method)
        assert rows[0]["n_selected"] == 20
    assert DirectSampler(10, per_cluster=2).select(points).tolist() == list(range(20))


def _select(tmp_path, data, n, name):
    from atomtune.cli import app

    out = tmp_path / f"{name}.extxyz"
    result = CliRunner().invoke(
        app, ["data", "select", "--data", str(data), "--n", str(n), "--model", "toy", "--out", str(out),
              "--threads", "1"],
    )
    return result, out


def test_select_command_budget_edges(tmp_path, monkeypatch, toy_potential, emt_dataset):
    from atomtune import models

    monkeypatch.setattr(models, "load_potential", lambda spec, **options: toy_potential)
    structures = list(emt_dataset)
    structures.append(structures[0].copy())  # an exact duplicate: identical features
    structures[-1].calc = structures[0].calc
    structures[-1].info["id"] = "duplicate"
    data = Dataset(structures).write(tmp_path / "pool.extxyz")
    for n in (len(structures), 500):
        result, out = _select(tmp_path, data, n, f"all{n}")
        assert result.exit_code == 0, result.output
        assert Dataset.read(out).ids() == Dataset.read(data).ids()
    result, out = _select(tmp_path, data, 0, "none")
    assert isinstance(result.exception, AtomtuneError) and not out.exists()
    assert "--n" in str(result.exception) and "at least 1" in str(result.exception)
