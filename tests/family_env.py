"""What the tests of a family that lives in its own environment share (tests/models/test_<family>.py): skip unless the
environment is built, its Python, the tiny model built once by ``tests/<family>_tiny.py`` inside the environment and
cached in pytest's cache, and ``tests/models/<family>_agreement.py`` run inside the environment (its ``RESULT {json}``
line parsed).

    NEQUIP = FamilyEnvironment("nequip", sources=("nequip_tiny.py", "nequip_tiny.yaml"), model="tiny.nequip.zip")
    nequip_python, tiny_nequip_package, in_environment_result = NEQUIP.fixtures(tiny="tiny_nequip_package")

Importable from any test folder (``from family_env import FamilyEnvironment``), as emt_data.py is.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class FamilyEnvironment:
    """One family's environment as its tests use it.

    ``sources``: the files under tests/ the tiny model is built from, the helper script first (``python SCRIPT OUT
    *build_arguments`` writes the model into OUT); they and the environment spec's fingerprint key the cache folder
    ``<name>-tiny-<key>`` (``name``: the family unless given, for a second model of the family). ``model``: the file
    name (or names) the tests are handed, each a path in OUT, and what the agreement script is given; ``also``: other
    files the helper writes that must be there. ``timeout``: seconds for building the model and for each script run.
    """

    family: str
    sources: tuple[str, ...]
    model: str | tuple[str, ...]
    also: tuple[str, ...] = ()
    timeout: int = 1800
    name: str | None = None
    build_arguments: tuple[str, ...] = ()

    def python(self) -> str:
        """The environment's interpreter; the test is skipped, with the build command, where it is not built."""
        from atomtune.envs import build

        if not build.is_ready(self.family):
            pytest.skip(f"the {self.family} environment is not built: `atomtune env build {self.family}`")
        return str(build.environment_python(self.family))

    def tiny_model(self, pytestconfig) -> Path | tuple[Path, ...]:
        """The tiny model's path (or paths), built once per helper source and environment spec (cached under pytest's
        cache)."""
        from atomtune.envs import build

        python = self.python()
        key = hashlib.sha256(
            b"".join((TESTS / name).read_bytes() for name in self.sources)
            + build.family_spec(self.family).fingerprint().encode()
        ).hexdigest()[:12]
        directory = Path(pytestconfig.cache.mkdir(f"{self.name or self.family}-tiny-{key}"))
        names = (self.model,) if isinstance(self.model, str) else self.model
        if not all((directory / name).is_file() for name in (*names, *self.also)):
            completed = self._run(python, TESTS / self.sources[0], directory, *self.build_arguments)
            if completed.returncode != 0:
                pytest.fail(f"{self.sources[0]} failed:\n{completed.stdout[-2000:]}{completed.stderr[-4000:]}")
        paths = tuple(directory / name for name in names)
        return paths[0] if isinstance(self.model, str) else paths

    def agreement(self, model: Path | tuple[Path, ...]) -> dict:
        """The ``RESULT`` record of ``tests/models/<family>_agreement.py`` run in the environment on ``model``."""
        return self.result(f"{self.family}_agreement.py", *((model,) if isinstance(model, Path) else model))

    def result(self, script: str, *arguments) -> dict:
        """Run ``tests/models/<script> arguments…`` in the environment; its last ``RESULT {json}`` line, parsed."""
        completed = self._run(self.python(), TESTS / "models" / script, *arguments)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, completed.stdout[-2000:] + completed.stderr[-4000:]
        return json.loads(lines[-1].removeprefix("RESULT "))

    def fixtures(self, tiny: str) -> tuple:
        """Session fixtures ``<family>_python``, ``tiny`` (the tiny model) and ``in_environment_result``, to be bound
        to those names in the test module."""

        @pytest.fixture(scope="session", name=f"{self.family}_python")
        def python_fixture() -> str:
            """The family environment's interpreter (skips where it is not built)."""
            return self.python()

        @pytest.fixture(scope="session", name=tiny)
        def tiny_fixture(pytestconfig):
            """The tiny model of the family, built once in its environment (cached under pytest's cache)."""
            return self.tiny_model(pytestconfig)

        @pytest.fixture(scope="session", name="in_environment_result")
        def result_fixture(request) -> dict:
            """The agreement script's RESULT record on the tiny model, run in the family environment."""
            return self.agreement(request.getfixturevalue(tiny))

        return python_fixture, tiny_fixture, result_fixture

    def _run(self, python: str, script: Path, *arguments) -> subprocess.CompletedProcess:
        """``python script arguments…`` with one thread and this checkout's atomtune first on the path, as the worker
        runs it (the environment's own editable atomtune may be another checkout's)."""
        import atomtune

        source = str(Path(atomtune.__file__).resolve().parents[1])
        environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=source)
        return subprocess.run([python, str(script), *map(str, arguments)], capture_output=True, text=True,
                              timeout=self.timeout, env=environment, check=False)


def check_socket_steps(model, atoms, record: dict, energy_atol: float, forces_atol: float,
                       stress_atol: float | None = None) -> None:
    """``model`` (a WorkerModel) as ``atoms``' ASE calculator, step by step over the i-PI socket, gives ``record`` (its
    own batched prediction for ``atoms``): energy, forces and, with ``stress_atol``, stress."""
    with model:
        atoms = atoms.copy()
        atoms.calc = model
        assert abs(atoms.get_potential_energy() - record["energy"]) < energy_atol
        np.testing.assert_allclose(atoms.get_forces(), record["forces"], atol=forces_atol)
        if stress_atol is not None:
            np.testing.assert_allclose(atoms.get_stress(voigt=False), record["stress"], atol=stress_atol)


def finetune_in_environment(family: str, model: str, structures, spec: dict, out: Path, trust: bool = False) -> dict:
    """``run_unit("finetune")`` from the main environment: two epochs of ``spec`` on ``structures`` (the first 7 train,
    the rest validate), saved to ``out``; checks it saved there after epoch 2 and returns the unit's result."""
    from atomtune.envs.worker import run_unit

    result = run_unit(
        "finetune", family=family, model=model, train=structures[:7], valid=structures[7:], out=str(out),
        spec={**spec, "epochs": 2}, trust=trust,
    )
    assert Path(result["out"]) == out and result["history"][-1]["epoch"] == 2  # epoch 0: the model before training
    return result


#: full, freeze (with E0 re-estimation) and LoRA fine-tuning, as ``spec`` of a parametrized test
EVERY_STRATEGY = pytest.mark.parametrize(
    "spec",
    [
        {"strategy": "full"},
        {"strategy": "freeze", "freeze_depth": 1, "e0": True},
        {"strategy": "lora", "lora_rank": 4},
    ],
    ids=["full", "freeze+e0", "lora"],
)
