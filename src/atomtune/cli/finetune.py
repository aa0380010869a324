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

from atomtune.exceptions import AtomtuneError

HELP = (
    "Fine-tune a foundation model on labelled structures (full, freeze, LoRA or replay), re-estimating per-element E0s "
    "first; the --out directory is a model like any other (--model ft/)."
)
EXAMPLES = """
Examples:

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy lora --lora-rank 8 --out ft/

  atomtune finetune --model sevennet-0 --train train.extxyz --valid valid.extxyz --strategy freeze --freeze-depth 2 --out ft/

  atomtune finetune --model ./mace.model --train train.extxyz --valid valid.extxyz --strategy replay --replay-data generated.extxyz --general-data general.extxyz --out ft/

  atomtune finetune --model chgnet-0.3.0 --train train.extxyz --valid valid.extxyz --strategy freeze --scan freeze-depth=1,2,3,all --out scan/
"""


def register(app: typer.Typer) -> None:
    @app.command("finetune", help=HELP + EXAMPLES)
    def finetune_command(
        model: str = typer.Option(..., "--model", help="Foundation model: checkpoint name, .model file or saved dir."),
        train: Path = typer.Option(..., "--train", help="Labelled training structures (extxyz or ASE db)."),
        valid: Path = typer.Option(None, "--valid", help="Labelled validation structures (default: split off --train)."),
        valid_fraction: float = typer.Option(0.1, "--valid-fraction", help="Fraction of --train held out without --valid."),
        out: Path = typer.Option(..., "--out", help="Output model directory (checkpoints, metrics.json, plots)."),
        strategy: str = typer.Option(
            "full", "--strategy", help="full | freeze | lora | replay | mace-multihead (mace_run_train's own replay)."
        ),
        freeze_depth: str = typer.Option("2", "--freeze-depth", help="Blocks that train, from the readout ('all')."),
        lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank r."),
        lora_alpha: float = typer.Option(16.0, "--lora-alpha", help="LoRA α (update scaled by α/r)."),
        lora_targets: str = typer.Option(
            "linear,e3nn_linear,e3nn_mlp", "--lora-targets", help="Layer kinds LoRA adapts (comma-separated)."
        ),
        replay_data: Path = typer.Option(None, "--replay-data", help="Labelled structures replayed every epoch."),
        replay_generate: int = typer.Option(
            0, "--replay-generate", help="Generate N structures around the training cells, pseudo-labelled by the model."
        ),
        replay_weight: float = typer.Option(0.5, "--replay-weight", help="Loss weight of replay batches."),
        replay_per_epoch: int = typer.Option(None, "--replay-per-epoch", help="Replay structures per epoch."),
        replay_base: str = typer.Option("full", "--replay-base", help="What trains under replay: full | freeze | lora."),
        general_data: Path = typer.Option(
            None, "--general-data", help="Held-out 'general' set scored before and after (forgetting report)."
        ),
        epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
        learning_rate: float = typer.Option(1e-3, "--learning-rate", "--lr", help="AdamW learning rate."),
        batch_size: int = typer.Option(4, "--batch-size", help="Structures per optimiser step."),
        weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay."),
        scheduler: str = typer.Option("cosine", "--scheduler", help="cosine | plateau | constant."),
        gradient_clip: float = typer.Option(10.0, "--gradient-clip", help="Max gradient norm (0: off)."),
        ema_decay: float = typer.Option(0.99, "--ema-decay", help="EMA decay of weights (0: off)."),
        patience: int = typer.Option(10, "--patience", help="Early stopping after N epochs without improvement (0: off)."),
        loss: str = typer.Option("mse", "--loss", help="mse | huber."),
        huber_delta: float = typer.Option(0.01, "--huber-delta", help="Huber width (in each term's units)."),
        energy_weight: float = typer.Option(None, "--energy-weight", help="λ_E, (eV/atom)⁻² (default: per backbone)."),
        forces_weight: float = typer.Option(None, "--forces-weight", help="λ_F, (eV/Å)⁻² (default: per backbone)."),
        stress_weight: float = typer.Option(None, "--stress-weight", help="λ_S, (eV/Å³)⁻² (default: per backbone)."),
        drop_missing_stress: bool = typer.Option(
            False, "--drop-missing-stress", help="Train structures without stress labels on energy/forces only."
        ),
        refit_e0: bool = typer.Option(True, "--e0/--no-e0", help="Re-estimate per-element E0s on --train first."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | float64."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        seed: int = typer.Option(0, "--seed", help="Seed for splits, shuffling and adapter initialisation."),
        threads: int = typer.Option(None, "--threads", help="torch / BLAS threads (default: all cores)."),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint in --out."),
        keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep checkpoint.pt after finishing."),
        scan: str = typer.Option(None, "--scan", help="One run per value: e.g. freeze-depth=1,2,3,all."),
        energy_key: str = typer.Option(None, "--energy-key", help="Energy key in the files (default: auto)."),
        forces_key: str = typer.Option(None, "--forces-key", help="Forces key in the files (default: auto)."),
        stress_key: str = typer.Option(None, "--stress-key", help="Stress key in the files (default: auto)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar per epoch."),
    ) -> None:
        from atomtune.runtime import configure_threads

        configure_threads(threads)
        options = dict(locals())
        console = Console()
        datasets = _read_datasets(options, console)
        if scan:
            from atomtune.finetune.scan import Scan

            plan = Scan.parse(scan)
            rows = plan.run(lambda value, directory: _run_once(options, datasets, console, plan.parameter, value,
                                                               directory), out)
            _print_scan(console, plan, rows, out)
            return
        result = _run_once(options, datasets, console)
        _print_result(console, result)


def _read_datasets(options: dict, console: Console) -> dict:
    from atomtune.data.dataset import Dataset

    keys = {"energy_key": options["energy_key"], "forces_key": options["forces_key"], "stress_key": options["stress_key"]}
    train = Dataset.read(options["train"], **keys)
    if options["valid"] is not None:
        valid = Dataset.read(options["valid"], **keys)
    else:
        if not 0 < options["valid_fraction"] < 1:
            raise AtomtuneError(f"--valid-fraction must be in (0, 1), got {options['valid_fraction']}.")
        parts = train.split(
            {"train": 1 - options["valid_fraction"], "valid": options["valid_fraction"]}, seed=options["seed"]
        )
        train, valid = parts["train"], parts["valid"]
        console.print(f"no --valid: held out {len(valid)} of {len(train) + len(valid)} structures of {options['train']}")
    datasets = {"train": train, "valid": valid}
    for name in ("replay_data", "general_data"):
        if options[name] is not None:
            datasets[name] = Dataset.read(options[name], **keys)
    console.print(
        f"train: {len(train)} structures ({' '.join(train.elements)}), valid: {len(valid)}"
        + "".join(f", {name.split('_')[0]}: {len(data)}" for name, data in datasets.items() if name.endswith("_data"))
    )
    return datasets


def _build_strategy(options: dict):
    from atomtune.finetune import Freeze, Full, LoRA, Replay

    def simple(name: str):
        if name == "full":
            return Full()
        if name == "freeze":
            return Freeze(options["freeze_depth"])
        if name == "lora":
            targets = tuple(t.strip() for t in str(options["lora_targets"]).split(",") if t.strip())
            return LoRA(options["lora_rank"], options["lora_alpha"], targets=targets, seed=options["seed"])
        raise AtomtuneError(f"unknown strategy {name!r}: use full, freeze, lora or replay.")

    name = options["strategy"]
    if name == "replay":
        return Replay(
            options["datasets"].get("replay_data"),
            weight=options["replay_weight"],
            generate=options["replay_generate"],
            per_epoch=options["replay_per_epoch"],
            base=simple(options["replay_base"]),
            seed=options["seed"],
        )
    if options["replay_data"] is not None or options["replay_generate"]:
        raise AtomtuneError("--replay-data / --replay-generate need --strategy replay (with --replay-base for the rest).")
    return simple(name)


def _build_settings(options: dict, backbone: str):
    from dataclasses import replace

    from atomtune.finetune import TrainingSettings, default_loss_weights

    weights = default_loss_weights(backbone)
    overrides = {
        name: options[f"{name}_weight"] for name in ("energy", "forces", "stress") if options[f"{name}_weight"] is not None
    }
    weights = replace(weights, kind=options["loss"], huber_delta=options["huber_delta"], **overrides)
    if overrides:
        weights = replace(weights, source=f"{weights.source}; overridden: {', '.join(sorted(overrides))}")
    return TrainingSettings(
        epochs=options["epochs"],
        learning_rate=options["learning_rate"],
        batch_size=options["batch_size"],
        weight_decay=options["weight_decay"],
        scheduler=options["scheduler"],
        gradient_clip=options["gradient_clip"] or None,
        ema_decay=options["ema_decay"] or None,
        early_stopping_patience=options["patience"] or None,
        loss=weights,
        refit_e0=options["refit_e0"],
        drop_missing_stress=options["drop_missing_stress"],
        dtype=options["dtype"],
        seed=options["seed"],
        progress=options["progress"],
        keep_checkpoint=options["keep_checkpoint"],
    )


def _run_once(options: dict, datasets: dict, console: Console, parameter: str | None = None, value=None,
              out: Path | None = None):
    """One fine-tuning run (with one scanned setting overridden); a finished scan run is reused under --resume."""
    from atomtune.finetune import FitResult, Trainer
    from atomtune.finetune.loop import METRICS_FILE
    from atomtune.models import load_potential

    options = {**options, "datasets": datasets}
    if parameter is not None:
        options[parameter.replace("-", "_")] = value
        console.rule(f"{parameter} = {value}")
    out = Path(out or options["out"])
    metrics_file = out / METRICS_FILE
    if parameter is not None and options["resume"] and metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("finished"):
            console.print(f"{out}: finished earlier, reusing its metrics")
            return FitResult(None, metrics["history"], metrics, out)
    if options["strategy"] == "mace-multihead":
        return _run_mace_multihead(options, datasets, out)
    strategy = _build_strategy(options)
    potential = load_potential(options["model"], device=options["device"], dtype=options["dtype"])
    settings = _build_settings(options, potential.backbone)
    console.print(
        f"fine-tuning {potential.name} with {strategy!r}; loss weights E {settings.loss.energy:g}, "
        f"F {settings.loss.forces:g}, S {settings.loss.stress:g} ({settings.loss.kind}; {settings.loss.source})"
    )
    return Trainer(settings).fit(
        potential,
        datasets["train"],
        datasets["valid"],
        strategy,
        out=out,
        resume=options["resume"],
        general=datasets.get("general_data"),
        model_spec=options["model"],
    )


def _run_mace_multihead(options: dict, datasets: dict, out: Path):
    """mace's own multihead replay fine-tuning; the replay head gets --replay-data and/or generated pseudo-labels."""
    from atomtune.finetune.mace_multihead import MaceMultiheadFinetune
    from atomtune.finetune.strategies.replay import generate_around, pseudo_label
    from atomtune.models import load_potential

    foundation = load_potential(options["model"], device=options["device"], dtype="float64")
    if foundation.backbone != "mace":
        raise AtomtuneError(f"--strategy mace-multihead needs a MACE model; {options['model']} is {foundation.backbone}.")
    train, valid = list(datasets["train"]), list(datasets["valid"])
    foundation.check_elements(train + valid, where="the training or validation set")
    replay = list(datasets.get("replay_data") or [])
    if options["replay_generate"]:
        replay += pseudo_label(foundation, generate_around(train, options["replay_generate"], options["seed"]))
    model_file = Path(options["model"])
    weights = _build_settings(options, "mace").loss
    native = MaceMultiheadFinetune(
        str(model_file) if model_file.exists() else foundation.checkpoint,
        epochs=options["epochs"],
        learning_rate=options["learning_rate"],
        batch_size=options["batch_size"],
        energy_weight=weights.energy,
        forces_weight=weights.forces,
        stress_weight=weights.stress if all(labels.stress is not None for labels in datasets["train"].labels()) else 0.0,
        weight_pt_head=options["replay_weight"],
        seed=options["seed"],
        device=options["device"],
    )
    return native.run(train, valid, replay, out, model_spec=options["model"])


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
    counts = metrics["parameters"]
    console.print(
        f"trainable parameters: {counts['trainable']:,} of {counts['total']:,} "
        f"({100 * counts['trainable'] / max(counts['total'], 1):.2f} %)"
    )
    console.print(f"model written to {result.out} (use --model {result.out}); metrics.json and learning_curve.png beside it")


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
