"""From-scratch NequIP (nequip's own nequip-train in the nequip environment): the package is a ``nequip:`` model whose
validation errors, computed through atomtune, are the ones nequip's trainer logged for the kept epoch; E0s from the
training data; the budget recorded. Slow: two environment processes start (training, packaging) plus the worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from atomtune.baselines.nequip_scratch import MONITOR, NequipScratchSpec, least_squares_e0s, train
from atomtune.envs import build
from atomtune.exceptions import AtomtuneError
from emt_data import emt_structures

pytestmark = pytest.mark.slow
#: Two epochs of an 8-feature NequIP on 16 EMT cells: about a minute on the loaded 2-core machine, a real nequip-train.
TINY = {"num_features": 8, "radial_mlp_width": 8, "max_epochs": 2, "patience": None, "seed": 7}


@pytest.fixture(scope="module")
def splits():
    if not build.is_ready("nequip"):
        pytest.skip("the nequip environment is not built: `atomtune env build nequip`")
    structures = emt_structures(22, seed=11)
    return structures[:16], structures[16:20], structures[20:]


@pytest.fixture(scope="module")
def scratch_run(splits, tmp_path_factory):
    train_set, valid_set, test_set = splits
    out = tmp_path_factory.mktemp("nequip-scratch")
    return train(train_set, out, NequipScratchSpec(**TINY), valid_data=valid_set, test_data=test_set, threads=1,
                 progress=False)


def test_package_is_a_nequip_model_with_the_trainers_own_validation_errors(scratch_run, splits):
    from atomtune.models import load_potential
    from atomtune.tasks import errors

    record = json.loads((Path(scratch_run.model_file).parent / "baseline.json").read_text())
    assert record["epochs_run"] == 2 and record["wall_seconds"] > 0 and record["nequip_version"].startswith("0.19")
    assert Path(record["commands"][0][0]).name == "nequip-train" and record["n_train"] == 16
    kept = next(row for row in record["history"] if row["epoch"] == record["best_epoch"])
    assert kept[MONITOR] == min(row[MONITOR] for row in record["history"])
    # what nequip's trainer logged for the kept epoch is what the package gives through atomtune (same weights, EMA)
    valid = scratch_run.valid_errors
    assert valid["force_mae_mev_per_a"] == pytest.approx(1000 * kept["val0_epoch/forces_mae"], rel=1e-6)
    assert valid["energy_mae_mev_per_atom"] == pytest.approx(1000 * kept["val0_epoch/per_atom_energy_mae"], rel=1e-6)

    potential = load_potential(f"nequip:{scratch_run.model_file}", dtype="float64", trust=True)
    try:
        assert potential.supported_elements == {"Ni", "Cu", "Al"}
        again = errors.metrics(errors.run(splits[2], potential, progress=False))
    finally:
        potential.close()
    assert again["energy_rmse_mev_per_atom"] == pytest.approx(scratch_run.test_errors["energy_rmse_mev_per_atom"])


def test_e0s_are_fitted_to_the_training_data(scratch_run, splits):
    config = yaml.safe_load((Path(scratch_run.model_file).parent / "nequip_run" / "config.yaml").read_text())
    shifts = config["training_module"]["model"]["per_type_energy_shifts"]
    elements = config["training_module"]["model"]["type_names"]
    assert shifts == dict(zip(elements, least_squares_e0s(splits[0], elements)))
    assert scratch_run.e0s_ev == shifts
    counts = np.array([[a.get_chemical_symbols().count(e) for e in elements] for a in splits[0]])
    energies = np.array([a.get_potential_energy() for a in splits[0]])
    residual = energies - counts @ np.array([shifts[e] for e in elements])
    assert np.abs(counts.T @ residual).max() < 1e-6  # the least-squares normal equations hold


def test_bad_input_is_refused_before_training(splits, tmp_path):
    train_set, valid_set, _ = splits
    gold = emt_structures(2, seed=3, elements=("Au",))
    with pytest.raises(AtomtuneError, match="Au, which no training structure has"):
        train(train_set, tmp_path / "a", NequipScratchSpec(**TINY), valid_data=list(valid_set) + gold, progress=False)
    with pytest.raises(AtomtuneError, match="e0s"):
        NequipScratchSpec(e0s="isolated")
    with pytest.raises(AtomtuneError, match="ran past max_wall_seconds"):
        train(train_set, tmp_path / "b", NequipScratchSpec(**{**TINY, "max_wall_seconds": 1.0}),
              valid_data=valid_set, progress=False)
