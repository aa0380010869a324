"""Descriptor regression baselines: per-structure features → a scikit-learn regressor for energy per atom (or any scalar).

The classic baseline a fine-tuned potential has to beat (the lectures' "descriptors + kernel / linear regression"):

- **features** (one vector per structure): ``composition`` (fractions of each element of the training set),
  ``soap`` (dscribe's SOAP power spectrum averaged over the atoms, ``average="inner"``), ``acsf`` (dscribe's Behler–
  Parrinello atom-centred symmetry functions, G2 radial and G4 angular, summed per centre element and divided by the
  number of atoms, next to the composition fractions), or
  ``embeddings:<model>`` (a foundation model's own per-atom invariant embeddings, :meth:`Potential.embed`, averaged over
  the atoms). Averaging per-atom descriptors and regressing energy *per atom* is the usual per-atom-energy ansatz.
- **estimators** (scikit-learn, inside a ``StandardScaler`` pipeline): ``ridge``, ``lasso``, ``knn``,
  ``random_forest``, ``svr``, ``gaussian_process``. Hyperparameters are chosen by k-fold cross-validation
  (``GridSearchCV``) on the training part only; the Gaussian process optimises its kernel by marginal likelihood on the
  training part instead. The test part never enters the search (no leakage; tested).
- **target**: ``energy_per_atom`` (eV/atom, from the energy label) or the name of any per-structure scalar in
  ``atoms.info`` (units are the user's).

These models predict a per-structure scalar only: no forces, no stress. :func:`errors_records` gives records in the
shape of :mod:`atomtune.tasks.errors` with ``forces_pred`` set to ``None`` and a ``note`` saying so, so
:func:`atomtune.tasks.errors.metrics` reports their energy errors beside the potentials' and no force error is faked.

Saved models are plain data, never a pickle: ``regression.json`` (spec, elements, chosen hyperparameters, fitted
Gaussian-process kernel, metrics, versions) and ``training_data.npz`` (training features, targets and the fitted model's
predictions on them). Loading refits the estimator with the stored hyperparameters on the stored data — deterministic for
every estimator here (the random forest has a fixed seed; the Gaussian process reuses its fitted kernel without
re-optimising) — and checks that it reproduces the stored predictions, so a file from another scikit-learn version fails
loudly instead of predicting something else.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from atomtune.exceptions import AtomtuneError

ESTIMATORS = ("ridge", "lasso", "knn", "random_forest", "svr", "gaussian_process")
FEATURE_KINDS = ("composition", "soap", "acsf", "embeddings")
ENERGY_PER_ATOM = "energy_per_atom"
MODEL_FILE = "regression.json"
DATA_FILE = "training_data.npz"
#: Variance below which a training feature counts as constant (features are O(1e-3–1); round-off variance is ~1e-34).
CONSTANT_FEATURE_VARIANCE = 1e-16
NO_FORCES_NOTE = "descriptor regression predicts energy per atom only: no forces or stress (not faked)"

#: Hyperparameter grids searched by cross-validation on the training part (names of the estimator's own arguments).
#: Ridge goes down to 1e-8 so an exactly linear target is recovered exactly; the rest are the usual decades.
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "ridge": {"alpha": [1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]},
    "lasso": {"alpha": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]},
    "knn": {"n_neighbors": [1, 2, 3, 5, 8], "weights": ["uniform", "distance"]},
    "random_forest": {"max_depth": [None, 4, 8], "min_samples_leaf": [1, 3]},
    "svr": {"C": [0.1, 1.0, 10.0, 100.0], "epsilon": [1e-3, 1e-2, 1e-1], "gamma": ["scale", 0.01, 0.1]},
    "gaussian_process": {},
}


@dataclass(frozen=True)
class SoapSettings:
    """dscribe SOAP settings: ``r_cut`` Å (5 Å: the second neighbour shell of fcc metals and a bit more), ``n_max``
    radial and ``l_max`` angular channels (6 / 4: dscribe's tutorial sizes, a few hundred features for 2–3 elements),
    ``sigma`` Å (Gaussian width of the atomic densities, 0.5 Å)."""

    r_cut: float = 5.0
    n_max: int = 6
    l_max: int = 4
    sigma: float = 0.5


@dataclass(frozen=True)
class AcsfSettings:
    """dscribe ACSF settings (Behler–Parrinello symmetry functions; every function has dscribe's cosine cutoff at
    ``r_cut`` Å). ``g2_params``: radial functions exp(−η (r − R_s)²) as ``[η (Å⁻²), R_s (Å)]`` pairs (default: five
    widths centred at 0, from the whole cutoff sphere down to the first shell); ``g4_params``: angular functions as
    ``[η (Å⁻²), ζ, λ]`` (default: ζ 1 and 4, λ ±1, two widths). dscribe makes one G2 block per neighbour element and one
    G4 block per neighbour-element pair."""

    r_cut: float = 5.0
    g2_params: list = field(default_factory=lambda: [[0.01, 0.0], [0.05, 0.0], [0.2, 0.0], [0.5, 0.0], [1.0, 0.0]])
    g4_params: list = field(default_factory=lambda: [[0.01, 1.0, 1.0], [0.01, 1.0, -1.0], [0.01, 4.0, 1.0],
                                                     [0.01, 4.0, -1.0], [0.1, 1.0, 1.0], [0.1, 1.0, -1.0]])

    def __post_init__(self) -> None:
        if self.r_cut <= 0:
            raise AtomtuneError(f"acsf r_cut {self.r_cut}: must be positive (Å).")
        for name, width in (("g2_params", 2), ("g4_params", 3)):
            rows = getattr(self, name)
            if not rows or any(not isinstance(row, (list, tuple)) or len(row) != width for row in rows):
                raise AtomtuneError(f"acsf {name}: give a non-empty list of {width}-number lists, e.g. "
                                    f"{AcsfSettings.__dataclass_fields__[name].default_factory()[:1]}.")


@dataclass
class RegressionSpec:
    """One descriptor-regression baseline.

    ``features``: ``"composition"``, ``"soap"``, ``"acsf"`` or ``"embeddings:<model>"`` (any ``--model`` name /
    directory).
    ``estimator``: one of :data:`ESTIMATORS`. ``target``: ``"energy_per_atom"`` (eV/atom) or an ``atoms.info`` key.
    ``test_fraction``: held-out part when the data carry no ``split`` info (structures with ``info["split"] == "test"``
    are the test set when present). ``cv_folds``: folds of the hyperparameter search on the training part.
    ``seed``: split, folds and random forest. ``grid``: hyperparameter grid replacing :data:`DEFAULT_GRIDS` for this
    estimator. ``soap``: :class:`SoapSettings`; ``acsf``: :class:`AcsfSettings`. ``embedding_dtype``: precision of the backbone that makes embeddings;
    ``trust_model``: the embedding model is a pickle-by-design file (a MACE ``*.model``) you trust (``--trust-model``).
    """

    features: str = "composition"
    estimator: str = "ridge"
    target: str = ENERGY_PER_ATOM
    test_fraction: float = 0.2
    cv_folds: int = 5
    seed: int = 0
    grid: dict[str, list] | None = None
    soap: SoapSettings = field(default_factory=SoapSettings)
    acsf: AcsfSettings = field(default_factory=AcsfSettings)
    embedding_dtype: str = "float32"
    trust_model: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.soap, dict):
            self.soap = SoapSettings(**self.soap)
        if isinstance(self.acsf, dict):
            self.acsf = AcsfSettings(**self.acsf)
        self.check()

    def check(self) -> None:
        """Raise :class:`AtomtuneError` for a spec that cannot work, before any feature is computed."""
        if self.feature_kind not in FEATURE_KINDS:
            raise AtomtuneError(
                f"features {self.features!r} unknown: use composition, soap, acsf or embeddings:<model> "
                f"(e.g. embeddings:chgnet-0.3.0)."
            )
        if self.feature_kind == "embeddings" and not self.feature_model:
            raise AtomtuneError("features 'embeddings' needs a model: embeddings:chgnet-0.3.0, embeddings:ft/ …")
        if self.feature_kind != "embeddings" and ":" in self.features:
            raise AtomtuneError(f"features {self.features!r}: only embeddings take a ':<model>' suffix.")
        if self.estimator not in ESTIMATORS:
            raise AtomtuneError(f"estimator {self.estimator!r} unknown; use one of {', '.join(ESTIMATORS)}.")
        if not 0.0 <= self.test_fraction < 1.0:
            raise AtomtuneError(f"test_fraction {self.test_fraction} must be in [0, 1).")
        if self.cv_folds < 2:
            raise AtomtuneError(f"cv_folds {self.cv_folds}: cross-validation needs at least 2 folds.")
        if self.grid is not None:
            unknown = set(self.grid) - set(_estimator(self.estimator, self.seed).get_params())
            if unknown:
                raise AtomtuneError(
                    f"grid for {self.estimator}: {', '.join(sorted(unknown))} are not parameters of that estimator."
                )
        if self.embedding_dtype not in ("float32", "float64"):
            raise AtomtuneError(f"embedding_dtype {self.embedding_dtype!r}: use float32 or float64.")

    @property
    def feature_kind(self) -> str:
        return self.features.split(":", 1)[0].strip().lower()

    @property
    def feature_model(self) -> str | None:
        return self.features.split(":", 1)[1].strip() if ":" in self.features else None

    def search_grid(self) -> dict[str, list]:
        """The grid searched by cross-validation (``grid`` or the estimator's default)."""
        return dict(self.grid) if self.grid is not None else dict(DEFAULT_GRIDS[self.estimator])

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """A short hash of everything that changes the fitted model (for caches and file names)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


# -- features ---------------------------------------------------------------------------------------------------------
class Featurizer:
    """Per-structure feature vectors of one kind over a fixed element list (the training set's)."""

    def __init__(self, spec: RegressionSpec, elements: Sequence[str]):
        self.spec = spec
        self.elements = list(elements)
        self._soap = None
        self._acsf = None
        self._potential = None

    def __call__(self, structures: Sequence[Atoms], progress: bool = False) -> np.ndarray:
        """``(n_structures, n_features)`` float64."""
        structures = list(structures)
        self.check_elements(structures)
        kind = self.spec.feature_kind
        if kind == "composition":
            return np.array([self._composition(atoms) for atoms in structures], dtype=float)
        if kind == "soap":
            return self._soap_features(structures)
        if kind == "acsf":
            return self._acsf_features(structures)
        return self._embedding_features(structures, progress)

    def check_elements(self, structures: Sequence[Atoms]) -> None:
        known = set(self.elements)
        for index, atoms in enumerate(structures):
            extra = sorted(set(atoms.get_chemical_symbols()) - known)
            if extra:
                raise AtomtuneError(
                    f"structure {index} ({atoms.info.get('id', index)}, {atoms.get_chemical_formula()}) has "
                    f"{', '.join(extra)}, which the regression model never saw (its elements: "
                    f"{', '.join(self.elements)}); refit on data that contain them."
                )

    def _composition(self, atoms: Atoms) -> np.ndarray:
        symbols = atoms.get_chemical_symbols()
        return np.array([symbols.count(element) / len(symbols) for element in self.elements])

    def _soap_features(self, structures: list[Atoms]) -> np.ndarray:
        try:
            from dscribe.descriptors import SOAP
        except ImportError as error:
            raise AtomtuneError(f"SOAP features need dscribe ({error}); install atomtune's dependencies.") from None
        if self._soap is None:
            settings = self.spec.soap
            self._soap = SOAP(
                species=self.elements, r_cut=settings.r_cut, n_max=settings.n_max, l_max=settings.l_max,
                sigma=settings.sigma, periodic=True, average="inner",
            )
        periodic = [atoms if atoms.pbc.all() else _boxed(atoms) for atoms in structures]
        return np.asarray(self._soap.create(periodic, n_jobs=1), dtype=float).reshape(len(structures), -1)

    def _acsf_features(self, structures: list[Atoms]) -> np.ndarray:
        """Per structure: the composition fractions, then for each element Z the sum of the ACSF vectors of the atoms
        of element Z divided by the number of atoms — the features in which a per-atom energy linear in each atom's
        ACSF (one weight vector per element) is linear in energy per atom. Averaging over all atoms instead would mix
        centres of different elements into one vector."""
        try:
            from dscribe.descriptors import ACSF
        except ImportError as error:
            raise AtomtuneError(f"ACSF features need dscribe ({error}); install atomtune's dependencies.") from None
        if self._acsf is None:
            settings = self.spec.acsf
            self._acsf = ACSF(
                species=self.elements, r_cut=settings.r_cut, periodic=True,
                g2_params=[list(map(float, row)) for row in settings.g2_params],
                g4_params=[list(map(float, row)) for row in settings.g4_params],
            )
        rows = []
        for atoms in structures:
            per_atom = np.asarray(self._acsf.create(atoms if atoms.pbc.all() else _boxed(atoms), n_jobs=1), dtype=float)
            per_atom = per_atom.reshape(len(atoms), -1)
            symbols = np.array(atoms.get_chemical_symbols())
            blocks = [per_atom[symbols == element].sum(axis=0) / len(atoms) for element in self.elements]
            rows.append(np.concatenate([self._composition(atoms), *blocks]))
        return np.array(rows, dtype=float)

    def _embedding_features(self, structures: list[Atoms], progress: bool) -> np.ndarray:
        from atomtune.exceptions import UnsupportedElementsError
        from atomtune.models import load_potential

        if self._potential is None:
            self._potential = load_potential(
                self.spec.feature_model, dtype=self.spec.embedding_dtype, trust=self.spec.trust_model
            )
        try:
            self._potential.check_elements(structures)
        except UnsupportedElementsError as error:
            raise AtomtuneError(f"features {self.spec.features!r} cannot be made: {error}") from None
        iterator = range(0, len(structures), 16)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"embeddings ({self.spec.feature_model})", unit="batch")
        rows = []
        for start in iterator:
            per_atom = self._potential.embed(structures[start : start + 16])
            rows.extend(np.asarray(atoms_features).mean(axis=0) for atoms_features in per_atom)
        return np.array(rows, dtype=float)


def _boxed(atoms: Atoms) -> Atoms:
    """A non-periodic structure in a box with 2 × r_cut of vacuum is what dscribe's periodic SOAP expects."""
    boxed = atoms.copy()
    boxed.center(vacuum=10.0)
    boxed.pbc = True
    return boxed


def targets(structures: Sequence[Atoms], target: str) -> np.ndarray:
    """The target of each structure: energy per atom (eV/atom) from its energy label, or ``atoms.info[target]``."""
    from atomtune.data.dataset import labels_of

    values = []
    for index, atoms in enumerate(structures):
        if target == ENERGY_PER_ATOM:
            energy = labels_of(atoms).energy
            if energy is None:
                raise AtomtuneError(
                    f"structure {index} ({atoms.info.get('id', index)}) has no energy label; energy per atom needs one "
                    f"(label it with `atomtune label`)."
                )
            values.append(energy / len(atoms))
        else:
            value = atoms.info.get(target)
            if value is None or not np.isscalar(value) or isinstance(value, (str, bool)):
                raise AtomtuneError(
                    f"structure {index} ({atoms.info.get('id', index)}) has no numeric '{target}' in its info; every "
                    f"structure needs one for target={target!r}."
                )
            values.append(float(value))
    return np.array(values, dtype=float)


# -- estimators -------------------------------------------------------------------------------------------------------
def _estimator(name: str, seed: int):
    """The bare scikit-learn estimator (defaults that the grid then overrides)."""
    from sklearn import ensemble, gaussian_process, linear_model, neighbors, svm
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    if name == "ridge":
        return linear_model.Ridge()
    if name == "lasso":
        return linear_model.Lasso(max_iter=100_000)
    if name == "knn":
        return neighbors.KNeighborsRegressor()
    if name == "random_forest":
        return ensemble.RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    if name == "svr":
        return svm.SVR(kernel="rbf")
    if name == "gaussian_process":
        kernel = ConstantKernel(1.0, (1e-5, 1e5)) * RBF(1.0, (1e-3, 1e4)) + WhiteKernel(1e-4, (1e-10, 1e1))
        return gaussian_process.GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed)
    raise AtomtuneError(f"estimator {name!r} unknown; use one of {', '.join(ESTIMATORS)}.")


def _pipeline(name: str, seed: int, parameters: dict | None = None, fixed_kernel=None):
    """Constant features dropped → StandardScaler → estimator, the target standardised too (SVR's epsilon and the kernels then work in σ units).

    ``fixed_kernel``: a fitted Gaussian-process kernel reused as it is (``optimizer=None``) when reloading.
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.preprocessing import StandardScaler

    estimator = _estimator(name, seed)
    if fixed_kernel is not None:
        estimator.set_params(kernel=fixed_kernel, optimizer=None)
    if parameters:
        estimator.set_params(**parameters)
    # Features constant up to round-off on the training part (SOAP channels of environments the training structures
    # lack: std ~1e-17) are dropped first: scaled by their noise they would blow up on test structures (measured:
    # 1e28 meV/atom with ridge on 10 structures).
    pipeline = Pipeline(
        [("drop_constant", VarianceThreshold(CONSTANT_FEATURE_VARIANCE)), ("scale", StandardScaler()), ("model", estimator)]
    )
    return TransformedTargetRegressor(regressor=pipeline, transformer=StandardScaler())


def _grid_for_search(spec: RegressionSpec) -> dict[str, list]:
    return {f"regressor__model__{key}": list(values) for key, values in spec.search_grid().items()}


# -- the model --------------------------------------------------------------------------------------------------------
@dataclass
class RegressionMetrics:
    """Errors of one fitted model on its training part (cross-validated) and its held-out test part, in the target's
    units (eV/atom for energy per atom; the ``_mev_per_atom`` fields only then)."""

    n_train: int
    n_test: int
    cv_rmse: float
    test_mae: float | None
    test_rmse: float | None
    test_mae_mev_per_atom: float | None
    test_rmse_mev_per_atom: float | None
    fit_seconds: float
    feature_seconds: float


class RegressionModel:
    """A fitted descriptor-regression model (features + fitted estimator); ``save`` / ``load`` as plain data."""

    def __init__(self, spec: RegressionSpec, elements: Sequence[str], estimator, parameters: dict, metadata: dict):
        self.spec = spec
        self.elements = list(elements)
        self.estimator = estimator
        self.parameters = parameters
        self.metadata = metadata
        self.featurizer = Featurizer(spec, self.elements)

    @property
    def name(self) -> str:
        return f"regression:{self.spec.estimator}({self.spec.features})"

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(features), dtype=float)

    def predict(self, structures: Sequence[Atoms], progress: bool = False) -> np.ndarray:
        """The target for each structure (eV/atom for energy per atom)."""
        return self.predict_features(self.featurizer(structures, progress=progress))

    def predict_energies(self, structures: Sequence[Atoms]) -> np.ndarray:
        """Total energies (eV): predicted energy per atom × atoms. Only for models of ``energy_per_atom``."""
        if self.spec.target != ENERGY_PER_ATOM:
            raise AtomtuneError(f"{self.name} predicts {self.spec.target!r}, not energy per atom.")
        structures = list(structures)
        return self.predict(structures) * np.array([len(atoms) for atoms in structures])

    # -- persistence ------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path, train_features: np.ndarray, train_targets: np.ndarray) -> Path:
        """Write ``regression.json`` and ``training_data.npz`` (plain data, see module docstring)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / DATA_FILE,
            features=train_features,
            targets=train_targets,
            predictions=self.predict_features(train_features),
        )
        document = {
            "kind": "regression",
            "spec": self.spec.to_dict(),
            "elements": self.elements,
            "parameters": self.parameters,
            "gaussian_process_kernel": _fitted_kernel(self.estimator),
            "units": {"target": "eV/atom" if self.spec.target == ENERGY_PER_ATOM else "as in the data"},
            "forces": NO_FORCES_NOTE,
            **self.metadata,
        }
        tmp = directory / (MODEL_FILE + ".tmp")
        tmp.write_text(json.dumps(document, indent=2, default=_json_default))
        os.replace(tmp, directory / MODEL_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> RegressionModel:
        """Rebuild a model written by :meth:`save`: refit with the stored hyperparameters on the stored training data,
        then check it reproduces the stored training predictions (see module docstring)."""
        directory = Path(directory)
        document_path, data_path = directory / MODEL_FILE, directory / DATA_FILE
        if not document_path.is_file() or not data_path.is_file():
            raise AtomtuneError(
                f"{directory}: not a regression baseline ({MODEL_FILE} and {DATA_FILE} expected; "
                f"`atomtune baseline --kind regression --out DIR` writes them)."
            )
        document = json.loads(document_path.read_text())
        spec = RegressionSpec(**document["spec"])
        with np.load(data_path, allow_pickle=False) as data:  # plain arrays only
            features, values, stored = data["features"], data["targets"], data["predictions"]
        kernel = _kernel_from_dict(document.get("gaussian_process_kernel"))
        estimator = _pipeline(spec.estimator, spec.seed, document["parameters"], fixed_kernel=kernel)
        estimator.fit(features, values)
        reproduced = np.asarray(estimator.predict(features), dtype=float)
        scale = max(1.0, float(np.abs(stored).max()))
        if not np.allclose(reproduced, stored, rtol=0.0, atol=1e-6 * scale):
            worst = float(np.abs(reproduced - stored).max())
            raise AtomtuneError(
                f"{directory}: refitting {spec.estimator} does not reproduce the saved predictions (largest difference "
                f"{worst:.3g}); the file was probably written with another scikit-learn "
                f"({document.get('versions', {}).get('scikit-learn')}) — refit the baseline."
            )
        metadata = {key: document[key] for key in ("metrics", "versions", "train_ids", "test_ids") if key in document}
        return cls(spec, document["elements"], estimator, document["parameters"], metadata)


def _fitted_kernel(estimator) -> dict | None:
    """The Gaussian process's fitted kernel as plain data (its parameters by name), else None."""
    model = estimator.regressor_.named_steps["model"]
    if not hasattr(model, "kernel_"):
        return None
    kernel = model.kernel_
    return {"repr": repr(kernel), "theta": kernel.theta.tolist()}


def _kernel_from_dict(document: dict | None):
    """The fitted kernel from :func:`_fitted_kernel` (same structure as :func:`_estimator` builds, theta restored)."""
    if not document:
        return None
    kernel = _estimator("gaussian_process", 0).kernel
    return kernel.clone_with_theta(np.asarray(document["theta"], dtype=float))


def _json_default(value):
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- fitting ----------------------------------------------------------------------------------------------------------
@dataclass
class RegressionResult:
    """A fitted model, its metrics, the ids of its training and test structures and the test predictions."""

    model: RegressionModel
    metrics: RegressionMetrics
    train_ids: list[str]
    test_ids: list[str]
    test_predictions: list[float]
    test_targets: list[float]
    train_features: np.ndarray
    train_targets: np.ndarray

    def save(self, directory: str | Path) -> Path:
        return self.model.save(directory, self.train_features, self.train_targets)


def split_for_regression(structures: Sequence[Atoms], spec: RegressionSpec) -> tuple[list[Atoms], list[Atoms]]:
    """(train, test): the ``info["split"]`` the data carry (``test`` vs everything else) when any structure has one,
    else a random ``test_fraction`` (seeded)."""
    structures = list(structures)
    if any("split" in atoms.info for atoms in structures):
        test = [atoms for atoms in structures if atoms.info.get("split") == "test"]
        train = [atoms for atoms in structures if atoms.info.get("split") != "test"]
        return train, test
    order = np.random.default_rng(spec.seed).permutation(len(structures))
    n_test = int(round(spec.test_fraction * len(structures)))
    test_index = set(order[:n_test].tolist())
    return (
        [atoms for i, atoms in enumerate(structures) if i not in test_index],
        [atoms for i, atoms in enumerate(structures) if i in test_index],
    )


def fit(
    train: Sequence[Atoms],
    spec: RegressionSpec,
    test: Sequence[Atoms] = (),
    progress: bool = False,
) -> RegressionResult:
    """Fit ``spec`` on ``train`` (hyperparameters by ``cv_folds``-fold cross-validation on ``train`` alone) and score
    it on ``test``. Elements are those of ``train``; a test structure with another element is an error."""
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict

    from atomtune.runtime import configure_threads

    train, test = list(train), list(test)
    if len(train) < spec.cv_folds:
        raise AtomtuneError(
            f"{len(train)} training structures for {spec.cv_folds}-fold cross-validation: give more data or lower "
            f"cv_folds."
        )
    configure_threads(None)  # BLAS threads as the rest of atomtune (set by the CLI / ATOMTUNE_THREADS)
    elements = sorted({s for atoms in train for s in atoms.get_chemical_symbols()}, key=chemical_symbols.index)
    featurizer = Featurizer(spec, elements)
    started = time.perf_counter()
    train_features = featurizer(train, progress=progress)
    train_targets = targets(train, spec.target)
    test_features = featurizer(test, progress=progress) if test else np.zeros((0, train_features.shape[1]))
    test_targets = targets(test, spec.target) if test else np.zeros(0)
    feature_seconds = time.perf_counter() - started

    started = time.perf_counter()
    folds = KFold(n_splits=spec.cv_folds, shuffle=True, random_state=spec.seed)
    grid = _grid_for_search(spec)
    neighbours = "regressor__model__n_neighbors"
    if neighbours in grid:  # kNN cannot ask for more neighbours than a CV training fold holds
        smallest_fold = len(train) - -(-len(train) // spec.cv_folds)
        grid[neighbours] = [k for k in grid[neighbours] if k <= smallest_fold] or [1]
    if grid:
        search = GridSearchCV(
            _pipeline(spec.estimator, spec.seed), grid, cv=folds, scoring="neg_root_mean_squared_error", n_jobs=1
        )
        search.fit(train_features, train_targets)
        parameters = {key.removeprefix("regressor__model__"): value for key, value in search.best_params_.items()}
        cv_rmse = float(-search.best_score_)
    else:
        parameters = {}
    estimator = _pipeline(spec.estimator, spec.seed, parameters)
    if not grid:  # the Gaussian process: kernel by marginal likelihood, CV error of that procedure for the record
        cv_predictions = cross_val_predict(estimator, train_features, train_targets, cv=folds)
        cv_rmse = float(np.sqrt(np.mean((cv_predictions - train_targets) ** 2)))
    estimator.fit(train_features, train_targets)
    fit_seconds = time.perf_counter() - started

    predictions = np.asarray(estimator.predict(test_features), dtype=float) if test else np.zeros(0)
    errors = predictions - test_targets
    test_mae = float(np.abs(errors).mean()) if test else None
    test_rmse = float(np.sqrt((errors**2).mean())) if test else None
    energy = spec.target == ENERGY_PER_ATOM
    metrics = RegressionMetrics(
        n_train=len(train),
        n_test=len(test),
        cv_rmse=cv_rmse,
        test_mae=test_mae,
        test_rmse=test_rmse,
        test_mae_mev_per_atom=test_mae * 1000 if energy and test else None,
        test_rmse_mev_per_atom=test_rmse * 1000 if energy and test else None,
        fit_seconds=fit_seconds,
        feature_seconds=feature_seconds,
    )
    train_ids = [str(atoms.info.get("id", i)) for i, atoms in enumerate(train)]
    test_ids = [str(atoms.info.get("id", i)) for i, atoms in enumerate(test)]
    metadata = {"metrics": asdict(metrics), "versions": _versions(), "train_ids": train_ids, "test_ids": test_ids}
    model = RegressionModel(spec, elements, estimator, _plain(parameters), metadata)
    return RegressionResult(
        model, metrics, train_ids, test_ids, predictions.tolist(), test_targets.tolist(), train_features,
        train_targets,
    )


def _plain(parameters: dict) -> dict:
    """Hyperparameters as JSON values (numpy scalars from the grid become Python numbers)."""
    return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in parameters.items()}


def _versions() -> dict:
    import sklearn

    versions = {"scikit-learn": sklearn.__version__}
    try:
        import dscribe

        versions["dscribe"] = getattr(dscribe, "__version__", "")
    except ImportError:
        pass
    return versions


def errors_records(model: RegressionModel, structures: Sequence[Atoms]) -> list[dict]:
    """Records in the shape of :func:`atomtune.tasks.errors.run` (energy eV), so :func:`atomtune.tasks.errors.metrics`
    gives this model's energy-per-atom errors beside the potentials'. No forces are predicted: ``forces_pred`` is None,
    ``forces_ref`` is left out of the force metrics (set to None) and ``note`` says why."""
    from atomtune.data.dataset import labels_of

    structures = list(structures)
    energies = model.predict_energies(structures)
    records = []
    for index, (atoms, energy) in enumerate(zip(structures, energies)):
        records.append(
            {
                "id": str(atoms.info.get("id", index)),
                "formula": atoms.get_chemical_formula(),
                "symbols": atoms.get_chemical_symbols(),
                "n_atoms": len(atoms),
                "energy_ref": labels_of(atoms).energy,
                "energy_pred": float(energy),
                "forces_ref": None,
                "forces_pred": None,
                "note": NO_FORCES_NOTE,
            }
        )
    return records


@dataclass
class LearningCurvePoint:
    """Held-out error of one fit on the first ``n_train`` training structures (target units; meV/atom for energy)."""

    n_train: int
    test_mae: float
    test_rmse: float
    cv_rmse: float
    parameters: dict


def learning_curve(
    train: Sequence[Atoms], test: Sequence[Atoms], spec: RegressionSpec, sizes: Sequence[int], seed: int = 0
) -> list[LearningCurvePoint]:
    """Error vs training-set size: for each N in ``sizes`` fit ``spec`` on the first N structures of one seeded shuffle
    of ``train`` (larger sets contain the smaller ones, as in the fine-tuning data-efficiency benchmark) and score it on
    the same ``test`` structures. N larger than ``train`` is capped at its size; N below ``cv_folds`` is refused."""
    train, test = list(train), list(test)
    if not test:
        raise AtomtuneError("a learning curve needs test structures to score each fit on.")
    order = np.random.default_rng(seed).permutation(len(train))
    points = []
    for size in sorted({min(int(n), len(train)) for n in sizes}):
        if size < spec.cv_folds:
            raise AtomtuneError(f"learning-curve size {size} is below cv_folds = {spec.cv_folds}; drop it.")
        result = fit([train[int(i)] for i in order[:size]], spec, test)
        points.append(LearningCurvePoint(size, result.metrics.test_mae, result.metrics.test_rmse,
                                         result.metrics.cv_rmse, result.model.parameters))
    return points
