"""MACE's own multihead replay fine-tuning (``mace_run_train --foundation_model … --multiheads_finetuning True``) as a
native alternative to atomtune's :class:`~atomtune.finetune.Replay`, wrapped so its result is an atomtune model directory.

mace trains a new head on the user's data while a second head (``pt_head``) keeps fitting replay structures of the
foundation model (Batatia et al., MACE-MP-0 paper, multihead fine-tuning). Offline, the replay set cannot be mace's
downloaded MPtrj subset, so atomtune passes its own (``--pt_train_file``): the user's ``--replay-data`` or structures
generated around the training cells and pseudo-labelled by the foundation model. The new head's E0s are
``estimated`` (least squares against the foundation model, the same idea as atomtune's E0 re-estimation). The model mace
writes is loaded as a :class:`~atomtune.models.mace.MacePotential` on its ``default`` head and saved with atomtune's
metadata, so ``--model ft/`` works as for any other fine-tune.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from ase import Atoms

from atomtune.data.dataset import Dataset
from atomtune.exceptions import AtomtuneError

#: Keys the label files are written with (and passed to mace_run_train).
KEYS = {"energy_key": "REF_energy", "forces_key": "REF_forces", "stress_key": "REF_stress"}


class MaceMultiheadFinetune:
    """Settings of one ``mace_run_train`` multihead fine-tune; :meth:`run` does it.

    ``foundation_model``: a MACE ``.model`` file or one of mace's foundation names (``small``, ``medium`` …);
    ``epochs``, ``learning_rate``, ``batch_size``; ``energy_weight`` / ``forces_weight`` / ``stress_weight`` (mace's
    ``weighted``/``stress`` loss, same units as atomtune's); ``weight_pt_head``: loss weight of the replay head;
    ``dtype``: ``float64`` (mace's default for fine-tuning) or ``float32``.
    """

    def __init__(
        self,
        foundation_model: str,
        epochs: int = 30,
        learning_rate: float = 1e-3,
        batch_size: int = 4,
        energy_weight: float = 1.0,
        forces_weight: float = 100.0,
        stress_weight: float = 0.0,
        weight_pt_head: float = 1.0,
        dtype: str = "float64",
        seed: int = 0,
        device: str = "cpu",
    ):
        self.foundation_model = foundation_model
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.energy_weight = energy_weight
        self.forces_weight = forces_weight
        self.stress_weight = stress_weight
        self.weight_pt_head = weight_pt_head
        self.dtype = dtype
        self.seed = seed
        self.device = device

    def command(self, train_file: Path, valid_file: Path, replay_file: Path, work: Path, name: str = "ft") -> list[str]:
        """The ``mace_run_train`` argument list (run from ``work``)."""
        loss = "stress" if self.stress_weight > 0 else "weighted"
        arguments = {
            "name": name,
            "foundation_model": str(self.foundation_model),
            "multiheads_finetuning": "True",
            "train_file": str(train_file),
            "valid_file": str(valid_file),
            "pt_train_file": str(replay_file),
            "E0s": "estimated",
            "loss": loss,
            "energy_weight": self.energy_weight,
            "forces_weight": self.forces_weight,
            "stress_weight": self.stress_weight,
            "weight_pt_head": self.weight_pt_head,
            "max_num_epochs": self.epochs,
            "lr": self.learning_rate,
            "force_mh_ft_lr": "True",  # otherwise mace replaces lr with its own multihead default
            "batch_size": self.batch_size,
            "valid_batch_size": self.batch_size,
            "default_dtype": self.dtype,
            "device": self.device,
            "seed": self.seed,
            "model_dir": str(work),
            "checkpoints_dir": str(work / "checkpoints"),
            "results_dir": str(work / "results"),
            "log_dir": str(work / "logs"),
            "eval_interval": 1,
            **KEYS,
        }
        return [_mace_run_train()] + [f"--{key}={value}" for key, value in arguments.items()] + ["--save_cpu"]

    def run(
        self,
        train: Sequence[Atoms],
        valid: Sequence[Atoms],
        replay: Sequence[Atoms],
        out: str | Path,
        model_spec: str | None = None,
    ):
        """Write the files, run ``mace_run_train`` in ``out/mace_run``, save the result as an atomtune model in ``out``.

        Returns a :class:`~atomtune.finetune.FitResult` (the :class:`MacePotential` on the fine-tuned head, validation
        errors of the foundation and of the fine-tuned model; ``metrics.json`` is written too). Raises
        :class:`AtomtuneError` with the tail of mace's log when it fails.
        """
        from atomtune.finetune.featurized import FeaturizedSet
        from atomtune.finetune.loop import METRICS_FILE, FitResult
        from atomtune.finetune.metrics import errors
        from atomtune.finetune.strategies.base import count_parameters
        from atomtune.models.mace import MacePotential

        if not replay:
            raise AtomtuneError(
                "mace multihead fine-tuning needs replay structures for the foundation head: --replay-data FILE or "
                "--replay-generate N."
            )
        out = Path(out)
        work = out / "mace_run"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        files = {}
        for name, structures in (("train", train), ("valid", valid), ("replay", replay)):
            files[name] = Dataset(list(structures)).write(work / f"{name}.extxyz", **KEYS)
        command = self.command(files["train"], files["valid"], files["replay"], work)
        process = subprocess.run(command, cwd=work, capture_output=True, text=True)
        (work / "mace_run_train.log").write_text(process.stdout + process.stderr)
        model_file = work / "ft.model"
        if process.returncode != 0 or not model_file.exists():
            tail = "\n".join((process.stdout + process.stderr).strip().splitlines()[-15:])
            raise AtomtuneError(f"mace_run_train failed (exit {process.returncode}); last lines:\n{tail}")
        foundation_file = Path(str(self.foundation_model))
        # Both pickles are trusted here: the foundation file was already loaded with the user's --trust-model before
        # mace_run_train ran (FinetuneSpec.fit), and ft.model is what mace_run_train, run by atomtune, just wrote.
        foundation = (MacePotential.from_checkpoint(str(foundation_file), trust=True)
                      if foundation_file.exists() else None)
        potential = MacePotential.from_checkpoint(str(model_file), trust=True)
        final = {"valid": errors(potential, FeaturizedSet.build("valid", valid, potential), self.batch_size)}
        zero_shot = {}
        if foundation is not None:
            zero_shot["valid"] = errors(foundation, FeaturizedSet.build("valid", valid, foundation), self.batch_size)
        metrics = {
            "finished": True,
            "native": "mace_run_train --multiheads_finetuning True",
            "zero_shot": zero_shot,
            "final": final,
            "best_epoch": None,
            "epochs_run": self.epochs,
            "e0": None,
            "parameters": count_parameters(potential),
            "history": [],
        }
        record = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base_model": model_spec or str(self.foundation_model),
            "strategy": {"strategy": "mace-multihead", **self.settings()},
            "data": {
                name: {"fingerprint": Dataset(list(s)).fingerprint(), "structures": len(s)}
                for name, s in (("train", train), ("valid", valid), ("replay", replay))
            },
            "command": command,
            "metrics": {"zero_shot": zero_shot, "final": final},
        }
        potential.training_history.append(record)
        potential.save(out, extra={"finetune": {"native": "mace_run_train multihead", "log": "mace_run/mace_run_train.log"}})
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return FitResult(potential, [], metrics, out, record)

    def settings(self) -> dict:
        return {
            "foundation_model": str(self.foundation_model),
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "energy_weight": self.energy_weight,
            "forces_weight": self.forces_weight,
            "stress_weight": self.stress_weight,
            "weight_pt_head": self.weight_pt_head,
            "dtype": self.dtype,
            "seed": self.seed,
        }


def _mace_run_train() -> str:
    """``mace_run_train`` next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("mace_run_train")
    found = str(beside) if beside.exists() else shutil.which("mace_run_train")
    if not found:
        raise AtomtuneError("mace_run_train not found: install mace-torch (scripts/setup.sh) to use --strategy mace-multihead.")
    return found
