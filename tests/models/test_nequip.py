"""NequIP in its own environment, offline: a tiny NequIP trained with nequip's own trainer (``nequip-train``) and packaged
with ``nequip-package`` loads through the same registry path as a downloaded package, agrees with nequip's own ASE
calculator, and is used from the main environment through the worker with the same numbers.

Needs the nequip environment (``atomtune env build nequip``; CI builds it in scripts/setup.sh when ATOMTUNE_BUILD_ENVS
names it). All tests here are slow: every call into the environment starts a Python with torch and nequip.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from family_env import FamilyEnvironment, check_socket_steps, finetune_in_environment

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

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=10, seed=5)
    base = f"nequip:{tiny_nequip_package}"
    out = tmp_path / f"ft-{strategy}"
    finetune_in_environment("nequip", base, structures, {"strategy": strategy, "freeze_depth": 1}, out, trust=True)
    tuned = load_potential(str(out), trust=True)  # a saved nequip directory, seen from the main environment
    assert isinstance(tuned, WorkerModel)
    before = load_potential(base, trust=True).predict(structures[7:])
    after = tuned.predict(structures[7:])
    assert any(a["energy"] != b["energy"] for a, b in zip(before, after))


def _rotated(atoms, rotation):
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    rotated.positions = atoms.positions @ rotation.T
    return rotated


#: a tiny Allegro (tests/allegro_tiny.yaml: allegro 0.8's AllegroModel) trained by nequip-train and packaged
ALLEGRO = FamilyEnvironment(
    "nequip", sources=("nequip_tiny.py", "allegro_tiny.yaml"), model="tiny.nequip.zip", name="allegro",
    build_arguments=("allegro_tiny.yaml",),
)


@pytest.fixture(scope="session")
def tiny_allegro_package(nequip_python, pytestconfig) -> Path:
    return ALLEGRO.tiny_model(pytestconfig)


def test_lora_finetune_on_nequip_runs_through_the_one_trainer(tiny_nequip_package, tmp_path):
    """LoRA (e3nn Linear paths + scalar MLPs) in the environment: few trainable parameters, the forces move (an E0
    shift cannot do that), the merged save reloads from the main environment with the Trainer's own final errors, and
    the tuned model stays rotation-invariant / -equivariant (float64)."""
    import numpy as np
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import WorkerModel
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=10, seed=5)
    base = f"nequip:{tiny_nequip_package}"
    out = tmp_path / "ft-lora"
    result = finetune_in_environment("nequip", base, structures, {"strategy": "lora", "lora_rank": 2}, out, trust=True)
    counts = result["metrics"]["parameters"]
    assert 0 < counts["trainable"] < counts["total"] / 4
    tuned = load_potential(str(out), trust=True)
    assert isinstance(tuned, WorkerModel)
    valid = structures[7:]
    rotation = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    before = load_potential(base, trust=True).predict(valid)
    predicted = tuned.predict(valid + [_rotated(atoms, rotation) for atoms in valid])  # one worker start
    after, rotated = predicted[: len(valid)], predicted[len(valid) :]
    assert max(float(np.abs(a["forces"] - b["forces"]).max()) for a, b in zip(before, after)) > 1e-6
    energy_mae = np.mean([abs(r["energy"] - s.get_potential_energy()) / len(s) for r, s in zip(after, valid)]) * 1e3
    final = result["metrics"]["final"]["valid"]["energy_mae_mev_per_atom"]
    assert energy_mae == pytest.approx(final, rel=1e-9, abs=1e-9)  # the merged save = the model the Trainer scored
    for plain, turned, atoms in zip(after, rotated, valid):
        assert abs(plain["energy"] - turned["energy"]) / len(atoms) <= 1e-5
        np.testing.assert_allclose(plain["forces"] @ rotation.T, turned["forces"], atol=1e-5)


@pytest.mark.parametrize("family", ["nequip", "allegro"])
def test_lora_stays_equivariant_and_merges_into_a_plain_nequip_model(family, nequip_python, request):
    """Adapters set to a large random update (not zero): energy invariant, forces and stress rotate with the cell to
    1e-5 in float64, while the update and the rotation each change the predictions; merge leaves no parametrization and
    the saved model reloads with the same numbers."""
    package = request.getfixturevalue("tiny_nequip_package" if family == "nequip" else "tiny_allegro_package")
    result = NEQUIP.result("nequip_lora.py", package)
    # NequIP: e3nn Linear paths and scalar MLPs; Allegro: its scalar MLPs (its tensor track has no e3nn Linear)
    assert result["kinds"] == (["e3nn_linear", "e3nn_mlp"] if family == "nequip" else ["e3nn_mlp"])
    assert 0 < result["trainable"] < result["total"] / 4 and result["dtype"] == "torch.float64"
    assert result["lora_changed_energy_ev"] > 1e-3 and result["rotation_changed_forces"] > 1e-3
    assert result["energy_rotation_error_ev_per_atom"] <= 1e-5
    assert result["force_rotation_error_ev_per_a"] <= 1e-5
    assert result["stress_rotation_error_ev_per_a3"] <= 1e-5
    assert result["merged_plain"]
    assert result["reload_energy_error_ev"] <= 1e-10 and result["reload_force_error_ev_per_a"] <= 1e-10


def test_allegro_adapter_agrees_with_nequips_own_calculator(nequip_python, tiny_allegro_package):
    result = ALLEGRO.agreement(tiny_allegro_package)
    assert result["energy_error_ev_per_atom"] <= 1e-5
    assert result["force_error_ev_per_a"] <= 1e-4
    assert result["stress_error_ev_per_a3"] <= 1e-5
    assert result["blocks"] == ["embedding", "interaction_0", "readout"]  # Allegro's layers are one module
    assert result["all_parameters_in_blocks"] and result["reload_identical"]


@pytest.mark.parametrize("strategy", ["full", "freeze", "lora"])
def test_finetune_runs_on_allegro(tiny_allegro_package, strategy, tmp_path):
    import numpy as np
    from mace_tiny import emt_training_structures

    from atomtune.envs.worker import run_unit
    from atomtune.models.registry import load_potential

    structures = emt_training_structures(count=8, seed=6)
    base = f"nequip:{tiny_allegro_package}"
    out = tmp_path / f"allegro-{strategy}"
    result = run_unit(
        "finetune", family="nequip", model=base, train=structures[:5], valid=structures[5:], out=str(out),
        spec={"strategy": strategy, "epochs": 2, "freeze_depth": 1, "lora_rank": 2, "e0": False}, trust=True,
    )  # no E0 refit: the validation loss and forces move only if the trained weights do
    counts = result["metrics"]["parameters"]
    assert result["history"][-1]["epoch"] == 2 and 0 < counts["trainable"] <= counts["total"]
    assert result["history"][-1]["valid_loss"] < result["history"][0]["valid_loss"]
    if strategy != "full":
        assert counts["trainable"] < counts["total"]
    after = load_potential(str(out), trust=True).predict(structures[5:])  # the saved model, from the main environment
    assert len(after) == 3 and all(np.isfinite(record["forces"]).all() for record in after)
