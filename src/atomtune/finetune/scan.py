"""Hyperparameter scans: one fine-tuning run per value of one setting, then a table and a plot to choose from.

``atomtune finetune … --scan freeze-depth=1,2,3,all`` treats the freeze depth (or the LoRA rank, learning rate, …) as a
hyperparameter: each value trains into its own ``out/scan/<name>=<value>/`` model directory, scored on the same validation
set, and ``scan.json`` + ``scan.png`` summarise them (with the zero-shot line for reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from atomtune.exceptions import AtomtuneError
from atomtune.files import atomic_write_json

#: Settings a scan can vary (CLI spelling) and how each value is parsed.
SCANNABLE: dict[str, Callable[[str], object]] = {
    "freeze-depth": lambda text: text if text.strip().lower() == "all" else int(text),
    "lora-rank": int,
    "lora-alpha": float,
    "learning-rate": float,
    "epochs": int,
    "batch-size": int,
    "replay-weight": float,
    "weight-decay": float,
    "forces-weight": float,
    "energy-weight": float,
    "stress-weight": float,
}

#: Columns of the scan table (validation errors after fine-tuning).
COLUMNS = ("energy_mae_mev_per_atom", "forces_mae", "forces_rmse", "stress_mae_gpa")


class Scan:
    """One run per value of ``parameter``. ``Scan.parse("freeze-depth=1,2,all").run(run_one, out)``."""

    def __init__(self, parameter: str, values: Sequence):
        if parameter not in SCANNABLE:
            raise AtomtuneError(f"cannot scan {parameter!r}; scannable settings: {', '.join(SCANNABLE)}.")
        if not values:
            raise AtomtuneError(f"--scan {parameter}= needs at least one value, e.g. {parameter}=1,2,3.")
        self.parameter = parameter
        self.values = list(values)

    @classmethod
    def parse(cls, text: str) -> Scan:
        """``"name=v1,v2,…"`` → a Scan with values parsed to the setting's type (clear error otherwise)."""
        if "=" not in text:
            raise AtomtuneError(f"--scan {text!r}: write NAME=V1,V2,… (e.g. freeze-depth=1,2,3,all).")
        name, _, raw = text.partition("=")
        name = name.strip().replace("_", "-")
        if name not in SCANNABLE:
            raise AtomtuneError(f"cannot scan {name!r}; scannable settings: {', '.join(SCANNABLE)}.")
        values = []
        for item in (part.strip() for part in raw.split(",")):
            if not item:
                continue
            try:
                values.append(SCANNABLE[name](item))
            except ValueError:
                raise AtomtuneError(f"--scan {name}: {item!r} is not a valid value.") from None
        return cls(name, values)

    def run_directory(self, out: Path, value) -> Path:
        return Path(out) / "scan" / f"{self.parameter}={value}"

    def run(self, run_one: Callable[[object, Path], object], out: str | Path) -> list[dict]:
        """Call ``run_one(value, directory)`` → :class:`~atomtune.finetune.FitResult` for each value; write the summary.

        Returns the table rows (one per value): the value, validation errors, trainable parameters, best epoch, seconds
        per epoch and the model directory.
        """
        out = Path(out)
        rows = []
        zero_shot = None
        for value in self.values:
            directory = self.run_directory(out, value)
            result = run_one(value, directory)
            metrics = result.metrics
            zero_shot = metrics["zero_shot"].get("valid_after_e0", metrics["zero_shot"]["valid"])
            row = {"value": value, **metrics["final"]["valid"]}
            row.update(
                trainable_parameters=metrics["parameters"]["trainable"],
                best_epoch=metrics["best_epoch"],
                seconds_per_epoch=metrics["seconds_per_epoch"],
                model=str(directory),
            )
            rows.append(row)
        self.write(rows, zero_shot, out)
        return rows

    def write(self, rows: list[dict], zero_shot: dict | None, out: Path) -> None:
        """``scan.json`` (rows + zero-shot errors) and ``scan.png`` (validation errors vs value) in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        record = {"parameter": self.parameter, "rows": rows, "zero_shot_valid": zero_shot}
        atomic_write_json(out / "scan.json", record, lenient=True)
        plot_scan(self.parameter, rows, zero_shot, out / "scan.png")

    def best(self, rows: list[dict], metric: str = "forces_rmse") -> dict:
        """The row with the lowest validation ``metric``."""
        return min(rows, key=lambda row: row[metric])


def plot_scan(parameter: str, rows: list[dict], zero_shot: dict | None, path: Path) -> Path:
    """Validation energy MAE and force RMSE per scanned value, zero-shot (after E0) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(row["value"]) for row in rows]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for axis, key, ylabel in (
        (axes[0], "energy_mae_mev_per_atom", "validation energy MAE (meV/atom)"),
        (axes[1], "forces_rmse", "validation force RMSE (eV/Å)"),
    ):
        axis.plot(labels, [row[key] for row in rows], "-o")
        if zero_shot is not None and key in zero_shot:
            axis.axhline(zero_shot[key], linestyle="--", color="gray", label="zero-shot (E0 re-estimated)")
            axis.legend()
        axis.set_xlabel(parameter)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
