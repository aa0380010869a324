"""``atomtune finetune``: fine-tune a foundation model on labelled structures with one strategy (or scan a setting).

Builds a :class:`~atomtune.finetune.Strategy` and :class:`~atomtune.finetune.TrainingSettings` from the options and runs
:class:`~atomtune.finetune.Trainer`; the output directory is a model like any other (``--model ft/`` everywhere).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atomtune.cli.options import max_stress_option, trust_model_option
from atomtune.exceptions import AtomtuneError

HELP = (
    "Fine-tune a foundation model on labelled structures (full, freeze, LoRA or replay), re-estimating per-element E0s "
    "first; the --out directory is a model like any other (--model ft/)."
)
EXAMPLES = """
Examples:

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy lora --lora-rank 8 --out ft/

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy auto --budget 10m --out ft/

  atomtune finetune --model sevennet-0 --train train.extxyz --valid valid.extxyz --strategy freeze --freeze-depth 2 --out ft/

  atomtune finetune --model ./mace.model --trust-model --train train.extxyz --valid valid.extxyz --strategy replay --replay-data generated.extxyz --general-data general.extxyz --out ft/

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy freeze --scan freeze-depth=1,2,3,all --out scan/

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy lora --committee 4 --out committee/
"""


def _default(name: str) -> str:
    """The spec's default of a setting, for --help (the value lives only in FinetuneSpec)."""
    from atomtune.finetune.spec import FinetuneSpec

    default = FinetuneSpec.model_fields[name].default
    if isinstance(default, tuple):
        default = ",".join(default)
    return f" [default: {default}]" if default is not None else ""


#: CLI options that map one to one onto FinetuneSpec fields (None on the command line: the spec's default).
SPEC_OPTIONS = (
    "strategy", "freeze_depth", "lora_rank", "lora_alpha", "lora_targets", "replay_data", "replay_generate",
    "replay_weight", "replay_per_epoch", "replay_base", "epochs", "learning_rate", "batch_size", "weight_decay",
    "scheduler", "gradient_clip", "ema_decay", "patience", "loss", "huber_delta", "energy_weight", "forces_weight",
    "stress_weight", "drop_missing_stress", "e0", "dtype", "seed", "budget", "selection_metric", "warmup_fraction",
)


