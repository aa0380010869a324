"""Install guard: the one dependency set under which all three backbones work together.

e3nn is pinned to exactly 0.5.1 in pyproject.toml: SevenNet 0.13 needs e3nn >= 0.5, and 0.5.1 is the release that still
unpickles MACE ``.model`` files written under e3nn 0.4.4 (mace-torch's own pin, hence ``--no-deps``) with identical
energies. If a resolver upgrades any of these, these tests say so before a user meets a silent energy change.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

PINS = {"e3nn": "0.5.1", "sevenn": "0.13.0", "chgnet": "0.4.2", "mace-torch": "0.3.16"}


def test_pyproject_pins_e3nn_exactly():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    dependencies = pyproject["project"]["dependencies"]
    assert "e3nn==0.5.1" in dependencies
    assert "sevenn==0.13.0" in dependencies and "chgnet==0.4.2" in dependencies


def test_backbones_import_together_with_pinned_versions():
    # A fresh process, importing e3nn first (as SevenNet does) and then mace, sevenn and chgnet: import order and
    # e3nn's global state are what broke with other combinations.
    script = (
        "import json, importlib.metadata as md\n"
        "import e3nn\n"
        "import mace, mace.modules, mace.calculators\n"
        "import sevenn, sevenn.calculator\n"
        "import chgnet, chgnet.model\n"
        "print(json.dumps({'e3nn': e3nn.__version__, 'mace-torch': mace.__version__,"
        " 'sevenn': md.version('sevenn'), 'chgnet': md.version('chgnet'),"
        " 'chgnet_module': chgnet.__version__}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    versions = json.loads(completed.stdout.strip().splitlines()[-1])
    assert versions["chgnet_module"] == PINS["chgnet"]
    del versions["chgnet_module"]
    assert versions == PINS


def test_mace_model_pickle_round_trip_gives_identical_energies(tiny_mace_model_file, tmp_path):
    from ase.build import bulk
    from mace.calculators import MACECalculator

    model = torch.load(tiny_mace_model_file, map_location="cpu", weights_only=False)
    torch.save(model, tmp_path / "again.model")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 5]] = "Ni"
    atoms.symbols[3] = "Al"
    atoms.rattle(0.05, seed=3)
    results = []
    for path in (tiny_mace_model_file, tmp_path / "again.model"):
        atoms.calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        results.append((atoms.get_potential_energy(), atoms.get_forces().copy(), atoms.get_stress().copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])
    assert np.isfinite(results[0][0])


@pytest.mark.parametrize("module", ["e3nn", "mace", "sevenn", "chgnet"])
def test_backbone_packages_importable(module):
    __import__(module)
