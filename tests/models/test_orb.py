"""ORB in its own environment, offline: a small ORB v3 conservative model built by orb-models' own architecture function
and trained with ORB's own loss (tests/orb_tiny.py), saved as ORB saves checkpoints, loads through the same path as a
downloaded checkpoint (``pretrained.load_model``), agrees with ORB's own ASE calculator, is used from the main
environment through the worker with the same numbers, and fine-tunes through the one Trainer with every strategy.

Needs the orb environment (``atomtune env build orb``). All tests here are slow: every call into the environment starts a
Python with torch and orb-models.
"""

from __future__ import annotations

import argparse
import json

import pytest
from family_env import (
    EVERY_STRATEGY,
    FamilyEnvironment,
    check_socket_steps,
    finetune_in_environment,
)

pytestmark = pytest.mark.slow
ORB = FamilyEnvironment("orb", sources=("orb_tiny.py",), model=("tiny-architecture.json", "tiny.ckpt"), timeout=900)
orb_python, tiny_orb, in_environment_result = ORB.fixtures(tiny="tiny_orb")  # tiny_orb: (architecture JSON, checkpoint)


@pytest.fixture(scope="session")
def tiny_spec(tiny_orb) -> str:
    architecture, checkpoint = tiny_orb
    return f"orb:{architecture}@{checkpoint}"


def test_adapter_agrees_with_orbs_own_calculator(in_environment_result):
    result = in_environment_result
    assert result["energy_error_ev_per_atom"] <= 1e-5
    assert result["force_error_ev_per_a"] <= 1e-4
    assert result["stress_error_ev_per_a3"] <= 1e-5
    # ASE's finite differences: forces are −dE/dr and stress (1/V) dE/dε with ASE's sign, in eV/Å and eV/Å³
    assert result["numerical_force_error_ev_per_a"] <= 1e-5
    assert result["numerical_stress_error_ev_per_a3"] <= 1e-6
    assert result["float32_energy_error_ev_per_atom"] <= 1e-5
    assert result["blocks"] == ["embedding", "interaction_0", "interaction_1", "readout"]
    assert result["all_parameters_in_blocks"]
    assert result["reload_identical"]
    assert result["cache_lookup"] == [False, True]  # a public checkpoint is available once cached_path holds it


def test_main_environment_uses_the_same_model_through_the_worker(tiny_spec, in_environment_result):
    from ase import Atoms
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.exceptions import UnsupportedElementsError
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=21)
    model = load_potential(tiny_spec)
    assert isinstance(model, WorkerModel) and model.family == "orb"
    assert model.supported_elements == {"Ni", "Cu", "Al"} and model.cutoff == 6.0
    with pytest.raises(UnsupportedElementsError, match="Fe"):
        model.check_elements([Atoms("FeNi", positions=[[0, 0, 0], [2, 0, 0]])])
    predicted = model.predict(structures, batch_size=3)
    assert [record["energy"] for record in predicted] == in_environment_result["energies"]  # bit for bit
    check_socket_steps(model, structures[0], predicted[0], energy_atol=1e-8, forces_atol=1e-8)


def test_public_names_route_to_the_orb_environment_and_unknown_ones_get_did_you_mean(orb_python):
    from atomtune.envs.worker import WorkerModel, run_unit
    from atomtune.exceptions import AtomtuneError, ModelNotFoundError
    from atomtune.models.registry import load_potential

    model = load_potential("orb-v3-conservative-inf-omat")  # nothing downloads until the model is used
    assert isinstance(model, WorkerModel) and model.family == "orb"
    with pytest.raises(ModelNotFoundError, match="Did you mean orb:orb-v3-conservative-inf-omat"):
        run_unit("describe", family="orb", model="orb:orb-v3-conservative-inf-omt")
    with pytest.raises(AtomtuneError, match="direct ORB model.*conservative models only"):
        run_unit("describe", family="orb", model="orb:orb-v2")


def test_untrusted_pickle_and_wrong_family_files_are_refused_with_their_own_errors(tiny_orb, in_environment_result,
                                                                                      tmp_path):
    import torch

    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import ModelNotFoundError
    from atomtune.loading import UnsafeFileError

    architecture, checkpoint = tiny_orb
    state = torch.load(checkpoint, weights_only=True)
    pickled = tmp_path / "pickled.ckpt"  # a training checkpoint that carries a Python object besides the weights
    torch.save({"state_dict": state, "arguments": argparse.Namespace(lr=1e-3)}, pickled)
    with pytest.raises(UnsafeFileError, match="trust-model"):
        run_unit("describe", family="orb", model=f"orb:{architecture}@{pickled}")
    trusted = run_unit("predict", family="orb", model=f"orb:{architecture}@{pickled}", trust=True,
                       structures=_agreement_structures(), batch_size=3)
    assert [record["energy"] for record in trusted] == in_environment_result["energies"]  # the same weights

    other_family = tmp_path / "other.ckpt"  # tensors only, but not an ORB model's
    torch.save({"interaction.linear.weight": torch.zeros(4, 4)}, other_family)
    with pytest.raises(ModelNotFoundError, match="not an ORB checkpoint of this architecture"):
        run_unit("describe", family="orb", model=f"orb:{architecture}@{other_family}")
    with pytest.raises(ModelNotFoundError, match="holds weights only; name its architecture"):
        run_unit("describe", family="orb", model=f"orb:{checkpoint}")


def _agreement_structures():
    """The structures orb_agreement.py predicts (its float32 energies are ``in_environment_result["energies"]``)."""
    from mace_tiny import emt_training_structures

    return emt_training_structures(count=8, seed=21)


@EVERY_STRATEGY
def test_finetune_runs_in_the_environment_through_the_one_trainer(tiny_spec, in_environment_result, spec, tmp_path):
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    out = tmp_path / f"ft-{spec['strategy']}"
    finetune_in_environment("orb", tiny_spec, emt_training_structures(count=10, seed=5), spec, out)
    saved = json.loads((out / "atomtune.json").read_text())
    assert saved["backbone"] == "orb" and saved["weights"]["architecture"]["builder"] == "orb_v3_conservative_architecture"
    if spec.get("e0"):
        assert set(saved["element_energy_shift"]) <= {"Ni", "Cu", "Al"} and saved["element_energy_shift"]
    tuned = load_potential(str(out))  # a saved ORB directory, seen from the main environment
    assert isinstance(tuned, WorkerModel)
    after = tuned.predict(_agreement_structures(), batch_size=3)
    assert all(a["energy"] != before for a, before in zip(after, in_environment_result["energies"]))
