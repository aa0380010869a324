"""MatterSim in its own environment, offline: a tiny M3Gnet of mattersim's own classes, trained with mattersim's own
trainer and saved in mattersim's own checkpoint format (tests/mattersim_tiny.py), loads through the same path as a
downloaded checkpoint, agrees with mattersim's own ASE calculator, is used from the main environment through the worker
with the same numbers, and fine-tunes through atomtune's one Trainer (full, freeze, LoRA, E0) inside the environment.

Needs the mattersim environment (``atomtune env build mattersim``; CI builds it in scripts/setup.sh when
ATOMTUNE_BUILD_ENVS names it). All tests here are slow: every call into the environment starts a Python with torch and
mattersim.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_env import FamilyEnvironment, check_socket_steps, finetune_in_environment

pytestmark = pytest.mark.slow
MATTERSIM = FamilyEnvironment("mattersim", sources=("mattersim_tiny.py", "mace_tiny.py"), model="tiny-mattersim.pth")
mattersim_python, tiny_mattersim_checkpoint, in_environment_result = MATTERSIM.fixtures(
    tiny="tiny_mattersim_checkpoint"
)


def test_adapter_agrees_with_mattersims_own_calculator(in_environment_result):
    result = in_environment_result
    assert result["energy_error_ev_per_atom"] <= 1e-5
    assert result["force_error_ev_per_a"] <= 1e-4
    assert result["stress_error_ev_per_a3"] <= 1e-5
    # mattersim's Potential.forward reports GPa (values ~160x the eV/Å³ ones): the adapter converts, with ASE's sign
    assert result["stress_gpa_error_ev_per_a3"] <= 1e-5
    assert result["stress_gpa_scale"] > 50 * result["max_stress_ev_per_a3"] > 0
    assert 32 in result["n_atoms"] and len(set(result["n_atoms"])) > 1
    assert result["blocks"] == ["embedding", "interaction_0", "interaction_1", "readout"]
    assert result["all_parameters_in_blocks"]
    assert result["supported_elements"] == ["Al", "Cu", "Ni"]  # from the normaliser fitted on Ni/Cu/Al only
    assert result["reload_identical"]
    assert result["weights_metadata"]["model_args"]["num_blocks"] == 2  # the architecture as JSON, not a pickle
    assert result["dtype"] == "torch.float32"


def test_public_checkpoint_names_resolve_to_mattersims_own_cache(in_environment_result):
    """The download itself needs the internet; where the file lands (and is found again offline) is mattersim's own
    cache folder. The tiny model stands in for the file there: this checks the layout, not MatterSim-v1."""
    cache = in_environment_result["cache"]
    assert cache["path_relative_to_home"] == ".local/mattersim/pretrained_models/mattersim-v1.0.0-1M.pth"
    assert not cache["available_before"] and cache["available_after"]
    assert cache["same_numbers"]  # mattersim:mattersim-v1.0.0-1m and the bare mattersim-v1.0.0-5m both load it


def test_main_environment_uses_the_same_model_through_the_worker(tiny_mattersim_checkpoint, in_environment_result):
    from mattersim_agreement import mixed_cells

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = mixed_cells()
    model = load_potential(f"mattersim:{tiny_mattersim_checkpoint}")
    assert isinstance(model, WorkerModel)
    predicted = model.predict(structures, batch_size=3)
    assert [record["energy"] for record in predicted] == in_environment_result["energies"]  # bit for bit
    check_socket_steps(model, structures[0], predicted[0], energy_atol=1e-6, forces_atol=1e-6, stress_atol=1e-6)


def test_bad_files_are_refused_with_their_own_errors(in_environment_result):
    refusals = in_environment_result["refusals"]
    # a mattersim checkpoint that also pickles a Python object: refused without trust, loaded with it
    assert refusals["untrusted_pickle"][0] == "UnsafeFileError" and "--trust-model" in refusals["untrusted_pickle"][1]
    assert refusals["trusted_pickle"][0] == "loaded" and np.isfinite(refusals["trusted_pickle"][1])
    assert refusals["other_family"][0] == "ModelNotFoundError"
    assert "not a MatterSim checkpoint" in refusals["other_family"][1]
    assert refusals["garbage"][0] == "CorruptFileError" and "not a readable MatterSim checkpoint" in refusals["garbage"][1]
    assert refusals["missing"][0] == "ModelNotFoundError" and "mattersim-v1.0.0-1m" in refusals["missing"][1]


def test_errors_in_the_environment_reach_the_main_process_with_their_class(tiny_mattersim_checkpoint, tmp_path):
    import argparse

    import torch
    from ase.build import bulk

    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import UnsupportedElementsError
    from atomtune.loading import UnsafeFileError

    content = torch.load(tiny_mattersim_checkpoint, weights_only=True)
    content["args"] = argparse.Namespace(lr=1e-3)
    pickled = tmp_path / "with-namespace.pth"
    torch.save(content, pickled)
    with pytest.raises(UnsafeFileError, match="trust-model"):
        run_unit("predict", family="mattersim", model=f"mattersim:{pickled}", structures=[])
    with pytest.raises(UnsupportedElementsError, match="Fe"):  # the tiny model knows Ni, Cu, Al only
        run_unit("predict", family="mattersim", model=f"mattersim:{tiny_mattersim_checkpoint}",
                 structures=[bulk("Fe", "bcc", a=2.87)])


def _shifted_labels(structures, offsets: dict[str, float]):
    """The same cells with energies moved by a per-element offset (eV/atom): another code's absolute energy scale."""
    from ase.calculators.singlepoint import SinglePointCalculator

    shifted = []
    for atoms in structures:
        copy = atoms.copy()
        energy = atoms.get_potential_energy() + sum(offsets[symbol] for symbol in atoms.get_chemical_symbols())
        copy.calc = SinglePointCalculator(copy, energy=energy, forces=atoms.get_forces(), stress=atoms.get_stress())
        shifted.append(copy)
    return shifted


