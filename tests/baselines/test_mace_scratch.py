"""From-scratch MACE: what mace_run_train gives directly, saved as a model directory that loads without trust."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from atomtune.baselines.mace_scratch import MaceScratchSpec, mace_run_train_command, train
from atomtune.exceptions import AtomtuneError
from emt_data import emt_structures

#: Two epochs of an 8-channel MACE on 16 EMT cells: seconds, yet a real mace_run_train run.
TINY = dict(num_channels=8, max_L=1, r_max=4.0, correlation=2, max_num_epochs=2, batch_size=4, seed=7)


@pytest.fixture(scope="module")
def splits():
    structures = emt_structures(22, seed=11)
    return structures[:16], structures[16:20], structures[20:]


@pytest.fixture(scope="module")
def scratch_run(splits, tmp_path_factory):
    train_set, valid_set, test_set = splits
    out = tmp_path_factory.mktemp("scratch")
    return train(train_set, out, MaceScratchSpec(**TINY), valid_data=valid_set, test_data=test_set, threads=1,
                 progress=False)


def test_directory_is_a_model_like_any_other(scratch_run, splits):
    from atomtune.models import load_potential
    from atomtune.tasks import errors

    potential = load_potential(scratch_run.model_dir, dtype="float64")  # no trust needed: tensors + JSON
    assert potential.backbone == "mace" and potential.supported_elements == {"Ni", "Cu", "Al"}
    potential_dir = Path(scratch_run.model_dir)
    record = json.loads((potential_dir / "baseline.json").read_text())
    assert record["epochs_run"] == 2 and record["wall_seconds"] > 0 and "--max_num_epochs=2" in record["command"]
    history = json.loads((potential_dir / "atomtune.json").read_text())["training_history"][-1]
    assert history["baseline"] == "mace-scratch" and history["spec"]["num_channels"] == 8
    valid = errors.metrics(errors.run(splits[1], potential, progress=False))
    assert valid["energy_rmse_mev_per_atom"] == pytest.approx(scratch_run.valid_errors["energy_rmse_mev_per_atom"])


@pytest.mark.slow  # a second mace_run_train run (~20 s idle, ~45 s on the loaded shared machine)
def test_same_errors_as_mace_run_train_run_directly(scratch_run, splits, tmp_path):
    """The same settings typed by hand into mace_run_train give the same model (to noise) as the baseline."""
    from ase.io import write
    from mace.calculators import MACECalculator

    from atomtune.models import load_potential

    train_set, valid_set, _ = splits
    for name, structures in (("train", train_set), ("valid", valid_set)):
        frames = []
        for atoms in structures:
            frame = atoms.copy()
            frame.info["REF_energy"] = atoms.get_potential_energy()
            frame.arrays["REF_forces"] = atoms.get_forces()
            frame.info["REF_stress"] = atoms.get_stress()
            frames.append(frame)
        write(tmp_path / f"{name}.xyz", frames)
    command = mace_run_train_command() + [
        "--name=direct", "--seed=7", f"--train_file={tmp_path / 'train.xyz'}", f"--valid_file={tmp_path / 'valid.xyz'}",
        "--model=MACE", "--r_max=4.0", "--hidden_irreps=8x0e+8x1o", "--num_interactions=2", "--correlation=2",
        "--max_num_epochs=2", "--patience=20", "--batch_size=4", "--valid_batch_size=8", "--lr=0.01", "--loss=weighted",
        "--energy_weight=1.0", "--forces_weight=100.0", "--E0s=average", "--energy_key=REF_energy",
        "--forces_key=REF_forces", "--stress_key=REF_stress", "--compute_stress=True", "--stress_weight=1.0",
        "--default_dtype=float64", "--eval_interval=1", "--device=cpu", f"--work_dir={tmp_path}", "--save_cpu",
    ]
    subprocess.run(command, check=True, cwd=tmp_path, capture_output=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    direct = MACECalculator(model_paths=str(tmp_path / "direct.model"), device="cpu", default_dtype="float64")
    direct_errors, baseline_errors = [], []
    baseline = load_potential(scratch_run.model_dir, dtype="float64").calculator()
    for atoms in valid_set:
        reference = atoms.get_potential_energy() / len(atoms)
        for calculator, sink in ((direct, direct_errors), (baseline, baseline_errors)):
            work = atoms.copy()
            work.calc = calculator
            sink.append(work.get_potential_energy() / len(atoms) - reference)
    direct_rmse = float(np.sqrt(np.mean(np.square(direct_errors)))) * 1000
    assert direct_rmse == pytest.approx(scratch_run.valid_errors["energy_rmse_mev_per_atom"], rel=1e-4, abs=1e-3)
    np.testing.assert_allclose(baseline_errors, direct_errors, atol=1e-6)


def test_bad_input(tmp_path):
    with pytest.raises(AtomtuneError, match="name"):
        MaceScratchSpec(name="my model")
    with pytest.raises(AtomtuneError, match="loss"):
        MaceScratchSpec(loss="l2")
    structures = emt_structures(6, seed=12)
    for atoms in structures:  # energies and forces only
        atoms.calc.results.pop("stress")
    with pytest.raises(AtomtuneError, match="stress labels"):
        train(structures, tmp_path / "s", MaceScratchSpec(loss="stress", **TINY),
              progress=False)
    with pytest.raises(AtomtuneError, match="empty"):
        train([], tmp_path / "e", MaceScratchSpec(**TINY), progress=False)
