"""NequIP in its own environment, offline: a tiny NequIP trained with nequip's own trainer (``nequip-train``) and packaged
with ``nequip-package`` loads through the same registry path as a downloaded package, agrees with nequip's own ASE
calculator, and is used from the main environment through the worker with the same numbers.

Needs the nequip environment (``atomtune env build nequip``; CI builds it in scripts/setup.sh when ATOMTUNE_BUILD_ENVS
names it). All tests here are slow: every call into the environment starts a Python with torch and nequip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from family_env import FamilyEnvironment, check_socket_steps

pytestmark = pytest.mark.slow
NEQUIP = FamilyEnvironment("nequip", sources=("nequip_tiny.py", "nequip_tiny.yaml"), model="tiny.nequip.zip")
nequip_python, tiny_nequip_package, in_environment_result = NEQUIP.fixtures(tiny="tiny_nequip_package")


def test_adapter_agrees_with_nequips_own_calculator(in_environment_result):
    assert in_environment_result["energy_error_ev_per_atom"] <= 1e-5
    assert in_environment_result["force_error_ev_per_a"] <= 1e-4
    assert in_environment_result["stress_error_ev_per_a3"] <= 1e-5
    assert in_environment_result["blocks"] == ["embedding", "interaction_0", "interaction_1", "readout"]
    assert in_environment_result["all_parameters_in_blocks"]
    assert in_environment_result["reload_identical"]


def test_main_environment_uses_the_same_model_through_the_worker(tiny_nequip_package, in_environment_result):
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=21)
    model = load_potential(f"nequip:{tiny_nequip_package}", trust=True)
    assert isinstance(model, WorkerModel)
    predicted = model.predict(structures, batch_size=3)
    assert [record["energy"] for record in predicted] == in_environment_result["energies"]  # bit for bit
    check_socket_steps(model, structures[0], predicted[0], energy_atol=1e-8, forces_atol=1e-8)


def test_untrusted_package_and_wrong_family_file_are_refused_with_their_own_errors(tiny_nequip_package, tmp_path):
    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import ModelNotFoundError
    from atomtune.loading import UnsafeFileError

    with pytest.raises(UnsafeFileError, match="trust-model"):
        run_unit("predict", family="nequip", model=f"nequip:{tiny_nequip_package}", structures=[])
    not_nequip = tmp_path / "model.nequip.zip"
    not_nequip.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: not a nequip package
    with pytest.raises(ModelNotFoundError, match="not a nequip model package"):
        run_unit("predict", family="nequip", model=f"nequip:{not_nequip}", structures=[], trust=True)


@pytest.mark.parametrize("strategy", ["full", "freeze"])
def test_finetune_runs_in_the_environment_through_the_one_trainer(tiny_nequip_package, strategy, tmp_path):
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel, run_unit
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=10, seed=5)
    base = f"nequip:{tiny_nequip_package}"
    out = tmp_path / f"ft-{strategy}"
    result = run_unit(
        "finetune", family="nequip", model=base, train=structures[:7], valid=structures[7:], out=str(out),
        spec={"strategy": strategy, "epochs": 2, "freeze_depth": 1}, trust=True,
    )
    assert Path(result["out"]) == out and result["history"][-1]["epoch"] == 2  # epoch 0: the model before training
    tuned = load_potential(str(out), trust=True)  # a saved nequip directory, seen from the main environment
    assert isinstance(tuned, WorkerModel)
    before = load_potential(base, trust=True).predict(structures[7:])
    after = tuned.predict(structures[7:])
    assert any(a["energy"] != b["energy"] for a, b in zip(before, after))


def test_lora_on_nequip_says_which_strategy_to_use(tiny_nequip_package, tmp_path):
    """nequip's layers are its own classes (loaded from the package by torch.package), not e3nn's or torch's Linear,
    so atomtune's LoRA finds nothing to adapt yet; that must be one clear error, not a silent full fine-tune."""
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import run_unit
    from atomtune.exceptions import AtomtuneError

    structures = emt_training_structures(count=4, seed=5)
    with pytest.raises(AtomtuneError, match="LoRA found no layer.*use --strategy freeze"):
        run_unit(
            "finetune", family="nequip", model=f"nequip:{tiny_nequip_package}", train=structures[:3],
            valid=structures[3:], out=str(tmp_path / "ft-lora"), spec={"strategy": "lora", "epochs": 1}, trust=True,
        )
