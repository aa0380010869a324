"""NequIP in its own environment, offline: a tiny NequIP trained with nequip's own trainer (``nequip-train``) and packaged
with ``nequip-package`` loads through the same registry path as a downloaded package, agrees with nequip's own ASE
calculator, and is used from the main environment through the worker with the same numbers.

Needs the nequip environment (``atomtune env build nequip``; CI builds it in scripts/setup.sh when ATOMTUNE_BUILD_ENVS
names it). All tests here are slow: every call into the environment starts a Python with torch and nequip.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from atomtune.envs import build

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def nequip_python() -> str:
    if not build.is_ready("nequip"):
        pytest.skip("the nequip environment is not built: `atomtune env build nequip`")
    return str(build.environment_python("nequip"))


@pytest.fixture(scope="session")
def tiny_nequip_package(nequip_python, pytestconfig) -> Path:
    """The tiny package, built once per helper source and environment spec (cached under pytest's cache)."""
    key = hashlib.sha256(
        (TESTS / "nequip_tiny.py").read_bytes() + (TESTS / "nequip_tiny.yaml").read_bytes()
        + build.family_spec("nequip").fingerprint().encode()
    ).hexdigest()[:12]
    directory = Path(pytestconfig.cache.mkdir(f"nequip-tiny-{key}"))
    package = directory / "tiny.nequip.zip"
    if not package.is_file():
        subprocess.run([nequip_python, str(TESTS / "nequip_tiny.py"), str(directory)], check=True, timeout=1800)
    return package


@pytest.fixture(scope="session")
def in_environment_result(nequip_python, tiny_nequip_package) -> dict:
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [nequip_python, str(TESTS / "models" / "nequip_agreement.py"), str(tiny_nequip_package)],
        capture_output=True, text=True, timeout=1800, env=environment, check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, completed.stdout[-2000:] + completed.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


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
    with model:
        atoms = structures[0].copy()
        atoms.calc = model  # step by step over the i-PI socket
        assert abs(atoms.get_potential_energy() - predicted[0]["energy"]) < 1e-8
        np.testing.assert_allclose(atoms.get_forces(), predicted[0]["forces"], atol=1e-8)


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
