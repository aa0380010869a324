"""PET (metatrain) in its own environment, offline: a tiny PET trained with metatrain's own trainer (``mtt train``) loads
through the same registry path as a checkpoint upet downloads (a metatrain ``.ckpt``; also the exported ``.pt``), agrees
with metatomic's own ASE calculator, is used from the main environment through the worker with the same numbers, and
fine-tunes with every strategy (full, freeze, LoRA, E0) through the one Trainer inside its environment.

Needs the pet environment (``atomtune env build pet``; CI builds it when ATOMTUNE_BUILD_ENVS names it). All tests here
are slow: every call into the environment starts a Python with torch and metatrain.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from family_env import FamilyEnvironment, check_socket_steps

pytestmark = pytest.mark.slow
#: PET is not rotation invariant by construction (it learns invariance, from rotational augmentation in metatrain's
#: trainer). The tiny test model changes its energy by 1.8 meV/atom under a random rotation (measured, the same through
#: metatomic's calculator); a foundation PET is far better trained, but this model is what the test can check against.
PET_ROTATION_TOLERANCE_EV_PER_ATOM = 5e-3


#: the tiny checkpoint (tests/pet_tiny.py trains it with ``mtt train``) and its export beside it
PET = FamilyEnvironment("pet", sources=("pet_tiny.py", "pet_tiny.yaml"), model="tiny.ckpt", also=("tiny.pt",))
pet_python, tiny_pet_checkpoint, in_environment_result = PET.fixtures(tiny="tiny_pet_checkpoint")


def test_adapter_agrees_with_metatomics_own_calculator(in_environment_result):
    result = in_environment_result
    assert result["energy_error_ev_per_atom"] <= 1e-5
    assert result["force_error_ev_per_a"] <= 1e-4
    assert result["stress_error_ev_per_a3"] <= 1e-5
    assert result["exported_energy_error_ev_per_atom"] <= 1e-5  # the same model loaded from its exported .pt
    assert result["exported_force_error_ev_per_a"] <= 1e-4
    assert result["blocks"] == ["embedding", "interaction_0", "interaction_1", "readout"]
    assert result["all_parameters_in_blocks"]
    assert result["reload_identical"]
    # PET's own level of rotational invariance, identical through the adapter and through metatomic's calculator
    assert result["rotation_energy_change_ev_per_atom"] <= PET_ROTATION_TOLERANCE_EV_PER_ATOM
    assert result["rotation_energy_change_ev_per_atom"] == pytest.approx(
        result["native_rotation_energy_change_ev_per_atom"], abs=1e-9
    )


def test_main_environment_uses_the_same_model_through_the_worker(tiny_pet_checkpoint, in_environment_result):
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=21)
    model = load_potential(f"pet:{tiny_pet_checkpoint}", trust=True)
    assert isinstance(model, WorkerModel)
    predicted = model.predict(structures, batch_size=3)
    assert [record["energy"] for record in predicted] == in_environment_result["energies"]  # bit for bit
    check_socket_steps(model, structures[0], predicted[0], energy_atol=1e-8, forces_atol=1e-8)


def test_public_names_route_to_the_pet_environment():
    from atomtune.envs.worker import environment_route

    assert environment_route("pet-mad") == ("pet", "pet-mad")
    assert environment_route("pet-omad") == ("pet", "pet-omad")
    assert environment_route("pet:pet-mad-s") == ("pet", "pet-mad-s")


def test_public_name_resolves_to_the_newest_checkpoint_in_huggingface_hubs_cache(tiny_pet_checkpoint,
                                                                                   in_environment_result, tmp_path,
                                                                                   monkeypatch):
    """``pet-mad`` offline: upet's resolver needs the hub, so the newest cached ``models/pet-mad-s-v*.ckpt`` of
    ``lab-cosmo/upet`` (huggingface_hub's cache layout) is the checkpoint; named checkpoints need no --trust-model."""
    import shutil

    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import ModelNotFoundError

    snapshot = tmp_path / "hub" / "models--lab-cosmo--upet" / "snapshots" / "0123abcd" / "models"
    snapshot.mkdir(parents=True)
    shutil.copyfile(tiny_pet_checkpoint, snapshot / "pet-mad-s-v9.9.9.ckpt")
    (snapshot / "pet-mad-s-v1.0.0.ckpt").write_bytes(b"an older version: must not be chosen")
    (snapshot / "pet-mad-xs-v10.0.0.ckpt").write_bytes(b"another size: must not be chosen for the default size s")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    structures = emt_training_structures(count=8, seed=21)
    predicted = run_unit("predict", family="pet", model="pet-mad", structures=structures, batch_size=3)
    assert [record["energy"] for record in predicted] == in_environment_result["energies"]
    with pytest.raises(ModelNotFoundError, match="needs internet on first use"):
        run_unit("describe", family="pet", model="pet-omad")  # nothing cached for it


def test_untrusted_wrong_family_and_misspelled_models_are_refused_with_their_own_errors(tiny_pet_checkpoint, tmp_path):
    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import ModelNotFoundError
    from atomtune.loading import UnsafeFileError

    with pytest.raises(UnsafeFileError, match="trust-model"):
        run_unit("predict", family="pet", model=f"pet:{tiny_pet_checkpoint}", structures=[])
    not_pet = tmp_path / "model.ckpt"
    subprocess.run([sys.executable, "-c", f"import torch; torch.save({{'weights': torch.zeros(3)}}, {str(not_pet)!r})"],
                   check=True)
    with pytest.raises(ModelNotFoundError, match="not a PET model"):
        run_unit("predict", family="pet", model=f"pet:{not_pet}", structures=[], trust=True)
    with pytest.raises(ModelNotFoundError, match="Did you mean pet-mad"):
        run_unit("describe", family="pet", model="pet:pet-mda")


def _rotated(atoms, seed: int):
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=seed).as_matrix()
    turned = atoms.copy()
    turned.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=False)
    turned.positions = atoms.positions @ rotation.T
    return turned


