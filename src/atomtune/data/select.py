"""Selection: pick an informative training subset of a (curated) dataset before paying for labels or training time.

Sits after curation in the data box. Structures are described by a foundation model's view of them: per-atom
embeddings from ``potential.embed`` (any backbone), mean-pooled per structure. :class:`DirectSampler` is DIRECT
sampling (Qi et al., npj Comput. Mater. 10, 43 (2024); reference implementation ``maml.sampling``): standardise →
PCA keeping components with eigenvalue > 1 (Kaiser) weighted by their explained-variance ratio → BIRCH clustering into
n clusters → k structures per cluster. :class:`RandomSampler` and :class:`FarthestPointSampler` are the baselines, and
:func:`coverage` scores any selection the same way so they can be compared.

Example::

    features = structure_features(load_potential("chgnet-0.3.0"), dataset)
    chosen = DirectSampler(n_clusters=100).select(features)
    for row in compare_samplers(features, n=100): print(row)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from atomtune.exceptions import AtomtuneError

CHOICES = ("centre", "random")


def structure_features(potential, structures: Sequence[Atoms], batch_size: int = 16, progress: bool = False):
    """Per-structure features ``(n_structures, F)``: the mean over atoms of ``potential.embed`` (the backbone's last
    message-passing layer), so structures of any size live in one space."""
    structures = list(structures)
    if not structures:
        raise AtomtuneError("no structures to describe.")
    potential.check_elements(structures)
    chunks = [structures[i : i + 256] for i in range(0, len(structures), 256)]
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"{potential.name} embeddings", unit="chunk")
    pooled = [per_atom.mean(axis=0) for chunk in chunks for per_atom in potential.embed(chunk, batch_size=batch_size)]
    return np.asarray(pooled, dtype=float)


@dataclass
class FeatureSpace:
    """Standardised features projected on the principal components with eigenvalue > 1 (Kaiser's rule), each
    multiplied by its explained-variance ratio (as in DIRECT) so clustering favours the directions that matter."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (m, F)
    weights: np.ndarray  # (m,)
    explained_variance_ratio: float  # of the kept components, together

    @classmethod
    def fit(cls, features: np.ndarray, weight_components: bool = True) -> FeatureSpace:
        from sklearn.decomposition import PCA

        features = _as_features(features)
        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale[scale < 1e-12] = 1.0  # a constant feature carries no information; leave it at zero
        standardised = (features - mean) / scale
        with np.errstate(invalid="ignore", divide="ignore"):
            pca = PCA().fit(standardised)
        kept = max(1, int(np.sum(pca.explained_variance_ > 1.0)))
        ratios = np.nan_to_num(pca.explained_variance_ratio_[:kept])  # all-constant features: no variance at all
        return cls(
            mean=mean,
            scale=scale,
            components=pca.components_[:kept],
            weights=ratios if weight_components and ratios.sum() > 0 else np.ones(kept),
            explained_variance_ratio=float(ratios.sum()),
        )

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Weighted principal-component coordinates ``(n, m)``."""
        standardised = (_as_features(features) - self.mean) / self.scale
        return (standardised @ self.components.T) * self.weights

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])


def birch_clusters(points: np.ndarray, n_clusters: int, threshold: float = 0.5) -> np.ndarray:
    """BIRCH cluster labels ``(n,)`` for ``n_clusters`` clusters (fewer when the points allow fewer).

    As in DIRECT's implementation, the subcluster radius ``threshold`` shrinks until BIRCH has at least ``n_clusters``
    subclusters to merge.
    """
    from sklearn.cluster import Birch

    n_clusters = min(int(n_clusters), len(points))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when duplicates give fewer subclusters; handled below
        model = Birch(n_clusters=None, threshold=threshold).fit(points)
        for _ in range(30):
            found = len(model.subcluster_centers_)
            if found >= n_clusters:
                break
            threshold *= max(found, 1) / n_clusters
            model = Birch(n_clusters=None, threshold=threshold).fit(points)
        if len(model.subcluster_centers_) > n_clusters:  # merge subclusters into n clusters (agglomerative step)
            model = Birch(n_clusters=n_clusters, threshold=threshold).fit(points)
        # else: duplicates leave no more subclusters than wanted; each subcluster is a cluster
        return np.asarray(model.predict(points), dtype=int)


class DirectSampler:
    """DIRECT sampling: ``n_clusters`` BIRCH clusters in the Kaiser-PCA space, ``per_cluster`` structures from each.

    ``choose="centre"`` takes the structure nearest each cluster centre (for k > 1, k structures at evenly spaced
    ranks of distance from the centre, as in ``maml``); ``"random"`` takes k at random. Settings live here; the work is
    in :meth:`select`.
    """

    def __init__(
        self,
        n_clusters: int,
        per_cluster: int = 1,
        choose: str = "centre",
        weight_components: bool = True,
        birch_threshold: float = 0.5,
        seed: int = 0,
    ):
        if choose not in CHOICES:
            raise AtomtuneError(f"choose={choose!r}: use one of {', '.join(CHOICES)}.")
        if n_clusters < 1 or per_cluster < 1:
            raise AtomtuneError("n_clusters and per_cluster must be at least 1.")
        self.n_clusters = int(n_clusters)
        self.per_cluster = int(per_cluster)
        self.choose = choose
        self.weight_components = weight_components
        self.birch_threshold = birch_threshold
        self.seed = seed
        self.labels_: np.ndarray | None = None
        self.space_: FeatureSpace | None = None

    def select(self, features: np.ndarray) -> np.ndarray:
        """Indices of the chosen structures (sorted). A budget (``n_clusters × per_cluster``) at or above the number of
        structures keeps every structure: BIRCH cannot split near-identical structures into clusters of their own, so
        one pick per cluster would otherwise drop one of them silently."""
        features = _as_features(features)
        self.space_ = FeatureSpace.fit(features, self.weight_components)
        points = self.space_.transform(features)
        self.labels_ = birch_clusters(points, self.n_clusters, self.birch_threshold)
        if self.n_clusters * self.per_cluster >= len(features):
            return np.arange(len(features))
        rng = np.random.default_rng(self.seed)
        chosen: list[int] = []
        for label in np.unique(self.labels_):
            members = np.flatnonzero(self.labels_ == label)
            k = min(self.per_cluster, len(members))
            if self.choose == "random":
                chosen.extend(rng.choice(members, size=k, replace=False).tolist())
                continue
            centre = points[members].mean(axis=0)
            order = members[np.argsort(np.linalg.norm(points[members] - centre, axis=1), kind="stable")]
            ranks = np.unique(np.round(np.linspace(0, len(members) - 1, k)).astype(int))
            chosen.extend(order[ranks].tolist())
        return np.asarray(sorted(set(chosen)), dtype=int)


class RandomSampler:
    """Baseline: ``n`` structures uniformly at random (all of them when ``n`` ≥ their number)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = _budget(n), seed

    def select(self, features: np.ndarray) -> np.ndarray:
        count = len(_as_features(features))
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(count, size=min(self.n, count), replace=False))


