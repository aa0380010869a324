"""files.py: atomic writes, safe file names, and the output-directory lock (two runs into one --out)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from atomtune.files import DirectoryLockedError, OutputLock, atomic_write_json, safe_file_name

HOLD = """
import sys, time
sys.path.insert(0, {src!r})
from atomtune.files import OutputLock
with OutputLock({directory!r}, "fine-tuning"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(directory):
    from pathlib import Path

    import atomtune

    src = str(Path(atomtune.__file__).parents[1])
    process = subprocess.Popen([sys.executable, "-c", HOLD.format(src=src, directory=str(directory))],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_writer_gets_an_error_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    holder = _holder(tmp_path / "ft")
    try:
        with pytest.raises(DirectoryLockedError, match=rf"pid {holder.pid} .*fine-tuning"):
            with OutputLock(tmp_path / "ft"):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    with OutputLock(tmp_path / "ft", "second run"):
        assert "second run" in (tmp_path / "ft" / ".atomtune.lock").read_text()


def test_lock_is_reentrant_in_one_process(tmp_path):
    with OutputLock(tmp_path):
        with OutputLock(tmp_path):
            pass
        import fcntl

        with open(tmp_path / ".atomtune.lock") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held for anyone else


def test_two_finetune_runs_into_one_out(toy_finetune_inputs, tmp_path):
    """The reported bug: two `atomtune finetune --out DIR` both said 'model written'; the second must refuse."""
    holder = _holder(tmp_path / "ft")
    try:
        from atomtune.finetune import Trainer, TrainingSettings

        potential, train, valid = toy_finetune_inputs
        with pytest.raises(DirectoryLockedError, match=f"pid {holder.pid}"):
            Trainer(TrainingSettings(epochs=1, progress=False)).fit(potential, train, valid, out=tmp_path / "ft")
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def toy_finetune_inputs():
    from emt_data import emt_structures
    from toy_potential import ToyPotential

    structures = emt_structures(6, seed=1)
    return ToyPotential(), structures[:4], structures[4:]


def test_atomic_write_json_handles_numpy_and_leaves_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "y": np.arange(3)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "y": [0, 1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_safe_file_name():
    assert safe_file_name("chgnet-0.3.0+lora[freeze_depth=2]") == "chgnet-0.3.0_lora_freeze_depth_2"
    assert safe_file_name("runs/ft dir/") == "runs_ft_dir"
    assert safe_file_name("///") == "unnamed"
