"""UMA in its own environment, offline: a toy-size UMA built from fairchem's own config classes and saved as fairchem's own
inference checkpoint (tests/uma_tiny.py) loads through the same path as a downloaded checkpoint, agrees with fairchem's
own ASE calculator for two tasks, is used from the main environment through the worker, fine-tunes through the one
Trainer with every strategy, and bad inputs (gated checkpoint without credentials, untrusted or foreign files, altered
architecture) get their own errors.

Needs the uma environment (``atomtune env build uma``). All tests here are slow: every call into the environment starts a
Python that imports fairchem (about 10 s of CPU on its own).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_env import (
    EVERY_STRATEGY,
    FamilyEnvironment,
    check_socket_steps,
    finetune_in_environment,
)

pytestmark = pytest.mark.slow
#: fairchem's UMA forward is not bit-reproducible from run to run on CPU (its own FAIRChemCalculator differs by ~1e-7 eV
#: between two calls on the same structure, measured on the tiny model), so numbers from two processes agree to this.
RUN_TO_RUN_EV = 1e-6


UMA = FamilyEnvironment("uma", sources=("uma_tiny.py",), model="tiny-uma.pt", timeout=900)
uma_python, tiny_uma, in_environment_result = UMA.fixtures(tiny="tiny_uma")


def _agreement_structures():
    """The periodic structures uma_agreement.py predicts (its omat energies are ``in_environment_result``'s)."""
    from mace_tiny import emt_training_structures

    return emt_training_structures(count=8, seed=21)


def test_public_names_route_to_the_uma_environment():
    from atomtune.envs.worker import environment_route

    assert environment_route("uma-s-1p1") == ("uma", "uma-s-1p1")
    assert environment_route("uma-m-1p1:omol") == ("uma", "uma-m-1p1:omol")
    assert environment_route("uma:uma-s-1p1:omat") == ("uma", "uma-s-1p1:omat")
    assert environment_route("uma:./model.pt") == ("uma", "./model.pt")
    assert environment_route("uma-s-1p1x") is None  # not a listed name: the registry's did-you-mean answers


def test_adapter_agrees_with_fairchems_own_calculator(in_environment_result):
    result = in_environment_result
    for task in ("omat", "omol"):
        assert result[task]["energy_error_ev_per_atom"] <= 1e-5, task
        assert result[task]["force_error_ev_per_a"] <= 1e-4, task
        assert result[task]["stress_error_ev_per_a3"] <= 1e-5, task
    # the task is a real choice: omol has its own element references (+0.25 eV/atom in the tiny model) and embedding
    assert all(abs(a - b) > 0.1 for a, b in zip(result["omat"]["energies"], result["omol"]["energies"]))
    assert result["blocks"] == ["embedding", "interaction_0", "interaction_1", "readout"]
    assert result["all_parameters_in_blocks"]
    assert result["reload_max_force_difference"] <= 1e-5  # JSON architecture + tensors, loaded without --trust-model


def test_lora_adapts_linear_layers_and_keeps_uma_equivariant(in_environment_result):
    result = in_environment_result
    assert result["lora_layers"] > 0 and result["lora_changes_energy"]
    base_energy, base_forces = result["rotation_error_base"]
    lora_energy, lora_forces = result["rotation_error_lora"]
    # UMA is equivariant up to float32 rounding; LoRA's updates on its linear layers (radial networks, the energy MLP,
    # embedding mixers) keep it so: a rotated cell gives the same energy and rotated forces to the same level.
    assert base_energy < 1e-5 and lora_energy < 1e-5
    assert base_forces < 1e-4 and lora_forces < 1e-4


def test_bad_inputs_get_their_own_errors(in_environment_result):
    errors = in_environment_result["errors"]
    for case in ("gated", "no_credentials", "no_network"):
        assert errors[case].startswith("GatedCheckpointError"), errors[case]
        assert "hf auth login" in errors[case] and "HF_TOKEN" in errors[case], errors[case]
    assert "gated" in errors["gated"] and "not in fairchem's cache" in errors["no_network"]
    assert errors["untrusted"].startswith("UnsafeFileError") and "--trust-model" in errors["untrusted"]
    assert errors["tensors_only"].startswith("ModelNotFoundError") and "holds a dict" in errors["tensors_only"]
    assert errors["not_torch"].startswith("ModelNotFoundError") and "not a fairchem inference" in errors["not_torch"]
    assert errors["misspelled"].startswith("ModelNotFoundError") and "Did you mean uma-s-1p1" in errors["misspelled"]
    assert errors["altered_architecture"].startswith("ModelNotFoundError") and "os.system" in errors["altered_architecture"]
    assert errors["isolated_atom"].startswith("AtomtuneError") and "isolated single atom" in errors["isolated_atom"]


def test_gated_checkpoint_without_network_reaches_the_main_process_as_one_error(uma_python, tmp_path, monkeypatch):
    """The real download path (fairchem's pretrained_mlip → huggingface_hub) with Hugging Face offline and an empty
    cache: the worker's error comes back with its class and the credential step."""
    from atomtune.envs.worker import run_unit
    from atomtune.models.uma import GatedCheckpointError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FAIRCHEM_CACHE_DIR", str(tmp_path / "fairchem"))
    with pytest.raises(GatedCheckpointError, match="hf auth login"):
        run_unit("describe", family="uma", model="uma-s-1p1")


def test_main_environment_uses_the_same_model_through_the_worker(tiny_uma, in_environment_result):
    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = _agreement_structures()
    model = load_potential(f"uma:{tiny_uma}", trust=True)
    assert isinstance(model, WorkerModel) and model.family == "uma"
    predicted = model.predict(structures, batch_size=3)
    np.testing.assert_allclose([r["energy"] for r in predicted], in_environment_result["omat"]["energies"],
                               rtol=0, atol=RUN_TO_RUN_EV)
    check_socket_steps(model, structures[0], predicted[0], energy_atol=RUN_TO_RUN_EV, forces_atol=1e-5,
                       stress_atol=1e-6)


@EVERY_STRATEGY
def test_finetune_runs_in_the_environment_through_the_one_trainer(tiny_uma, in_environment_result, spec, tmp_path):
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    out = tmp_path / f"ft-{spec['strategy']}"
    structures = emt_training_structures(count=10, seed=5)
    result = finetune_in_environment("uma", f"uma:{tiny_uma}", structures, spec, out, trust=True)
    saved = json.loads((out / "atomtune.json").read_text())
    assert saved["backbone"] == "uma" and saved["weights"]["task"] == "omat"
    assert (out / "architecture.json").is_file() and (out / "weights.pt").is_file()
    if spec.get("e0"):
        assert saved["element_energy_shift"] and set(saved["element_energy_shift"]) <= {"Ni", "Cu", "Al"}
    if spec["strategy"] == "full":
        tuned = load_potential(str(out))  # a saved UMA directory, seen from the main environment: no trust needed
        assert isinstance(tuned, WorkerModel)
        after = tuned.predict(_agreement_structures(), batch_size=3)
        assert all(abs(a["energy"] - before) > 1e-4 for a, before in zip(after, in_environment_result["omat"]["energies"]))
    else:
        assert result["history"][-1]["valid_loss"] != result["history"][0]["valid_loss"]
