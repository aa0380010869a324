"""From-scratch MACE baseline: a small MACE trained by mace's own ``mace_run_train`` on the same splits, saved as an
atomtune model directory so that it is a ``--model DIR`` like any fine-tuned model (``atomtune errors`` and every task).

The question it answers: *would a small model trained from scratch on the same data do as well as the fine-tuned
foundation model?* Training is mace's, unchanged (its loss, optimiser, scheduler, E0 estimate and checkpointing): atomtune
only writes the splits in one label convention, runs ``mace_run_train`` with the arguments of :class:`MaceScratchSpec`
(recorded in full, with the wall time and the epochs actually run, so the budget is honest), loads the ``*.model`` it
wrote and saves it with :meth:`atomtune.models.base.Potential.save` (the MACE backbone writes tensors + a JSON
architecture, so loading the directory back runs no pickle). The intermediate ``*.model`` is mace's pickle, written by
the subprocess atomtune just started in a directory it just created; it is loaded with ``trust`` for that reason only.

E0s: mace's ``--E0s average`` (least-squares per-element energies on the training set), i.e. E0s from the training data.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from atomtune.exceptions import AtomtuneError

RESULT_FILE = "baseline.json"
#: Label keys the splits are written with (mace's ``--energy_key`` …); atomtune's Dataset.write default convention.
ENERGY_KEY, FORCES_KEY, STRESS_KEY = "REF_energy", "REF_forces", "REF_stress"
LOSSES = ("weighted", "stress", "ef", "huber", "universal")


@dataclass
class MaceScratchSpec:
    """A from-scratch MACE run; every field maps onto one ``mace_run_train`` argument (defaults: a small model that
    trains in minutes on a few hundred structures on CPU, not mace's large defaults).

    ``r_max`` Å; ``num_channels`` × ``max_L`` give ``hidden_irreps`` (32 channels, L ≤ 1: the "small" end of MACE
    sizes); ``num_interactions`` (2, MACE's default), ``correlation`` (3, body order 4, MACE's default);
    ``max_num_epochs``; ``patience`` (epochs without validation improvement before mace stops); ``batch_size``;
    ``lr``; ``loss`` (``weighted``: energy + forces; ``stress``: + stress, needs stress labels on every structure);
    ``energy_weight``, ``forces_weight``, ``stress_weight`` (mace's defaults 1 / 100 / 1); ``e0s`` (``average``:
    least-squares E0s from the training data); ``seed``; ``default_dtype`` (mace trains in float64 by default);
    ``eval_interval`` (epochs between validations); ``max_wall_seconds``: stop the run and raise if it takes longer
    (None: no limit); ``extra_arguments``: any other ``mace_run_train`` flags, passed on as given (recorded).
    """

    name: str = "mace-scratch"
    r_max: float = 5.0
    num_channels: int = 32
    max_L: int = 1
    num_interactions: int = 2
    correlation: int = 3
    max_num_epochs: int = 100
    patience: int = 20
    batch_size: int = 4
    valid_batch_size: int = 8
    lr: float = 0.01
    loss: str = "weighted"
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    e0s: str = "average"
    seed: int = 123
    default_dtype: str = "float64"
    eval_interval: int = 1
    max_wall_seconds: float | None = None
    extra_arguments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`AtomtuneError` for settings mace would reject later (after its slow start)."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise AtomtuneError(f"name {self.name!r}: use letters, digits, '-', '_' or '.' (it names mace's files).")
        for key in ("num_channels", "num_interactions", "correlation", "max_num_epochs", "batch_size", "eval_interval"):
            if int(getattr(self, key)) < 1:
                raise AtomtuneError(f"{key} = {getattr(self, key)} must be at least 1.")
        if self.max_L < 0 or self.r_max <= 0 or self.lr <= 0:
            raise AtomtuneError("max_L must be ≥ 0, r_max and lr > 0.")
        if self.loss not in LOSSES:
            raise AtomtuneError(f"loss {self.loss!r}: use one of {', '.join(LOSSES)} (mace's names).")
        if self.default_dtype not in ("float32", "float64"):
            raise AtomtuneError(f"default_dtype {self.default_dtype!r}: float32 or float64.")

    @property
    def hidden_irreps(self) -> str:
        """``"32x0e+32x1o"`` for 32 channels and L ≤ 1 (mace's ``--num_channels/--max_L`` made explicit)."""
        parities = ["0e", "1o", "2e", "3o"]
        return "+".join(f"{self.num_channels}x{parities[l]}" for l in range(self.max_L + 1))

    def arguments(self, train_file: Path, valid_file: Path | None, test_file: Path | None, work_dir: Path,
                  stress: bool) -> list[str]:
        """The ``mace_run_train`` arguments of this spec on these files (``stress``: the splits carry stress)."""
        work_dir = Path(work_dir)
        arguments = [
            f"--name={self.name}",
            f"--seed={self.seed}",
            f"--train_file={train_file}",
            "--model=MACE",
            f"--r_max={self.r_max}",
            f"--hidden_irreps={self.hidden_irreps}",
            f"--num_interactions={self.num_interactions}",
            f"--correlation={self.correlation}",
            f"--max_num_epochs={self.max_num_epochs}",
            f"--patience={self.patience}",
            f"--batch_size={self.batch_size}",
            f"--valid_batch_size={self.valid_batch_size}",
            f"--lr={self.lr}",
            f"--loss={self.loss}",
            f"--energy_weight={self.energy_weight}",
            f"--forces_weight={self.forces_weight}",
            f"--E0s={self.e0s}",
            f"--energy_key={ENERGY_KEY}",
            f"--forces_key={FORCES_KEY}",
            f"--default_dtype={self.default_dtype}",
            f"--eval_interval={self.eval_interval}",
            "--device=cpu",
            f"--work_dir={work_dir}",
            f"--model_dir={work_dir}",
            f"--log_dir={work_dir / 'logs'}",
            f"--checkpoints_dir={work_dir / 'checkpoints'}",
            f"--results_dir={work_dir / 'results'}",
            "--save_cpu",
        ]
        if valid_file is not None:
            arguments.append(f"--valid_file={valid_file}")
        if test_file is not None:
            arguments.append(f"--test_file={test_file}")
        if stress:
            arguments += [f"--stress_key={STRESS_KEY}", "--compute_stress=True", f"--stress_weight={self.stress_weight}"]
        elif self.loss == "stress":
            raise AtomtuneError("loss 'stress' needs stress labels on every training and validation structure.")
        return arguments + list(self.extra_arguments)

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class MaceScratchResult:
    """What one from-scratch run produced: the model directory, the exact command, the budget it used (wall seconds,
    epochs run, the epoch whose weights were kept) and held-out errors of the saved model (meV/atom, meV/Å, GPa)."""

    model_dir: str
    command: list[str]
    spec: dict
    wall_seconds: float
    epochs_run: int | None
    best_epoch: int | None
    n_train: int
    n_valid: int
    n_test: int
    data_fingerprints: dict
    valid_errors: dict
    test_errors: dict
    mace_version: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def mace_run_train_command() -> list[str]:
    """``mace_run_train`` of this interpreter's environment (the console script, else ``python -m``)."""
    script = Path(sys.executable).parent / "mace_run_train"
    if script.is_file():
        return [str(script)]
    found = shutil.which("mace_run_train")
    return [found] if found else [sys.executable, "-m", "mace.cli.run_train"]


def train(
    train_data,
    out: str | Path,
    spec: MaceScratchSpec | None = None,
    valid_data=None,
    test_data=None,
    threads: int | None = None,
    progress: bool = True,
) -> MaceScratchResult:
    """Train a MACE from scratch with ``mace_run_train`` and save it as an atomtune model directory ``out``.

    ``train_data`` / ``valid_data`` / ``test_data``: :class:`~atomtune.data.dataset.Dataset` or lists of labelled
    Atoms (energy and forces required; stress used when every structure has it). Without ``valid_data`` mace holds out
    its default 10 %. Writes ``out/atomtune.json`` + weights (load with ``--model out``), ``out/baseline.json``
    (:class:`MaceScratchResult`) and keeps mace's logs under ``out/mace_run/``.
    """
    from atomtune.data.dataset import Dataset
    from atomtune.runtime import configure_threads

    spec = spec or MaceScratchSpec()
    threads = configure_threads(threads)
    out = Path(out)
    work = out / "mace_run"
    if work.exists():
        shutil.rmtree(work)  # a previous, maybe interrupted run: mace would resume from its checkpoints otherwise
    work.mkdir(parents=True)
    splits = {"train": train_data, "valid": valid_data, "test": test_data}
    datasets = {name: Dataset(list(data), name=name) for name, data in splits.items() if data is not None}
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            raise AtomtuneError(f"the {name} set is empty.")
        dataset.validate(require=("energy", "forces"), where=f"{name} set")
    stress = all(dataset.has_stress for dataset in datasets.values())
    files = {name: dataset.write(work / f"{name}.extxyz") for name, dataset in datasets.items()}
    command = mace_run_train_command() + spec.arguments(
        files["train"], files.get("valid"), files.get("test"), work, stress
    )
    log_path = work / "mace_run_train.log"
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=work)
        try:
            _wait(process, log_path, spec, progress)
        except BaseException:
            process.kill()
            process.wait()
            raise
    wall_seconds = time.perf_counter() - started
    log_text = log_path.read_text(errors="replace")
    model_file = work / f"{spec.name}.model"
    if process.returncode != 0 or not model_file.is_file():
        tail = "\n".join(log_text.strip().splitlines()[-15:])
        raise AtomtuneError(
            f"mace_run_train failed (exit code {process.returncode}); the end of its log ({log_path}):\n{tail}"
        )
    epochs = [int(m) for m in re.findall(r"Epoch (\d+):", log_text)]
    best = re.findall(r"Loaded Stage one model from epoch (\d+)", log_text)
    potential = _as_atomtune_model(model_file, spec)
    import mace

    history = {
        "baseline": "mace-scratch",
        "spec": spec.to_dict(),
        "command": command,
        "wall_seconds": wall_seconds,
        "threads": threads,
        "epochs_run": max(epochs) + 1 if epochs else None,
        "best_epoch": int(best[-1]) if best else None,
        "data_fingerprints": {name: dataset.fingerprint() for name, dataset in datasets.items()},
    }
    potential.training_history.append(history)
    potential.save(out, extra={"baseline": "mace-scratch"})
    valid_errors, test_errors = _held_out_errors(out, datasets)
    result = MaceScratchResult(
        model_dir=str(out),
        command=command,
        spec=spec.to_dict(),
        wall_seconds=wall_seconds,
        epochs_run=history["epochs_run"],
        best_epoch=history["best_epoch"],
        n_train=len(datasets["train"]),
        n_valid=len(datasets["valid"]) if "valid" in datasets else 0,
        n_test=len(datasets["test"]) if "test" in datasets else 0,
        data_fingerprints=history["data_fingerprints"],
        valid_errors=valid_errors,
        test_errors=test_errors,
        mace_version=str(mace.__version__),
    )
    (out / RESULT_FILE).write_text(result.to_json())
    return result


def _wait(process: subprocess.Popen, log_path: Path, spec: MaceScratchSpec, progress: bool) -> None:
    """Wait for mace_run_train, following its epochs on a progress bar; enforce ``max_wall_seconds``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.max_num_epochs, desc=f"mace_run_train {spec.name}", unit="epoch")
    started = time.perf_counter()
    seen = 0
    try:
        while process.poll() is None:
            time.sleep(1.0)
            if bar is not None:
                done = len(set(re.findall(r"Epoch (\d+):", log_path.read_text(errors="replace"))))
                bar.update(max(0, done - seen))
                seen = max(seen, done)
            if spec.max_wall_seconds is not None and time.perf_counter() - started > spec.max_wall_seconds:
                raise AtomtuneError(
                    f"mace_run_train ran past max_wall_seconds = {spec.max_wall_seconds:g} s and was stopped (log: "
                    f"{log_path}); raise the limit or lower max_num_epochs / the model size."
                )
    finally:
        if bar is not None:
            bar.close()


def _as_atomtune_model(model_file: Path, spec: MaceScratchSpec):
    """The ``*.model`` mace_run_train just wrote, as a MacePotential named after the run (trusted: see module doc)."""
    from atomtune.models.mace import MacePotential

    potential = MacePotential.from_checkpoint(str(model_file), trust=True)
    potential.checkpoint = f"scratch-{spec.name}"
    return potential


def _held_out_errors(model_dir: Path, datasets: dict) -> tuple[dict, dict]:
    """Errors of the saved directory (loaded back as any ``--model DIR``) on the validation and test sets."""
    from atomtune.models import load_potential
    from atomtune.tasks import errors

    potential = load_potential(str(model_dir), dtype="float64")
    found = {}
    for name in ("valid", "test"):
        if name in datasets:
            metrics = errors.metrics(errors.run(list(datasets[name]), potential, progress=False))
            found[name] = {key: value for key, value in metrics.items() if key != "per_element"}
    return found.get("valid", {}), found.get("test", {})