class FarthestPointSampler:
    """Baseline: greedy farthest-point sampling in the same Kaiser-PCA space, from a random first structure (all
    structures when ``n`` ≥ their number)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = _budget(n), seed

    def select(self, features: np.ndarray) -> np.ndarray:
        features = _as_features(features)
        points = FeatureSpace.fit(features).transform(features)
        count = min(self.n, len(points))
        rng = np.random.default_rng(self.seed)
        chosen = [int(rng.integers(len(points)))]
        distance = np.linalg.norm(points - points[chosen[0]], axis=1)
        while len(chosen) < count:
            nxt = int(np.argmax(distance))
            chosen.append(nxt)
            distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=1))
        return np.sort(np.asarray(chosen, dtype=int))


def coverage(
    features: np.ndarray, indices: Sequence[int], n_clusters: int, n_bins: int = 50, reference_labels=None
) -> dict:
    """How much of the pool a selection covers.

    ``cluster_coverage``: fraction of ``n_clusters`` reference BIRCH clusters (DIRECT's own, on the whole pool) holding
    at least one selected structure. ``feature_coverage``: DIRECT's coverage score — per kept principal component, the
    fraction of the ``n_bins`` histogram bins occupied by the pool that also hold a selected structure; averaged.
    """
    features = _as_features(features)
    indices = np.asarray(indices, dtype=int)
    space = FeatureSpace.fit(features)
    points = space.transform(features)
    labels = birch_clusters(points, n_clusters) if reference_labels is None else np.asarray(reference_labels)
    clusters = np.unique(labels)
    covered = np.isin(clusters, labels[indices]).mean() if len(indices) else 0.0
    scores = []
    for column in points.T:
        edges = np.linspace(column.min(), column.max(), n_bins + 1)
        if edges[-1] - edges[0] < 1e-12:
            scores.append(1.0 if len(indices) else 0.0)
            continue
        pool_bins = np.unique(np.clip(np.digitize(column, edges[1:-1]), 0, n_bins - 1))
        chosen_bins = np.unique(np.clip(np.digitize(column[indices], edges[1:-1]), 0, n_bins - 1))
        scores.append(len(chosen_bins) / len(pool_bins))
    return {
        "n_selected": int(len(indices)),
        "cluster_coverage": float(covered),
        "feature_coverage": float(np.mean(scores)),
        "n_clusters": int(len(clusters)),
        "n_components": space.n_components,
    }


def compare_samplers(
    features: np.ndarray, n: int, per_cluster: int = 1, choose: str = "centre", seed: int = 0
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """DIRECT, random and farthest-point selections of the same budget, each scored by :func:`coverage` against the
    same reference clusters. Returns ``({method: indices}, [row per method])``; ``n`` ≥ the number of structures selects
    every structure."""
    features = _as_features(features)
    n = _budget(n)
    n_clusters = max(1, math.ceil(n / per_cluster))
    direct = DirectSampler(n_clusters, per_cluster=per_cluster, choose=choose, seed=seed)
    selections = {"direct": direct.select(features)}
    budget = len(selections["direct"])  # baselines get exactly what DIRECT picked, for a fair comparison
    selections["random"] = RandomSampler(budget, seed=seed).select(features)
    selections["farthest-point"] = FarthestPointSampler(budget, seed=seed).select(features)
    rows = [
        {"method": method, **coverage(features, indices, n_clusters, reference_labels=direct.labels_)}
        for method, indices in selections.items()
    ]
    return selections, rows


SAMPLERS = {"direct": DirectSampler, "random": RandomSampler, "farthest-point": FarthestPointSampler}


def _budget(n) -> int:
    """``n`` as a number of structures to select: a positive integer."""
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise AtomtuneError(f"n={n!r}: select at least 1 structure (n is the number of structures to keep).")
    return int(n)


def _as_features(features) -> np.ndarray:
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or len(features) == 0:
        raise AtomtuneError(
            f"features must be a non-empty (n_structures, n_features) array, got shape {features.shape}."
        )
    if not np.all(np.isfinite(features)):
        raise AtomtuneError("features contain NaN or inf; check the model's embeddings.")
    return features
