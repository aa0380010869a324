"""``atomtune learn``: the active-learning loop (committee → explore → flag → select → label → retrain), resumable.

Maps its options onto :class:`atomtune.learn.LearnSpec` and runs :class:`atomtune.learn.ActiveLearning`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

HELP = (
    "Active learning: fine-tune a committee on --start, explore with it (MD / rattles from --explore), label the flagged, "
    "diverse frames with --calculator, retrain, repeat until the label budget is spent or nothing is flagged. Rerun the "
    "same command to resume a killed run (finished labels and fits are reused)."
)
EXAMPLES = """
Examples:

  atomtune learn --model chgnet-0.3.0 --start start.extxyz --explore explore.yaml --calculator gpaw --budget-labels 40 --out al/

  atomtune learn --model sevennet-0 --start start.extxyz --explore explore.yaml --calculator emt --test test.extxyz --committee 4 --committee-kind shallow --epochs 10 --out al/

Defaults of --strategy / --epochs / --lr / --batch-size are atomtune finetune's.

explore.yaml:

  explorers:
    - {kind: md, temperatures_k: [600, 1000, 1500], steps: 300, sample_interval: 10}
    - {kind: rattle, count: 8, stdev: 0.08}
  flag: {metric: relative, threshold: 0.2, epsilon: 0.2}
  selection: {method: fps, per_iteration: 8}
"""


def register(app: typer.Typer) -> None:
    @app.command("learn", help=HELP + EXAMPLES)
    def learn_command(
        model: str = typer.Option(..., "--model", help="Foundation model the committee is fine-tuned from."),
        start: Path = typer.Option(..., "--start", help="Labelled start structures (extxyz or ASE db)."),
        explore: Path = typer.Option(..., "--explore", help="Exploration file (YAML: explorers, flag, selection)."),
        out: Path = typer.Option(..., "--out", help="Loop directory (iterations, label cache, report.html)."),
        calculator: str = typer.Option("gpaw", "--calculator", help="Labeller: gpaw | emt | module:Class."),
        kwargs: str = typer.Option("{}", "--kwargs", help="Calculator settings as JSON, e.g. '{\"cutoff\": 450}'."),
        test: Path = typer.Option(None, "--test", help="Held-out labelled structures scored every iteration."),
        budget_labels: int = typer.Option(40, "--budget-labels", help="New labels in all (failed ones count)."),
        max_iterations: int = typer.Option(10, "--max-iterations", help="Iterations at most."),
        wall_time: float = typer.Option(None, "--wall-time", help="No new iteration after this many seconds."),
        committee: int = typer.Option(4, "--committee", help="Committee members K (≥ 2)."),
        committee_kind: str = typer.Option("full", "--committee-kind", help="full | shallow (one trunk, K heads)."),
        strategy: str = typer.Option(None, "--strategy", help="What trains in each member: full | freeze | lora."),
        freeze_depth: str = typer.Option(None, "--freeze-depth", help="Blocks that train under --strategy freeze."),
        lora_rank: int = typer.Option(None, "--lora-rank", help="LoRA rank under --strategy lora."),
        epochs: int = typer.Option(None, "--epochs", help="Epochs of each (re)training."),
        learning_rate: float = typer.Option(None, "--learning-rate", "--lr", help="AdamW learning rate."),
        batch_size: int = typer.Option(None, "--batch-size", help="Structures per optimiser step."),
        valid_fraction: float = typer.Option(0.2, "--valid-fraction", help="Share kept for validation / calibration."),
        workers: int = typer.Option(1, "--workers", help="Labelling processes (local Dask cluster)."),
        final_check: bool = typer.Option(True, "--final-check/--no-final-check", help="Explore once more at the end."),
        seed: int = typer.Option(0, "--seed", help="Seed of MD, bootstrap and selection."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    ) -> None:
        import json

        from atomtune.exceptions import AtomtuneError
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        from atomtune.learn import ActiveLearning, ExploreSpec, LearnSpec

        try:
            calculator_kwargs = json.loads(kwargs or "{}")
        except json.JSONDecodeError as error:
            raise AtomtuneError(f"--kwargs is not valid JSON ({error}): {kwargs!r}") from None
        # Only what was given on the command line; FinetuneSpec owns the defaults (the same as `atomtune finetune`).
        given = {"strategy": strategy, "freeze_depth": freeze_depth, "lora_rank": lora_rank, "epochs": epochs,
                 "learning_rate": learning_rate, "batch_size": batch_size}
        finetune = {name: value for name, value in given.items() if value is not None}
        spec = LearnSpec.build(
            model=model, start=str(start), explore=ExploreSpec.read(explore), calculator=calculator,
            calculator_kwargs=calculator_kwargs, test=str(test) if test else None, budget_labels=budget_labels,
            max_iterations=max_iterations, wall_time_s=wall_time, committee_size=committee,
            committee_kind=committee_kind, finetune=finetune, valid_fraction=valid_fraction,
            label_workers=workers, final_check=final_check, seed=seed, device=device,
        )
        console = Console()
        result = ActiveLearning(spec).run(out, progress=progress)
        table = Table(title=f"active learning ({result.stop_reason}; {result.labels_used} labels)")
        for column in ("iteration", "labels", "failed", "flagged", "valid F RMSE eV/Å", "test F RMSE eV/Å",
                       "α forces"):
            table.add_column(column, justify="right")
        for record in result.iterations:
            test_rmse = (record.test_errors or {}).get("forces_rmse")
            alpha = record.calibration.get("forces", {}).get("alpha")
            table.add_row(
                str(record.iteration), str(record.labels_added), str(record.labels_failed),
                f"{record.flagged}/{record.candidates}", f"{record.valid_errors.get('forces_rmse', float('nan')):.3f}",
                "–" if test_rmse is None else f"{test_rmse:.3f}", "–" if alpha is None else f"{alpha:.2f}",
            )
        console.print(table)
        console.print(f"last committee: {result.committee_dir} (use it as --model); report: {out / 'report.html'}")
