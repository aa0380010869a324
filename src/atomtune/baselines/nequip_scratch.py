"""From-scratch NequIP baseline: a small NequIP trained by nequip's own ``nequip-train`` inside the nequip environment
(``atomtune env build nequip``) on the same splits, packaged by ``nequip-package``; the package is then a ``nequip:``
model like any other (``atomtune errors``, every task, campaigns).

Training is nequip's, unchanged (its Lightning module with EMA weights, its loss and metrics, its data statistics for the
neighbour normalisation and the force-scale): atomtune writes the splits, a Hydra config built from
:class:`NequipScratchSpec` (``nequip_run/config.yaml``, kept), runs ``nequip-train`` and ``nequip-package build`` with the
environment's interpreter, and reads the epochs run and the kept epoch from the CSV log. The budget is recorded: wall
seconds, epochs run, the best epoch, the exact commands.

E0s from the training data: per-element energies fitted by least squares to the training set's total energies (the
same estimate as mace's ``--E0s average``) are the model's fixed ``per_type_energy_shifts``; ``e0s: mean`` uses
nequip's own default instead (the training set's mean energy per atom for every element).

The package (``out/model.nequip.zip``) is a torch.package, a pickle by design: it loads with trust. A package this
function has just written in a directory it created is loaded with ``trust`` for its held-out errors, and a campaign
trusts its own baseline step's output for the same reason; anyone else loading it passes ``--trust-model``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from atomtune.exceptions import AtomtuneError

RESULT_FILE = "baseline.json"
PACKAGE_FILE = "model.nequip.zip"
#: nequip's name of the validation objective (the weighted sum of the validation metrics' coefficients).
MONITOR = "val0_epoch/weighted_sum"
E0_CHOICES = ("least_squares", "mean")


@dataclass
class NequipScratchSpec:
    """A from-scratch NequIP run. Model (``nequip.model.NequIPGNNModel``): ``r_max`` Å, ``l_max``, ``num_layers``,
    ``num_features``, ``radial_mlp_depth`` / ``radial_mlp_width``, ``model_dtype``; the defaults are a small model
    (16 features, L ≤ 1, 2 layers, r_max 4.5 Å) that trains in minutes on a few hundred structures on CPU, not nequip's
    foundation sizes. Training: ``max_epochs``; ``patience`` (epochs without improvement of the validation objective
    before stopping; None: run every epoch); ``batch_size``; ``lr`` (Adam); ``energy_weight`` / ``forces_weight`` /
    ``stress_weight`` (loss coefficients; energy per atom; stress only when every structure has a stress label);
    ``e0s`` (``least_squares``: per-element energies fitted to the training set, or ``mean``: nequip's mean energy per
    atom); ``valid_fraction``: held out of the training data (seeded) when no validation set is given; ``seed``;
    ``max_wall_seconds``: stop the run and raise if it takes longer (None: no limit)."""

    name: str = "nequip-scratch"
    r_max: float = 4.5
    l_max: int = 1
    num_layers: int = 2
    num_features: int = 16
    radial_mlp_depth: int = 1
    radial_mlp_width: int = 16
    model_dtype: str = "float64"
    max_epochs: int = 50
    patience: int | None = 20
    batch_size: int = 4
    lr: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 1.0
    e0s: str = "least_squares"
    valid_fraction: float = 0.1
    seed: int = 123
    max_wall_seconds: float | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise AtomtuneError(f"name {self.name!r}: use letters, digits, '-', '_' or '.'.")
        for key in ("num_layers", "num_features", "radial_mlp_depth", "radial_mlp_width", "max_epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise AtomtuneError(f"{key} = {getattr(self, key)} must be at least 1.")
        if self.l_max < 0 or self.r_max <= 0 or self.lr <= 0:
            raise AtomtuneError("l_max must be ≥ 0, r_max and lr > 0.")
        if self.patience is not None and self.patience < 1:
            raise AtomtuneError(f"patience {self.patience}: at least 1 epoch, or null for no early stopping.")
        if self.model_dtype not in ("float32", "float64"):
            raise AtomtuneError(f"model_dtype {self.model_dtype!r}: float32 or float64.")
        if self.e0s not in E0_CHOICES:
            raise AtomtuneError(f"e0s {self.e0s!r}: use {' or '.join(E0_CHOICES)}.")
        if not 0.0 < self.valid_fraction < 1.0:
            raise AtomtuneError(f"valid_fraction {self.valid_fraction} must lie strictly between 0 and 1.")

    def config(self, files: dict[str, Path], elements: list[str], e0s: list[float] | None, stress: bool,
               work: Path) -> dict:
        """The Hydra config ``nequip-train`` runs (nequip 0.19's schema: ASEDataModule, EMALightningModule,
        NequIPGNNModel), with the training-data statistics nequip computes itself."""
        keys = ["total_energy", "forces"] + (["stress"] if stress else [])
        coefficients = {"total_energy": self.energy_weight, "forces": self.forces_weight}
        if stress:
            coefficients["stress"] = self.stress_weight
        metric_coefficients = {f"{key}_mae": 1.0 for key in keys}
        callbacks = [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": str(work / "checkpoints"),
                      "filename": "best", "monitor": MONITOR, "mode": "min", "save_last": True}]
        if self.patience is not None:
            callbacks.append({"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": MONITOR,
                              "mode": "min", "patience": int(self.patience), "min_delta": 0.0})
        loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": int(self.batch_size)}
        data = {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": int(self.seed),
            "train_file_path": str(files["train"]),
            "val_file_path": str(files["valid"]),
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": elements,
                 "chemical_species_to_atom_type_map": {e: e for e in elements}},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": float(self.r_max)},
            ],
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": loader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": elements},
        }
        model = {
            "_target_": "nequip.model.NequIPGNNModel",
            "seed": int(self.seed),
            "model_dtype": self.model_dtype,
            "type_names": elements,
            "r_max": float(self.r_max),
            "l_max": int(self.l_max),
            "parity": True,
            "num_layers": int(self.num_layers),
            "num_features": int(self.num_features),
            "radial_mlp_depth": int(self.radial_mlp_depth),
            "radial_mlp_width": int(self.radial_mlp_width),
            "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
            "per_type_energy_shifts": (dict(zip(elements, e0s)) if e0s is not None
                                       else "${training_data_stats:per_atom_energy_mean}"),
            "per_type_energy_scales": "${training_data_stats:forces_rms}",
        }
        loss = "EnergyForceStress" if stress else "EnergyForce"
        return {
            "run": ["train"],
            "data": data,
            "trainer": {
                "_target_": "lightning.Trainer",
                "max_epochs": int(self.max_epochs),
                "check_val_every_n_epoch": 1,
                "log_every_n_steps": 1,
                "enable_progress_bar": False,
                "accelerator": "cpu",
                "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(work), "name": "csv",
                           "version": 0},
                "callbacks": callbacks,
            },
            "training_module": {
                "_target_": "nequip.train.EMALightningModule",
                "loss": {"_target_": f"nequip.train.{loss}Loss", "per_atom_energy": True, "coeffs": coefficients},
                "val_metrics": {"_target_": f"nequip.train.{loss}Metrics", "coeffs": metric_coefficients},
                "optimizer": {"_target_": "torch.optim.Adam", "lr": float(self.lr)},
                "model": model,
            },
        }

    def to_dict(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class NequipScratchResult:
    """What one from-scratch run produced: the package (``model_file``, load as ``nequip:PATH`` with trust), the exact
    commands, the budget it used (wall seconds of training and packaging, epochs run, the epoch whose weights were
    kept), the E0s (eV per element), split sizes and held-out errors of the package (meV/atom, meV/Å, GPa)."""

    model_file: str
    commands: list
    spec: dict
    wall_seconds: float
    epochs_run: int | None
    best_epoch: int | None
    e0s_ev: dict
    n_train: int
    n_valid: int
    n_test: int
    valid_held_out_of_train: bool
    data_fingerprints: dict
    valid_errors: dict
    test_errors: dict
    nequip_version: str
    history: list = field(default_factory=list)

    @property
    def model_dir(self) -> str:
        """The model spec other commands take (``--model``): the package path."""
        return self.model_file

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def least_squares_e0s(structures, elements: list[str]) -> list[float]:
    """Per-element energies (eV) minimising Σ (E − Σ_Z n_Z E0_Z)² over ``structures`` (min-norm when the
    compositions do not determine every element)."""
    from atomtune.data.dataset import labels_of

    counts = np.array([[atoms.get_chemical_symbols().count(e) for e in elements] for atoms in structures], dtype=float)
    energies = np.array([labels_of(atoms).energy for atoms in structures], dtype=float)
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return [float(v) for v in solution]


def train(
    train_data,
    out: str | Path,
    spec: NequipScratchSpec | None = None,
    valid_data=None,
    test_data=None,
    threads: int | None = None,
    progress: bool = True,
) -> NequipScratchResult:
    """Train a NequIP from scratch with ``nequip-train`` in the nequip environment; package it as
    ``out/model.nequip.zip``; write ``out/baseline.json`` (:class:`NequipScratchResult`); keep nequip's config, logs
    and checkpoints under ``out/nequip_run/``. Data as for :func:`atomtune.baselines.mace_scratch.train`."""
    from ase.data import chemical_symbols

    from atomtune.data.dataset import Dataset
    from atomtune.envs.build import environment_python
    from atomtune.runtime import configure_threads

    spec = spec or NequipScratchSpec()
    python = Path(environment_python("nequip"))  # not built → one error with the command that builds it
    threads = configure_threads(threads)
    out = Path(out)
    work = out / "nequip_run"
    if work.exists():
        shutil.rmtree(work)  # a previous, maybe interrupted run: Lightning would otherwise mix its logs in
    work.mkdir(parents=True)
    train_list = list(train_data)
    held_out = valid_data is None
    if held_out:
        order = np.random.default_rng(spec.seed).permutation(len(train_list))
        n_valid = max(1, round(spec.valid_fraction * len(train_list)))
        valid_list = [train_list[int(i)] for i in order[:n_valid]]
        train_list = [train_list[int(i)] for i in order[n_valid:]]
    else:
        valid_list = list(valid_data)
    datasets = {"train": Dataset(train_list, name="train"), "valid": Dataset(valid_list, name="valid")}
    if test_data is not None:
        datasets["test"] = Dataset(list(test_data), name="test")
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            raise AtomtuneError(f"the {name} set is empty.")
        dataset.validate(require=("energy", "forces"), where=f"{name} set")
    elements = sorted({s for atoms in train_list for s in atoms.get_chemical_symbols()}, key=chemical_symbols.index)
    for name, dataset in datasets.items():
        extra = sorted({s for atoms in dataset for s in atoms.get_chemical_symbols()} - set(elements))
        if extra:
            raise AtomtuneError(f"the {name} set has {', '.join(extra)}, which no training structure has; a model "
                                f"trained from scratch knows only the training set's elements ({', '.join(elements)}).")
    stress = all(dataset.has_stress for name, dataset in datasets.items() if name != "test")
    files = {name: _write_for_nequip(dataset, work / f"{name}.extxyz", stress) for name, dataset in datasets.items()}
    e0s = least_squares_e0s(train_list, elements) if spec.e0s == "least_squares" else None
    import yaml

    (work / "config.yaml").write_text(yaml.safe_dump(spec.config(files, elements, e0s, stress, work), sort_keys=False))
    bin_dir = python.parent
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": str(threads)}
    environment.pop("PYTHONPATH", None)  # the environment's own packages only
    train_command = [str(bin_dir / "nequip-train"), "-cp", str(work), "-cn", "config.yaml",
                     f"hydra.run.dir={work / 'hydra'}"]
    started = time.perf_counter()
    _run(train_command, work / "nequip_train.log", environment, work, spec, progress, started)
    best = work / "checkpoints" / "best.ckpt"
    if not best.is_file():
        raise AtomtuneError(f"nequip-train wrote no best checkpoint ({best}); see {work / 'nequip_train.log'}.")
    package = out / PACKAGE_FILE
    package_command = [str(bin_dir / "nequip-package"), "build", str(best), str(package)]
    _run(package_command, work / "nequip_package.log", environment, work, spec, False, started)
    wall_seconds = time.perf_counter() - started
    history = _history(work / "csv" / "version_0" / "metrics.csv")
    scored = [row for row in history if row.get(MONITOR) is not None]
    best_row = min(scored, key=lambda row: row[MONITOR]) if scored else None
    valid_errors, test_errors = _held_out_errors(package, datasets)
    version = subprocess.run([str(python), "-c", "import nequip; print(nequip.__version__)"], capture_output=True,
                             text=True, env=environment, check=False).stdout.strip()
    result = NequipScratchResult(
        model_file=str(package),
        commands=[train_command, package_command],
        spec=spec.to_dict(),
        wall_seconds=wall_seconds,
        epochs_run=len({row["epoch"] for row in scored}) or None,
        best_epoch=int(best_row["epoch"]) if best_row else None,
        e0s_ev=dict(zip(elements, e0s)) if e0s is not None else {},
        n_train=len(datasets["train"]),
        n_valid=len(datasets["valid"]),
        n_test=len(datasets["test"]) if "test" in datasets else 0,
        valid_held_out_of_train=held_out,
        data_fingerprints={name: dataset.fingerprint() for name, dataset in datasets.items()},
        valid_errors=valid_errors,
        test_errors=test_errors,
        nequip_version=version,
        history=scored,
    )
    (out / RESULT_FILE).write_text(result.to_json())
    return result


def _write_for_nequip(dataset, path: Path, stress: bool) -> Path:
    """extxyz with the labels as calculator results (energy, forces, stress), which nequip's ASE reader takes."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from atomtune.data.dataset import labels_of

    frames = []
    for atoms in dataset:
        labels = labels_of(atoms)
        frame = atoms.copy()
        frame.info = {}
        frame.arrays = {key: value for key, value in frame.arrays.items() if key in ("numbers", "positions")}
        results = {"energy": labels.energy, "forces": np.asarray(labels.forces)}
        if stress and labels.stress is not None:
            results["stress"] = np.asarray(labels.stress)
        frame.calc = SinglePointCalculator(frame, **results)
        frames.append(frame)
    write(path, frames, format="extxyz")
    return path


