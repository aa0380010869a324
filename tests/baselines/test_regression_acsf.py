"""ACSF features for the regression baseline: a per-atom energy linear in each atom's ACSF is recovered exactly (so the
element-resolved sums are right), the features are invariant and intensive, bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
from dscribe.descriptors import ACSF

from atomtune.baselines import regression
from atomtune.baselines.regression import AcsfSettings, RegressionSpec
from atomtune.exceptions import AtomtuneError
from emt_data import emt_structures

SMALL = {"r_cut": 4.5, "g2_params": [[0.1, 0.0], [1.0, 2.5]], "g4_params": [[0.05, 2.0, 1.0]]}


def test_per_atom_linear_energy_in_acsf_recovered_exactly():
    """E = Σ_i w_{Z_i} · g_i with dscribe's own per-atom ACSF g_i and one weight vector per element: the energy per
    atom is linear in the features, so ridge recovers it on held-out structures (averaging over all atoms would not)."""
    structures = emt_structures(60, seed=21, elements=("Cu", "Ni"))
    elements = ["Ni", "Cu"]
    acsf = ACSF(species=elements, r_cut=SMALL["r_cut"], g2_params=SMALL["g2_params"], g4_params=SMALL["g4_params"],
                periodic=True)
    weights = {"Ni": np.random.default_rng(0).normal(size=acsf.get_number_of_features()),
               "Cu": np.random.default_rng(1).normal(size=acsf.get_number_of_features())}
    for atoms in structures:
        per_atom = np.asarray(acsf.create(atoms), dtype=float).reshape(len(atoms), -1)
        energy = sum(row @ weights[symbol] for row, symbol in zip(per_atom, atoms.get_chemical_symbols()))
        atoms.info["per_atom_linear"] = float(energy / len(atoms))
    spec = RegressionSpec(features="acsf", acsf=SMALL, estimator="ridge", target="per_atom_linear", cv_folds=4,
                          grid={"alpha": [1e-10, 1e-2]})
    result = regression.fit(structures[:45], spec, structures[45:])
    assert result.train_features.shape[1] == 2 + 2 * acsf.get_number_of_features()  # fractions + one block / element
    spread = np.ptp(result.test_targets)
    assert result.metrics.test_mae < 1e-5 * spread, result.metrics


def test_acsf_features_are_invariant_and_intensive():
    (atoms,) = emt_structures(1, seed=5)
    featurizer = regression.Featurizer(RegressionSpec(features="acsf", acsf=SMALL), ["Al", "Ni", "Cu"])
    reference = featurizer([atoms])[0]
    moved = atoms.copy()
    moved.translate([0.3, -0.7, 1.1])
    moved.wrap()
    shuffled = moved[np.random.default_rng(2).permutation(len(moved))]
    bigger = atoms.repeat((2, 1, 1))
    for other in (moved, shuffled, bigger):
        np.testing.assert_allclose(featurizer([other])[0], reference, atol=1e-9)
    molecule = atoms.copy()
    molecule.pbc = False
    assert np.all(np.isfinite(featurizer([molecule])[0]))  # boxed with vacuum, as for SOAP


def test_acsf_model_saves_and_loads_as_plain_data(tmp_path):
    structures = emt_structures(16, seed=4)
    spec = RegressionSpec(features="acsf", acsf=SMALL, estimator="knn", cv_folds=3)
    result = regression.fit(structures[:12], spec, structures[12:])
    result.save(tmp_path / "acsf")
    loaded = regression.RegressionModel.load(tmp_path / "acsf")
    assert loaded.spec.acsf == AcsfSettings(**SMALL)
    np.testing.assert_allclose(loaded.predict(structures[12:]), result.test_predictions)


def test_bad_acsf_settings():
    with pytest.raises(AtomtuneError, match="g2_params"):
        RegressionSpec(features="acsf", acsf={"g2_params": [[1.0]]})
    with pytest.raises(AtomtuneError, match="r_cut"):
        AcsfSettings(r_cut=0.0)
