"""--resume: a run killed with SIGKILL mid-training continues from its last atomic checkpoint and ends with the same
validation metrics as an uninterrupted run; a checkpoint from a different run is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atomtune.exceptions import AtomtuneError
from atomtune.finetune import Trainer, TrainingSettings
from atomtune.finetune.checkpoint import read_checkpoint

SCRIPT = Path(__file__).with_name("resume_run.py")


def _run(out, mode, sleep_s=0.0):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), mode, str(sleep_s)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _final(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(tmp_path):
    reference = _run(tmp_path / "uninterrupted", "fresh")
    killed = _run(tmp_path / "killed", "fresh", sleep_s=0.7)
    deadline = time.monotonic() + 120
    epoch = 0
    while time.monotonic() < deadline and killed.poll() is None:
        checkpoint = tmp_path / "killed" / "checkpoint.pt"
        if checkpoint.exists():
            epoch = read_checkpoint(tmp_path / "killed")["epoch"]
            if epoch >= 2:
                break
        time.sleep(0.1)
    assert killed.poll() is None, killed.communicate()[0]
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert 2 <= read_checkpoint(tmp_path / "killed")["epoch"] < 5

    resumed = _run(tmp_path / "killed", "resume")
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]

    expected, got = _final(tmp_path / "uninterrupted"), _final(tmp_path / "killed")
    assert got["epochs_run"] == expected["epochs_run"] == 5
    for key, value in expected["final"]["valid"].items():
        assert got["final"]["valid"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert [h["valid_loss"] for h in got["history"]] == pytest.approx([h["valid_loss"] for h in expected["history"]])


def test_resume_refuses_a_checkpoint_of_another_run(toy_backbone, emt_split, tmp_path):
    settings = TrainingSettings(epochs=2, learning_rate=1e-2, progress=False, keep_checkpoint=True)
    Trainer(settings).fit(toy_backbone(), *emt_split, out=tmp_path)
    (tmp_path / "metrics.json").unlink()
    changed = TrainingSettings(epochs=2, learning_rate=5e-3, progress=False)
    with pytest.raises(AtomtuneError, match=r"different run .*learning_rate: 0.01 then, 0.005 now"):
        Trainer(changed).fit(toy_backbone(), *emt_split, out=tmp_path, resume=True)
    with pytest.raises(AtomtuneError, match="different run .*train.fingerprint"):
        Trainer(settings).fit(toy_backbone(), emt_split[0][:-1], emt_split[1], out=tmp_path, resume=True)


def test_resume_of_a_finished_run_says_so(toy_backbone, emt_split, tmp_path):
    settings = TrainingSettings(epochs=1, learning_rate=1e-2, progress=False)
    Trainer(settings).fit(toy_backbone(), *emt_split, out=tmp_path)
    with pytest.raises(AtomtuneError, match="already finished"):
        Trainer(settings).fit(toy_backbone(), *emt_split, out=tmp_path, resume=True)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a crafted pickle ran code while loading"


def test_checkpoint_in_out_is_not_read_without_resume_and_refused_with_resume(toy_backbone, emt_split, tmp_path,
                                                                               marker):
    from atomtune.finetune import Trainer, TrainingSettings
    from atomtune.finetune.checkpoint import checkpoint_path
    from atomtune.loading import UnsafeFileError
    from crafted_pickle import plant

    plant(checkpoint_path(tmp_path), marker)
    settings = TrainingSettings(epochs=1, batch_size=4, progress=False)
    with pytest.raises(AtomtuneError, match="unfinished run"):
        Trainer(settings).fit(toy_backbone(), *emt_split, out=tmp_path)
    with pytest.raises(UnsafeFileError, match="checkpoint.pt"):
        Trainer(settings).fit(toy_backbone(), *emt_split, out=tmp_path, resume=True)