@pytest.mark.parametrize("strategy", ["full", "freeze", "lora"])
def test_finetune_with_e0_runs_in_the_environment_through_the_one_trainer(tiny_mattersim_checkpoint, strategy,
                                                                          tmp_path):
    """Each strategy, with E0 re-estimation (on by default) moving the model onto labels several eV/atom away."""
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    offsets = {"Ni": -5.5, "Cu": -4.0, "Al": -3.25}
    structures = _shifted_labels(emt_training_structures(count=10, seed=5), offsets)
    out = tmp_path / f"ft-{strategy}"
    result = finetune_in_environment("mattersim", f"mattersim:{tiny_mattersim_checkpoint}", structures,
                                     {"strategy": strategy, "freeze_depth": 1, "lora_rank": 2}, out)
    history = result["history"]
    e0 = result["metrics"]["e0"]
    for symbol, value in offsets.items():  # the offsets plus the tiny model's own per-element error (~0.1-0.4 eV)
        assert e0["fitted_offsets"][symbol] == pytest.approx(value, abs=0.6)
    assert e0["energy_mae_mev_per_atom_before"] > 3000
    assert e0["energy_mae_mev_per_atom_after"] < 300
    parameters = json.loads((out / "metrics.json").read_text())["parameters"]
    if strategy == "full":
        assert parameters["trainable"] == parameters["total"]
    else:
        assert 0 < parameters["trainable"] < parameters["total"]
    saved = json.loads((out / "atomtune.json").read_text())
    assert saved["backbone"] == "mattersim" and set(saved["element_energy_shift"]) == set(offsets)
    assert isinstance(load_potential(str(out)), WorkerModel)  # a saved mattersim directory routes to the environment
    force_metrics = [key for key in history[0] if key.startswith("valid_forces")]
    assert force_metrics and any(history[0][key] != history[-1][key] for key in force_metrics)  # E0 moves no force