def register(app: typer.Typer) -> None:
    @app.command("finetune", help=HELP + EXAMPLES)
    def finetune_command(
        model: str = typer.Option(..., "--model", help="Foundation model: checkpoint name, .model file or saved dir."),
        train: Path = typer.Option(..., "--train", help="Labelled training structures (extxyz or ASE db)."),
        valid: Path = typer.Option(None, "--valid", help="Labelled validation structures (default: split off --train)."),
        valid_fraction: float = typer.Option(0.1, "--valid-fraction", help="Fraction of --train held out without --valid."),
        out: Path = typer.Option(..., "--out", help="Output model directory (checkpoints, metrics.json, plots)."),
        strategy: str = typer.Option(
            None, "--strategy",
            help="full | freeze | lora | replay | mace-multihead (mace_run_train's own replay) | auto (search full / "
            "freeze / LoRA and the learning rate within --budget)." + _default("strategy"),
        ),
        freeze_depth: str = typer.Option(
            None, "--freeze-depth", help="Blocks that train, from the readout ('all') [default: the backbone's "
            "default_freeze_depth, docs/finetuning.md]."
        ),
        lora_rank: int = typer.Option(None, "--lora-rank", help="LoRA rank r." + _default("lora_rank")),
        lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA α (update scaled by α/r). [default: 2·r]"),
        lora_targets: str = typer.Option(
            None, "--lora-targets", help="Layer kinds LoRA adapts (comma-separated)." + _default("lora_targets")
        ),
        replay_data: Path = typer.Option(None, "--replay-data", help="Labelled structures replayed every epoch."),
        replay_generate: int = typer.Option(
            None, "--replay-generate", help="Generate N structures around the training cells, pseudo-labelled by the model."
        ),
        replay_weight: float = typer.Option(
            None, "--replay-weight", help="Loss weight of replay batches." + _default("replay_weight")
        ),
        replay_per_epoch: int = typer.Option(None, "--replay-per-epoch", help="Replay structures per epoch."),
        replay_base: str = typer.Option(
            None, "--replay-base", help="What trains under replay: full | freeze | lora." + _default("replay_base")
        ),
        general_data: Path = typer.Option(
            None, "--general-data", help="Held-out 'general' set scored before and after (forgetting report)."
        ),
        epochs: int = typer.Option(
            None, "--epochs", help="Training epochs. [default: enough for 150 optimizer steps, 5 to 30 epochs]"
        ),
        learning_rate: float = typer.Option(
            None, "--learning-rate", "--lr", help="AdamW learning rate. [default: per backbone and strategy]"
        ),
        budget: str = typer.Option(
            None, "--budget", help="Wall time, e.g. 90s, 10m, 1h: the whole search for --strategy auto (default 10m), "
            "else a stop for the run."
        ),
        selection_metric: str = typer.Option(
            None, "--selection-metric", help="What picks the saved epoch (and ranks --strategy auto's candidates): "
            "balanced (each validation error over its zero-shot value), forces_rmse, energy_mae or loss (not with "
            "auto)." + _default("selection_metric"),
        ),
        warmup_fraction: float = typer.Option(
            None, "--warmup-fraction", help="Share of optimizer steps with a linear LR warm-up." + _default("warmup_fraction")
        ),
        batch_size: int = typer.Option(None, "--batch-size", help="Structures per optimiser step." + _default("batch_size")),
        weight_decay: float = typer.Option(None, "--weight-decay", help="AdamW weight decay." + _default("weight_decay")),
        scheduler: str = typer.Option(None, "--scheduler", help="cosine | plateau | constant." + _default("scheduler")),
        gradient_clip: float = typer.Option(
            None, "--gradient-clip", help="Max gradient norm (0: off)." + _default("gradient_clip")
        ),
        ema_decay: float = typer.Option(None, "--ema-decay", help="EMA decay of weights (0: off)." + _default("ema_decay")),
        patience: int = typer.Option(
            None, "--patience", help="Early stopping after N epochs without improvement (0: off)." + _default("patience")
        ),
        loss: str = typer.Option(None, "--loss", help="mse | huber." + _default("loss")),
        huber_delta: float = typer.Option(None, "--huber-delta", help="Huber width (in each term's units)."),
        energy_weight: float = typer.Option(None, "--energy-weight", help="λ_E, (eV/atom)⁻² (default: per backbone)."),
        forces_weight: float = typer.Option(None, "--forces-weight", help="λ_F, (eV/Å)⁻² (default: per backbone)."),
        stress_weight: float = typer.Option(None, "--stress-weight", help="λ_S, (eV/Å³)⁻² (default: per backbone)."),
        drop_missing_stress: bool = typer.Option(
            None, "--drop-missing-stress/--require-stress",
            help="Train structures without stress labels on energy/forces only. [default: when none has stress]",
        ),
        e0: bool = typer.Option(None, "--e0/--no-e0", help="Re-estimate per-element E0s on --train first." + _default("e0")),
        dtype: str = typer.Option(None, "--dtype", help="float32 | float64." + _default("dtype")),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        seed: int = typer.Option(None, "--seed", help="Seed for splits, shuffling and adapter initialisation."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint in --out."),
        keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep checkpoint.pt after finishing."),
        scan: str = typer.Option(None, "--scan", help="One run per value: e.g. freeze-depth=1,2,3,all."),
        committee: int = typer.Option(
            None, "--committee", help="Train a committee of K members (uncertainty: energy_std, forces_std, stress_std)."
        ),
        committee_kind: str = typer.Option(
            "full", "--committee-kind",
            help="full: K fine-tunes (seeds + bootstrap, one shared E0 fit); shallow: one trunk, K readout heads.",
        ),
        trust_model: bool = trust_model_option(),
        energy_key: str = typer.Option(None, "--energy-key", help="Energy key in the files (default: auto)."),
        forces_key: str = typer.Option(None, "--forces-key", help="Forces key in the files (default: auto)."),
        stress_key: str = typer.Option(None, "--stress-key", help="Stress key in the files (default: auto)."),
        max_stress_gpa: float = max_stress_option(),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar per epoch."),
    ) -> None:
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        options = dict(locals())
        spec = spec_from_options(options)
        console = Console()
        datasets = _read_datasets(options, spec.seed, console)

        def run_once(run_spec, directory: Path):
            if committee is not None:
                from atomtune.uncertainty.train import finetune_committee

                return finetune_committee(run_spec, model, datasets["train"], datasets["valid"], directory,
                                          size=committee, kind=committee_kind, device=device, resume=resume,
                                          progress=progress, trust=trust_model, log=console.print)
            return run_spec.fit(model, datasets["train"], datasets["valid"], directory, device=device, resume=resume,
                                general=datasets.get("general_data"), progress=progress,
                                keep_checkpoint=keep_checkpoint, trust=trust_model, log=console.print)

        if scan:
            from atomtune.finetune.scan import Scan

            plan = Scan.parse(scan)
            rows = plan.run(lambda value, directory: _scan_run(spec, plan.parameter, value, directory, resume, console,
                                                               run_once), out)
            _print_scan(console, plan, rows, out)
            return
        _print_result(console, run_once(spec, out))


def spec_from_options(options: dict):
    """The :class:`~atomtune.finetune.spec.FinetuneSpec` of the command-line options (unset options: its defaults);
    invalid values get one error naming the option."""
    from pydantic import ValidationError

    from atomtune.finetune.spec import FinetuneSpec

    given = {name: options[name] for name in SPEC_OPTIONS if options.get(name) is not None}
    if "replay_data" in given:
        given["replay_data"] = str(given["replay_data"])
    try:
        return FinetuneSpec(**given)
    except ValidationError as error:
        raise AtomtuneError("; ".join(_option_message(item) for item in error.errors())) from None


def _option_message(item: dict) -> str:
    location = [str(part) for part in item["loc"] if not str(part).startswith(("function-", "literal["))]
    option = f"--{location[0].replace('_', '-')}" if location else "finetune settings"
    message = item["msg"].removeprefix("Value error, ")
    return f"{option}: {message}" + (f" (got {item['input']!r})" if location else "")


def _scan_run(spec, parameter: str, value, directory: Path, resume: bool, console: Console, run_once):
    """One run of a scan (``parameter`` set to ``value``); a finished run is reused under --resume."""
    from atomtune.finetune import FitResult
    from atomtune.finetune.loop import METRICS_FILE

    console.rule(f"{parameter} = {value}")
    metrics_file = Path(directory) / METRICS_FILE
    if resume and metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("finished"):
            console.print(f"{directory}: finished earlier, reusing its metrics")
            return FitResult(None, metrics["history"], metrics, Path(directory))
    run_spec = spec.model_validate({**spec.model_dump(), parameter.replace("-", "_"): value})
    return run_once(run_spec, Path(directory))


def _read_datasets(options: dict, seed: int, console: Console) -> dict:
    from atomtune.data.dataset import Dataset

    keys = {"energy_key": options["energy_key"], "forces_key": options["forces_key"], "stress_key": options["stress_key"],
            "max_stress_gpa": options["max_stress_gpa"]}
    train = Dataset.read(options["train"], **keys)
    if options["valid"] is not None:
        valid = Dataset.read(options["valid"], **keys)
    else:
        if not 0 < options["valid_fraction"] < 1:
            raise AtomtuneError(f"--valid-fraction must be in (0, 1), got {options['valid_fraction']}.")
        parts = train.split({"train": 1 - options["valid_fraction"], "valid": options["valid_fraction"]}, seed=seed)
        train, valid = parts["train"], parts["valid"]
        console.print(f"no --valid: held out {len(valid)} of {len(train) + len(valid)} structures of {options['train']}")
    datasets = {"train": train, "valid": valid}
    if options["general_data"] is not None:
        datasets["general_data"] = Dataset.read(options["general_data"], **keys)
    console.print(
        f"train: {len(train)} structures ({' '.join(train.elements)}), valid: {len(valid)}"
        + (f", general: {len(datasets['general_data'])}" if "general_data" in datasets else "")
    )
    return datasets


def _print_result(console: Console, result) -> None:
    metrics = result.metrics
    best = metrics.get("best_epoch")
    table = Table(title=f"validation errors ({metrics['epochs_run']} epochs"
                        + (f", best epoch {best})" if best is not None else ")"))
    table.add_column("model")
    columns = [("energy_mae_mev_per_atom", "E MAE meV/atom"), ("forces_mae", "F MAE eV/Å"),
               ("forces_rmse", "F RMSE eV/Å"), ("stress_mae_gpa", "S MAE GPa")]
    for _, title in columns:
        table.add_column(title, justify="right")
    rows = [("zero-shot", metrics["zero_shot"]["valid"])] if "valid" in metrics["zero_shot"] else []
    if "valid_after_e0" in metrics["zero_shot"]:
        rows.append(("zero-shot + E0", metrics["zero_shot"]["valid_after_e0"]))
    rows.append(("fine-tuned", metrics["final"]["valid"]))
    for label, values in rows:
        table.add_row(label, *[f"{values[key]:.4g}" if key in values else "–" for key, _ in columns])
    console.print(table)
    if metrics.get("forgetting"):
        change = metrics["forgetting"]["change"]
        console.print(
            "forgetting on the general set (after − before; energies E0-aligned): "
            + ", ".join(f"{key} {value:+.4g}" for key, value in change.items())
        )
    if metrics.get("e0"):
        offsets = metrics["e0"]["fitted_offsets"]
        console.print("E0 re-estimated (eV/atom): " + ", ".join(f"{k} {v:+.4f}" for k, v in offsets.items()))
    counts = metrics.get("parameters")
    if counts:
        console.print(
            f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
            f"({100 * counts['trainable'] / max(counts['total'], 1):.2f} %)"
        )
    if metrics.get("worse_than_zero_shot"):
        console.print("[yellow]worse than the E0-aligned zero-shot on validation: " + ", ".join(
            f"{key} {v['zero_shot']:.4g} → {v['fine_tuned']:.4g}" for key, v in metrics["worse_than_zero_shot"].items()))
    if metrics.get("search"):
        _print_search(console, Path(result.out), metrics["search"])
    if metrics.get("members"):
        console.print(f"committee of {len(metrics['members'])} members; calibration on the validation set saved "
                      f"with the model (predict gives energy_std, forces_std, stress_std)")
    console.print(f"model written to {result.out} (use --model {result.out}); metrics.json and learning_curve.png beside it")


def _print_search(console: Console, out: Path, search: dict) -> None:
    """The ``--strategy auto`` search: every trial slice, its score and where each candidate stopped."""
    state = json.loads((out / search["file"]).read_text())
    table = Table(title=f"strategy search ({search['total_seconds']:.0f} s of a {search['budget_seconds']:.0f} s budget; "
                        f"score: mean validation error / E0-aligned zero-shot, lower is better)")
    for title in ("candidate", "rung", "learning rate", "train s", "score", "F RMSE eV/Å", "E MAE meV/atom", "outcome"):
        table.add_column(title, justify="right" if title not in ("candidate", "outcome") else "left")
    for row in state["rows"].values():
        stopped = state["stopped"].get(row["candidate"], {})
        outcome = ("winner" if row["candidate"] == state.get("winner") else
                   f"stopped after rung {stopped['rung']}" if "rung" in stopped and "error" not in stopped else
                   stopped.get("error", "")[:60])
        valid = row.get("valid", {})
        table.add_row(row["candidate"], str(row["rung"]), f"{row.get('learning_rate') or 0:.2g}",
                      f"{row.get('seconds', 0):.1f}", f"{row['score']:.3f}" if "score" in row else "–",
                      f"{valid['forces_rmse']:.4g}" if "forces_rmse" in valid else "–",
                      f"{valid['energy_mae_mev_per_atom']:.4g}" if "energy_mae_mev_per_atom" in valid else "–", outcome)
    console.print(table)
    console.print(f"search log {out / search['file']}, plot {out / search['plot']}")


def _print_scan(console: Console, plan, rows: list[dict], out: Path) -> None:
    table = Table(title=f"scan of {plan.parameter} (validation errors)")
    for title in (plan.parameter, "E MAE meV/atom", "F MAE eV/Å", "F RMSE eV/Å", "S MAE GPa", "trainable", "s/epoch"):
        table.add_column(title, justify="right")
    best = plan.best(rows)
    for row in rows:
        mark = " *" if row is best else ""
        table.add_row(
            f"{row['value']}{mark}",
            f"{row['energy_mae_mev_per_atom']:.4g}",
            f"{row['forces_mae']:.4g}",
            f"{row['forces_rmse']:.4g}",
            f"{row['stress_mae_gpa']:.4g}" if "stress_mae_gpa" in row else "–",
            f"{row['trainable_parameters']:,}",
            f"{row['seconds_per_epoch']:.1f}",
        )
    console.print(table)
    console.print(f"* lowest force RMSE: {plan.parameter}={best['value']} → {best['model']}")
    console.print(f"wrote {Path(out) / 'scan.json'} and {Path(out) / 'scan.png'}")