@pytest.mark.parametrize(
    "label, spec",
    [
        ("full", {"strategy": "full", "e0": False}),
        ("freeze", {"strategy": "freeze", "freeze_depth": 1, "e0": False}),
        ("lora", {"strategy": "lora", "lora_rank": 8, "e0": False}),
        ("e0", {"strategy": "freeze", "freeze_depth": 1, "e0": True}),
    ],
)
def test_finetune_runs_in_the_environment_through_the_one_trainer(tiny_pet_checkpoint, label, spec, tmp_path):
    """``FinetuneSpec.fit`` from the main environment (what ``atomtune finetune --model pet:…`` calls) runs the fit in
    the pet environment and hands back the saved model."""
    import torch
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.finetune.spec import FinetuneSpec

    structures = emt_training_structures(count=10, seed=5)
    out = tmp_path / f"ft-{label}"
    result = FinetuneSpec(epochs=2, learning_rate=3e-3, **spec).fit(
        f"pet:{tiny_pet_checkpoint}", structures[:7], structures[7:], out, progress=False, trust=True
    )
    assert result.out == out and result.history[-1]["epoch"] == 2  # epoch 0: the model before training
    assert result.history[1]["valid_loss"] != result.history[0]["valid_loss"]  # the first epoch moved the model
    assert isinstance(result.potential, WorkerModel)  # the saved PET directory, seen from the main environment
    weights = torch.load(out / "weights.pt", weights_only=True)  # tensors only
    assert not any("parametrizations" in key or "lora" in key.lower() for key in weights)  # LoRA merged on save
    metadata = json.loads((out / "atomtune.json").read_text())
    assert metadata["backbone"] == "pet" and (out / "architecture.ckpt").is_file()
    # E0 re-estimation: a per-element shift on top of PET's own composition model, only when asked for
    assert bool(metadata["element_energy_shift"]) == (label == "e0")
    assert set(metadata["element_energy_shift"]) <= {"Ni", "Cu", "Al"}
    trainable = result.metrics["parameters"]["trainable"]
    assert (trainable == result.metrics["parameters"]["total"]) == (label == "full")
    if label == "lora":
        assert metadata["training_history"][-1]["strategy"]["lora_rank"] == 8
        # a LoRA update leaves PET's architecture as it was: its energy stays as rotation invariant as PET's own
        valid = structures[7:]
        predicted = result.potential.predict(valid + [_rotated(atoms, seed=k) for k, atoms in enumerate(valid)])
        change = max(abs(a["energy"] - b["energy"]) / len(atoms)
                     for atoms, a, b in zip(valid, predicted[: len(valid)], predicted[len(valid) :]))
        assert change <= PET_ROTATION_TOLERANCE_EV_PER_ATOM
