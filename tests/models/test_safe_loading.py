"""No file handed to atomtune runs code when loaded: a crafted pickle on every loading path (issue: safe loading).

Each test plants a pickle whose ``__reduce__`` would create a marker file, then goes through one of atomtune's loading
paths; the marker must not appear and the error must say what happened.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from atomtune.exceptions import AtomtuneError
from atomtune.loading import CorruptFileError, UnsafeFileError, load_pickle, load_tensors
from crafted_pickle import plant


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a crafted pickle ran code while loading"


def test_load_tensors_refuses_a_crafted_pickle_and_names_the_file(tmp_path, marker):
    evil = plant(tmp_path / "weights.pt", marker)
    with pytest.raises(UnsafeFileError, match=r"weights\.pt.*--trust-model"):
        load_tensors(evil, "weights file")
    with pytest.raises(UnsafeFileError, match="not written by atomtune or was modified"):
        load_tensors(evil, "weights file", own_file=True)


def test_load_pickle_needs_trust(tmp_path, marker):
    evil = plant(tmp_path / "evil.model", marker)
    with pytest.raises(UnsafeFileError, match="pickle.*--trust-model"):
        load_pickle(evil, "MACE *.model file", trust=False)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a torch file at all"])
def test_truncated_or_foreign_weight_files_get_one_clear_error(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match="weights.pt"):
        load_tensors(path, "weights file")


def test_truncated_real_checkpoint(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match="truncated, corrupt"):
        load_tensors(path, "weights file")


@pytest.mark.parametrize("backbone", ["chgnet-0.3.0", "sevennet-0"])
def test_saved_model_directory_with_a_crafted_weights_file(backbone, tmp_path, marker):
    from atomtune.models import load_potential

    saved = load_potential(backbone).save(tmp_path / "ft")
    weights = next(p for p in saved.iterdir() if p.suffix in (".tar", ".pth"))
    plant(weights, marker)
    with pytest.raises(UnsafeFileError, match=weights.name):
        load_potential(str(saved))
    with pytest.raises(UnsafeFileError):  # trust never applies to atomtune's own files
        load_potential(str(saved), trust=True)


def test_sevennet_pth_given_as_model_is_read_without_unpickling(tmp_path, marker):
    from atomtune.models import load_potential

    evil = plant(tmp_path / "evil.pth", marker, wrap=lambda p: {"config": {"x": p}, "model_state_dict": {}})
    with pytest.raises(UnsafeFileError, match="evil.pth.*--trust-model"):
        load_potential(str(evil))


def test_mace_model_file_needs_trust(tmp_path, marker):
    from atomtune.models import load_potential

    evil = plant(tmp_path / "evil.model", marker, wrap=lambda p: p)
    with pytest.raises(UnsafeFileError, match="evil.model.*--trust-model"):
        load_potential(str(evil))


def test_mace_directory_loads_without_unpickling(tiny_mace_model_file, tmp_path, marker):
    """A saved MACE directory rebuilds from tensors + JSON: the pickled mace.model beside it is never read."""
    from ase.build import bulk

    from atomtune.models import load_potential

    potential = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
    saved = potential.save(tmp_path / "ft")
    plant(saved / "mace.model", marker, wrap=lambda p: p)  # would run if atomtune unpickled it
    again = load_potential(str(saved), dtype="float64")
    atoms = bulk("Ni", "fcc", a=3.52, cubic=True)
    atoms.rattle(0.05, seed=1)
    first, second = potential.predict([atoms])[0], again.predict([atoms])[0]
    assert abs(first["energy"] - second["energy"]) < 1e-10
    assert abs(first["forces"] - second["forces"]).max() < 1e-10


def test_broken_metadata_gets_a_clear_error(tmp_path):
    from atomtune.models import load_potential

    (tmp_path / "atomtune.json").write_text('{"backbone": "chgnet", ')
    with pytest.raises(AtomtuneError, match="atomtune.json.*not valid JSON"):
        load_potential(str(tmp_path))
    (tmp_path / "atomtune.json").write_text('{"backbone": "chgnet"}')
    with pytest.raises(AtomtuneError, match="incomplete model metadata.*checkpoint, weights"):
        load_potential(str(tmp_path))
    (tmp_path / "atomtune.json").write_text('{"backbone": "nosuch", "checkpoint": "x", "weights": {}}')
    with pytest.raises(AtomtuneError, match="unknown backbone 'nosuch'"):
        load_potential(str(tmp_path))


def test_random_bytes_as_pth_model(tmp_path):
    from atomtune.models import load_potential

    path = tmp_path / "random.pth"
    path.write_bytes(os.urandom(2048))
    with pytest.raises(AtomtuneError, match="random.pth"):
        load_potential(str(path))


def test_cli_errors_refuses_crafted_model_directory(tmp_path, marker):
    """The reported attack: a crafted chgnet.pth.tar in a copy of a fine-tuned model, used by `atomtune errors`."""
    from typer.testing import CliRunner

    from atomtune.cli import app
    from atomtune.models import load_potential

    saved = load_potential("chgnet-0.3.0").save(tmp_path / "ft")
    copy = shutil.copytree(saved, tmp_path / "copy")
    plant(copy / "chgnet.pth.tar", marker)
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = EMT()
    atoms.get_potential_energy(), atoms.get_forces()
    write(tmp_path / "test.extxyz", [atoms])
    result = CliRunner().invoke(app, ["errors", "--data", str(tmp_path / "test.extxyz"), "--model", str(copy)])
    assert result.exit_code != 0
    assert isinstance(result.exception, AtomtuneError) and "chgnet.pth.tar" in str(result.exception)
