"""``atomtune bench``: run one property task on the reference calculator and on every model, side by side.

The command-line face of :mod:`atomtune.tasks`: the same ``run`` for the reference (EMT, GPAW, any ``module:Class``
ASE calculator, built per structure by :class:`atomtune.data.label.CalculatorSpec` because a DFT calculator's settings
depend on the structure) and for each ``--model`` (its Potential, so relax-based tasks batch), then ``compare`` printed
as a table and ``plot`` written as PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperCommand

from atomtune.cli.options import trust_model_option


class BenchCommand(TyperCommand):
    """``bench --help`` also lists every task's settings with their defaults; built only when help is asked for (it
    imports every task module)."""

    def format_help(self, ctx, formatter):
        from atomtune.tasks import settings_overview

        self.epilog = settings_overview()
        return super().format_help(ctx, formatter)


def register(app: typer.Typer) -> None:
    @app.command("bench", cls=BenchCommand)
    def bench_command(
        task: str = typer.Option(
            ..., "--task",
            help="relax, substitution, eos, elastic, phonons, md, surface, vacancy, stacking_fault, adsorption, "
            "composition_scan or errors",
        ),
        data: Path = typer.Option(..., "--data", help="structures (extxyz or ASE db; labels not needed)"),
        model: list[str] = typer.Option([], "--model", help="model name, .model file or fine-tuned dir; repeat"),
        trust_model: bool = trust_model_option(),
        reference: str = typer.Option(None, "--reference", help="reference calculator: emt, gpaw or module:Class"),
        reference_kwargs: str = typer.Option(
            "{}", "--reference-kwargs", help='JSON settings of the reference calculator, e.g. \'{"cutoff": 450}\''
        ),
        settings: str = typer.Option(
            None, "--settings",
            help='task settings as JSON (\'{"fmax": 0.02}\') or a .json/.yaml file; fields are the task\'s Settings',
        ),
        out: Path = typer.Option(Path("results"), "--out", help="output folder; the task writes into OUT/TASK/"),
        limit: int = typer.Option(None, "--limit", help="use only the first N structures"),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
        dtype: str = typer.Option("float32", "--dtype", help="model precision: float32 or float64"),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ) -> None:
        """Run a property task on the reference and on every model; print the comparison, write JSON records and PNGs.

        Example: atomtune bench --task eos --model chgnet-0.3.0 --model runs/ft/ --reference emt --data bulk.extxyz
        --out results/

        Writes OUT/TASK/records_<label>.json (one record per structure, units in the key names), OUT/TASK/compare.json
        (the table's rows) and the task's plots. A structure that fails for one calculator is a record with "error"; the
        others finish.
        """
        from rich.console import Console

        from atomtune.exceptions import AtomtuneError
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        from atomtune.data.dataset import Dataset
        from atomtune.files import safe_file_name
        from atomtune.tasks.spec import TaskRun

        console = Console()
        if not model and not reference:
            raise AtomtuneError("nothing to run: give at least one --model or a --reference calculator.")
        run = TaskRun(task=task, settings=_settings_dict(settings), limit=limit)  # validated before any work
        module = run.module()
        # ids fixed up front: the reference runs one structure at a time
        structures = run.select(Dataset.read(data, require=()))
        console.print(f"{data}: {len(structures)} structures; task {task}")

        results: dict[str, list[dict]] = {}
        reference_label = None
        if reference:
            spec = _reference_spec(reference, reference_kwargs)
            reference_label = _reference_label(spec.name)
            results[reference_label] = run.run(structures, spec, progress=progress)
        if model:
            from atomtune.models import load_potential

            for spec_name in model:
                potential = load_potential(spec_name, device=device, dtype=dtype, trust=trust_model)
                present = {symbol for atoms in structures for symbol in atoms.get_chemical_symbols()}
                missing = sorted(present - potential.supported_elements)
                if missing:
                    console.print(f"[yellow]{spec_name} lacks {', '.join(missing)}: those structures get error records")
                results[spec_name] = run.run(structures, potential, progress=progress)

        task_dir = out / module.__name__.rsplit(".", 1)[-1]
        task_dir.mkdir(parents=True, exist_ok=True)
        for label, records in results.items():
            (task_dir / f"records_{safe_file_name(label)}.json").write_text(json.dumps(records, indent=1))
        rows = module.compare(results, reference=reference_label)
        (task_dir / "compare.json").write_text(
            json.dumps({"task": task, "data": str(data), "reference": reference_label, "rows": rows}, indent=1)
        )
        plots = module.plot(results, task_dir)
        console.print(comparison_table(rows, list(results), f"{task} on {data.name}"))
        failed = {label: sum(bool(r.get("error")) for r in records) for label, records in results.items()}
        for label, count in failed.items():
            if count:
                records_file = f"records_{safe_file_name(label)}.json"
                console.print(f"[yellow]{label}: {count} record(s) with an error (see {records_file})")
        console.print(f"wrote {len(results)} record file(s), compare.json and {len(plots)} plot(s) in {task_dir}")


def comparison_table(rows: list[dict], models: list[str], title: str):
    """A rich Table of compare() rows: the row's labels (id, property / metric) first, then the models' columns, then
    any other numeric columns (differences to the reference)."""
    from rich.table import Table

    table = Table(title=title)
    label_columns = [key for key in ("id", "property", "metric") if any(key in row for row in rows)]
    extra = [
        key
        for key in dict.fromkeys(k for row in rows for k in row)
        if key not in label_columns and key not in models and key != "error"
    ]
    for column in label_columns:
        table.add_column(column)
    for column in [*models, *extra]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*[str(row.get(c, "")) for c in label_columns], *[_cell(row.get(c)) for c in [*models, *extra]])
    return table


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def _settings_dict(text: str | None) -> dict:
    """Task settings from a JSON string or a .json / .yaml file (checked by :class:`~atomtune.tasks.spec.TaskRun`)."""
    from atomtune.exceptions import AtomtuneError

    if not text:
        return {}
    path = Path(text)
    if path.suffix in (".json", ".yaml", ".yml") and path.exists():
        import yaml

        values = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        where = str(path)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            message = f"--settings is neither a .json/.yaml file nor valid JSON ({error}): {text!r}"
            raise AtomtuneError(message) from None
        where = "--settings"
    if not isinstance(values, dict):
        raise AtomtuneError(f"{where} must be a mapping of setting names to values, e.g. '{{\"fmax\": 0.02}}'.")
    return values


def _reference_spec(name: str, kwargs_json: str):
    from atomtune.data.label import CalculatorSpec

    return CalculatorSpec.from_json(name, kwargs_json)


def _reference_label(name: str) -> str:
    """Column name of the reference: ``emt``, ``gpaw``, or the class name of a ``module:Class`` calculator."""
    return name.rsplit(":", 1)[-1] if ":" in name else name.lower()