def _run(command: list[str], log_path: Path, environment: dict, work: Path, spec: NequipScratchSpec, progress: bool,
         started: float) -> None:
    """Run one nequip command to its end, following epochs on a progress bar; enforce ``max_wall_seconds``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.max_epochs, desc=f"nequip-train {spec.name}", unit="epoch")
    seen = 0
    metrics = work / "csv" / "version_0" / "metrics.csv"
    try:
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=work)
            try:
                while process.poll() is None:
                    time.sleep(1.0)
                    if bar is not None and metrics.is_file():
                        done = len({row["epoch"] for row in _history(metrics) if row.get(MONITOR) is not None})
                        bar.update(max(0, done - seen))
                        seen = max(seen, done)
                    if spec.max_wall_seconds is not None and time.perf_counter() - started > spec.max_wall_seconds:
                        raise AtomtuneError(
                            f"{Path(command[0]).name} ran past max_wall_seconds = {spec.max_wall_seconds:g} s and was "
                            f"stopped (log: {log_path}); raise the limit or lower max_epochs / the model size."
                        )
            except BaseException:
                process.kill()
                process.wait()
                raise
    finally:
        if bar is not None:
            bar.close()
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
        raise AtomtuneError(f"{Path(command[0]).name} failed (exit code {process.returncode}); the end of its log "
                            f"({log_path}):\n{tail}")


def _history(path: Path) -> list[dict]:
    """Lightning's CSV log, one dict per row with numbers (``epoch`` an int; empty cells left out)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    parsed[key] = value
            if "epoch" in parsed:
                parsed["epoch"] = int(parsed["epoch"])
                rows.append(parsed)
    return rows


def _held_out_errors(package: Path, datasets: dict) -> tuple[dict, dict]:
    """Errors of the package (loaded as any ``nequip:`` model, through the nequip environment's worker)."""
    from atomtune.models import load_potential
    from atomtune.tasks import errors

    potential = load_potential(str(package), dtype="float64", trust=True)  # written just now by nequip-package
    found = {}
    try:
        for name in ("valid", "test"):
            if name in datasets:
                metrics = errors.metrics(errors.run(list(datasets[name]), potential, progress=False))
                found[name] = {key: value for key, value in metrics.items() if key != "per_element"}
    finally:
        close = getattr(potential, "close", None)
        if close is not None:
            close()
    return found.get("valid", {}), found.get("test", {})
