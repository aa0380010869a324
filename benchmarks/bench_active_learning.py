"""Benchmark: the cost of uncertainty, the cost of one GPAW label, and the active-learning loop on Ni / Ni–Al / Ni–Cu.

Three parts (run one at a time; results in ``benchmarks/results/active_learning_<part>.json``, summarised in
docs/active_learning.md):

``cost``: predict time of one model vs a shallow committee (one trunk pass, K readout heads; per-head forces and stress
from one vmapped backward, and from K backwards) vs a full committee (K forwards), K members each, side by side in one
process on the same structures (the shipped dataset's small cells), median of interleaved repeats; also energy-only
predicts (σ_E without forces). ``--model`` takes several models, each measured in turn.

``label-cost``: one GPAW label of a small MD frame (a 4-atom Ni₃Al cell after CHGNet MD at 1500 K) with the shipped
dataset's settings (PW 450 eV, k-density 2.5 Å⁻¹, Fermi–Dirac 0.1 eV, spin-polarised): what one active-learning label
costs here, before deciding how many to buy.

``loop``: start from 10 shipped small cells, run the active-learning loop (labels of committee-MD frames at 600–1500 K
with the shipped GPAW settings) to ``--budget`` labels, then label the same number of zero-shot MD frames of the same
cells and temperatures picked at random and by DIRECT (and twice that number at random: the issue's target compares
the loop with twice its labels picked at random), train the same committee on each, and score all arms on
``--test`` (held-out labelled MD frames: the ``heldout`` part makes them). Labels are cached in ``OUT/al/label-cache``
and every committee checkpoints, so a rerun reuses all work already paid for.

``score``: the ``loop`` record from what is on disk (the loop's ``learn_results.json`` and every baseline arm whose
committee has finished, each scored on ``--test``): the arms of a loop still running, or killed, without waiting for all.

``al-fresh``: a control for the loop's schedule (its committee continues training every iteration, so it has trained
more epochs than a baseline's): the baselines' committee fitted once on the start cells plus the loop's labelled frames;
then ``score``.

``heldout``: the held-out set for ``loop``: zero-shot MD frames (600, 1000, 1500 K) of shipped 4-atom cells that are not
among the loop's start cells, labelled with the same settings into the same cache, written to ``OUT/test.extxyz``.
``--calculator emt`` is a quick dry run of the machinery (not a result: EMT is not the shipped PBE).

    python benchmarks/bench_active_learning.py cost --model chgnet-0.3.0 sevennet-0 tiny-mace.model --trust-model \
        --committee 4 --threads 1
    python benchmarks/bench_active_learning.py label-cost --threads 1
    python benchmarks/bench_active_learning.py heldout --threads 1
    python benchmarks/bench_active_learning.py loop --budget 25 --threads 1 \
        --test benchmarks/results/active_learning_loop/test.extxyz
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "atomtune" / "resources" / "ni_alloy" / "ni_alloy_pbe.extxyz"
PROVENANCE = ROOT / "src" / "atomtune" / "resources" / "ni_alloy" / "provenance.json"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    load = os.getloadavg()
    return {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average_1_5_15_min": [round(x, 2) for x in load],
        "note": "shared 2-core machine, other sessions running: compare ratios measured side by side, not seconds",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def shipped_settings() -> dict:
    return json.loads(PROVENANCE.read_text())["settings"]


# -- cost of uncertainty ---------------------------------------------------------------------------------------------


def committees(model: str, size: int, trust: bool = False):
    """One model, a full committee (K independent copies, every weight scaled differently) and a shallow one (shared
    trunk weights, K readout heads perturbed as ``train_committee`` starts them): the objects ``train_committee``
    returns, without the training."""
    import torch

    from atomtune.models import load_potential
    from atomtune.uncertainty import CommitteePotential
    from atomtune.uncertainty.committee import readout_block
    from atomtune.uncertainty.train import _perturb

    single = load_potential(model, **({"trust": True} if trust else {}))
    full_members = []
    for k in range(size):
        member = copy.deepcopy(single)
        with torch.no_grad():
            for parameter in member.parameters():  # every weight differs, as after K fine-tunes
                parameter.mul_(1 + 1e-3 * k)
        full_members.append(member)
    shallow_members = []
    for k in range(size):
        member = copy.deepcopy(single)
        _perturb(readout_block(member), 0.1, k)
        shallow_members.append(member)
    return single, CommitteePotential(full_members, "full"), CommitteePotential(shallow_members, "shallow")


def cost_of(model: str, structures, args) -> dict:
    """Median predict seconds of each variant, interleaved repeats (load changes hit all alike), and the ratios."""
    single, full, shallow = committees(model, args.committee, trust=args.trust_model)
    shallow_loop = copy.deepcopy(shallow)
    shallow_loop.head_gradients = "loop"
    variants = {  # name → (potential, forces and stress?)
        "single": (single, True), "shallow": (shallow, True), "shallow_loop": (shallow_loop, True),
        "full": (full, True), "single_energy_only": (single, False), "shallow_energy_only": (shallow, False),
    }
    for potential, derivatives in variants.values():  # warm-up (lazy imports, allocator)
        potential.predict(structures[:2], forces=derivatives, stress=derivatives)
    load_before = os.getloadavg()
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (potential, derivatives) in variants.items():
            began = time.perf_counter()
            potential.predict(structures, forces=derivatives, stress=derivatives)
            timings[name].append(time.perf_counter() - began)
    median = {name: float(np.median(values)) for name, values in timings.items()}
    shallow.eval()
    return {
        "model": model, "backbone": single.backbone, "dtype": str(next(single.parameters()).dtype),
        "cpu_batch_size": single.cpu_batch_size, "median_seconds": median,
        "ratio_shallow_to_single": median["shallow"] / median["single"],
        "ratio_shallow_loop_to_single": median["shallow_loop"] / median["single"],
        "ratio_full_to_single": median["full"] / median["single"],
        "ratio_shallow_to_single_energy_only": median["shallow_energy_only"] / median["single_energy_only"],
        "shallow_runs_trunk_once": shallow._runs_trunk_once(), "shallow_head_gradients": shallow.head_gradients,
        "load_average_1_min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def run_cost(args) -> dict:
    from atomtune.data.dataset import Dataset

    structures = [a for a in Dataset.read(DATA) if len(a) <= 8][: args.structures]
    runs = [cost_of(model, structures, args) for model in args.model]
    return {
        "part": "cost", "committee_size": args.committee, "structures": len(structures),
        "atoms": int(sum(len(a) for a in structures)), "repeats": args.repeats, "runs": runs, "machine": machine(),
        "note": ("shallow: the trunk once, K readout heads on its output, the K heads' forces and stress from one "
                 "backward vmapped over the heads (autograd.grad is_grads_batched); shallow_loop: the same with K "
                 "backwards; full: K forwards. Forces and stress need K gradients through the trunk whichever way, so "
                 "their cost grows with K; the energy-only ratio is the trunk-once saving alone."),
    }


# -- cost of one GPAW label ------------------------------------------------------------------------------------------


def md_frame(model: str, temperature_k: float, steps: int, seed: int):
    """A 4-atom Ni3Al (L1₂) cell after ``steps`` steps of CHGNet Langevin MD at ``temperature_k``."""
    from atomtune.data import generate
    from atomtune.data.dataset import Dataset
    from atomtune.models import load_potential

    reference = next(a for a in Dataset.read(DATA) if len(a) == 4 and a.get_chemical_formula() == "AlNi3")
    calculator = load_potential(model).calculator()
    (frame,) = generate.md_snapshots(reference, calculator, count=1, interval=steps, temperature_k=temperature_k,
                                     seed=seed)
    if "kpts" in reference.info:
        frame.info["kpts"] = reference.info["kpts"]  # the family's mesh, as the shipped dataset pins it
    return frame


def run_label_cost(args) -> dict:
    from atomtune.data.label import CalculatorSpec, label

    frame = md_frame(args.model, 1500.0, 50, seed=1)
    spec = CalculatorSpec("gpaw", shipped_settings())
    began = time.perf_counter()
    data, failures = label([frame], spec, RESULTS / "active_learning_label_cache", progress=False)
    wall = time.perf_counter() - began
    labelled = list(data)
    return {
        "part": "label-cost", "structure": frame.get_chemical_formula(), "atoms": len(frame),
        "settings": spec.resolved_kwargs(), "failures": [str(f) for f in failures],
        "label_wall_time_s": labelled[0].info.get("label_wall_time_s") if labelled else None,
        "label_cpu_time_s": labelled[0].info.get("label_cpu_time_s") if labelled else None,
        "wall_seconds_including_cache_check": wall, "machine": machine(),
    }


# -- the loop vs random and DIRECT ------------------------------------------------------------------------------------

EXPLORE = """\
explorers:
  - {{kind: md, temperatures_k: [600, 1000, 1500], steps: {steps}, timestep_fs: 2.0, sample_interval: 10}}
flag: {{metric: relative, threshold: {threshold}, epsilon: 0.2}}
selection: {{method: fps, per_iteration: {per_iteration}}}
"""


def start_and_rest() -> tuple[list, list]:
    """The loop's 10 start cells and the other shipped cells of the same size (4 atoms: one GPAW label of a rattled
    4-atom frame is ~2 min of CPU here, see ``label-cost``), in a fixed order."""
    from atomtune.data.dataset import Dataset

    shipped = [a for a in Dataset.read(DATA) if len(a) == 4]
    order = np.random.default_rng(0).permutation(len(shipped))
    return [shipped[i] for i in sorted(order[:10])], [shipped[i] for i in order[10:]]


def run_heldout(args) -> dict:
    """``--structures`` shipped 4-atom cells outside the start set, one zero-shot MD frame each at 600, 1000 and 1500 K
    after ``--steps`` steps, labelled (cached) and written to ``OUT/test.extxyz``."""
    from atomtune.data import generate
    from atomtune.data.dataset import Dataset
    from atomtune.data.label import CalculatorSpec, label
    from atomtune.models import load_potential

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, rest = start_and_rest()
    calculator = load_potential(args.model).calculator()
    frames = []
    for k, atoms in enumerate(rest[: args.heldout_cells]):
        for temperature in (600.0, 1000.0, 1500.0):
            frames += generate.md_snapshots(atoms, calculator, count=1, interval=args.steps,
                                            temperature_k=temperature, seed=1000 + k)
    spec = CalculatorSpec(args.calculator, shipped_settings() if args.calculator == "gpaw" else {})
    began = time.perf_counter()
    data, failures = label(frames, spec, out / "al" / "label-cache", progress=True)
    labelled = list(data)
    Dataset(labelled).write(out / "test.extxyz")
    cpu = [a.info.get("label_cpu_time_s") for a in labelled]
    return {"part": "heldout", "calculator": args.calculator, "frames": len(frames), "labelled": len(labelled),
            "failures": [str(f) for f in failures], "label_cpu_time_s": cpu,
            "wall_seconds": time.perf_counter() - began, "test": str(out / "test.extxyz"), "machine": machine()}


def run_loop(args) -> dict:
    """AL to ``--budget`` labels, then random and DIRECT picks of the same size from a pool of zero-shot MD frames of
    the same start cells and temperatures; every arm trains the same committee and is scored on ``--test``."""
    from atomtune.data.dataset import Dataset
    from atomtune.learn import ActiveLearning, ExploreSpec, LearnSpec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, _ = start_and_rest()
    Dataset(start).write(out / "start.extxyz")
    (out / "explore.yaml").write_text(EXPLORE.format(steps=args.steps, per_iteration=args.per_iteration,
                                                      threshold=args.threshold))
    kwargs = shipped_settings() if args.calculator == "gpaw" else {}
    common = dict(model=args.model, start=str(out / "start.extxyz"), calculator=args.calculator,
                  calculator_kwargs=kwargs, test=args.test, committee_size=args.committee,
                  finetune={"epochs": args.epochs}, seed=0)
    spec = LearnSpec.build(**common, explore=ExploreSpec.read(out / "explore.yaml"), budget_labels=args.budget)
    began = time.perf_counter()
    result = ActiveLearning(spec).run(out / "al")
    arms = {"active learning": {**loop_record(out), "wall_seconds": time.perf_counter() - began}}
    labels = result.labels_used
    for method in ARMS:
        if labels == 0:
            arms[method] = {"skipped": "the loop labelled nothing, so there is no budget to match"}
            continue
        began = time.perf_counter()
        arms[method] = baseline(method, labels, start, args, out, kwargs)
        arms[method]["wall_seconds"] = time.perf_counter() - began
    return {"part": "loop", "calculator": args.calculator, "budget": args.budget, "arms": arms, "machine": machine()}


ARMS = ("random", "direct", "random twice")
AL_FRESH = "al frames fresh"  # the loop's labelled frames, fitted once like a baseline (``al-fresh``)


def score_committee(committee, test_path: str) -> dict:
    """A committee's errors and calibration (σ as saved) on the held-out frames."""
    from atomtune.data.dataset import Dataset
    from atomtune.finetune.featurized import FeaturizedSet
    from atomtune.finetune.metrics import errors
    from atomtune.uncertainty.calibration import evaluate

    test = list(Dataset.read(test_path))
    return {"test_errors": errors(committee, FeaturizedSet.build("test", test, committee), 8),
            "test_calibration": {q: {k: v for k, v in r.as_dict().items() if k != "curve"}
                                 for q, r in evaluate(committee, test).items()}}


def loop_record(out: Path) -> dict:
    """The loop's arm of the record, from the ``learn_results.json`` it writes in ``OUT/al``: per iteration the labels,
    flagged fraction and held-out errors and calibration; the final check's MD runs."""
    from atomtune.learn.loop import RESULTS_FILE

    results = json.loads((out / "al" / RESULTS_FILE).read_text())
    return {
        "stop_reason": results["stop_reason"], "labels_used": results["labels_used"],
        "iterations": [{k: r.get(k) for k in ("iteration", "labels_added", "labels_failed", "label_cpu_time_s",
                                              "flagged_fraction", "test_errors", "test_calibration")}
                       for r in results["iterations"]],
        "final_check_md_runs": (results.get("final_check") or {}).get("md_runs"),
    }


def run_score(args) -> dict:
    """The loop's record from disk: its iterations, and every baseline arm whose committee finished."""
    from atomtune.models import load_potential
    from atomtune.uncertainty.train import COMMITTEE_METRICS_FILE

    out = Path(args.out)
    arms = {"active learning": loop_record(out)}
    labels_used = arms["active learning"]["labels_used"]
    for method in (*ARMS, AL_FRESH):
        directory = out / method.replace(" ", "-")
        if not (directory / COMMITTEE_METRICS_FILE).exists():
            arms[method] = {"not finished": str(directory)}
            continue
        labels = labels_used * (2 if method == "random twice" else 1)  # AL_FRESH: the loop's own
        arms[method] = {"labels": labels, **score_committee(load_potential(str(directory)), args.test)}
    return {"part": "loop", "calculator": args.calculator, "budget": args.budget, "arms": arms,
            "scored_from_disk": True, "machine": machine()}


def baseline(method: str, count: int, start, args, out: Path, kwargs: dict) -> dict:
    """``count`` frames picked by ``method`` from zero-shot MD of the start cells, labelled (shared cache), trained
    into the same kind of committee as the loop's, scored on the held-out set."""
    from atomtune.data import generate
    from atomtune.data.label import label
    from atomtune.data.select import DirectSampler, RandomSampler, structure_features
    from atomtune.models import load_potential

    model = load_potential(args.model)
    pool = []
    for k, atoms in enumerate(start):
        for temperature in (600.0, 1000.0, 1500.0):
            pool += generate.md_snapshots(atoms, model.calculator(), count=max(1, args.steps // 10), interval=10,
                                          temperature_k=temperature, seed=k)
    features = structure_features(model, pool)
    if method == "direct":
        chosen = list(DirectSampler(n_clusters=count, seed=0).select(features))[:count]
    else:
        chosen = list(RandomSampler(count, seed=0).select(features))
    if method == "random twice":
        # the target compares the loop with twice its labels picked at random: the random arm's picks plus as
        # many more drawn from the rest of the pool, so the labels both arms share are paid for once
        rest = [i for i in range(len(pool)) if i not in set(chosen)]
        chosen += [rest[i] for i in RandomSampler(count, seed=1).select(features[rest])]
    picked = [pool[i] for i in chosen]
    labelled, failures = label(picked, args.calculator if not kwargs else {"name": args.calculator, "kwargs": kwargs},
                               out / "al" / "label-cache", progress=False)
    committee = fresh_committee(model, list(start) + list(labelled), args, out / method.replace(" ", "-"))
    record = {"labels": len(labelled), "failures": [str(f) for f in failures], "pool": len(pool)}
    if args.test:
        record.update(score_committee(committee, args.test))
    return record


def fresh_committee(model, structures, args, directory: Path):
    """The baselines' committee: ``args.committee`` members fine-tuned once from the foundation model for
    ``args.epochs`` epochs on ``structures`` (a fifth held out to validate and calibrate), checkpointed in
    ``directory``."""
    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.learn.loop import split_start
    from atomtune.uncertainty import CommitteeSpec, train_committee

    train, valid = split_start(list(structures), 0.2, 0)
    finetune = FinetuneSpec(epochs=args.epochs)
    settings = finetune.training_settings(model.backbone, has_stress=True, progress=False)
    return train_committee(model, train, valid, CommitteeSpec(size=args.committee), settings,
                           finetune.strategy_object(), out=directory, resume=True, model_spec=args.model).potential


def run_al_fresh(args) -> dict:
    """The control for the loop's training schedule: the loop's committee continues fine-tuning every iteration (so its
    last one has trained more epochs than a baseline's); this trains the baselines' committee once, from the foundation
    model, on the start cells plus the frames the loop labelled, into ``OUT/al-frames-fresh``, then scores all arms."""
    from atomtune.data.dataset import Dataset
    from atomtune.models import load_potential

    out = Path(args.out)
    start, _ = start_and_rest()
    frames = []
    for iteration in sorted((out / "al").glob("iteration-*")):
        for part in ("new_train.extxyz", "new_valid.extxyz"):
            if (iteration / part).exists():
                frames += list(Dataset.read(iteration / part))
    fresh_committee(load_potential(args.model), list(start) + frames, args, out / AL_FRESH.replace(" ", "-"))
    return run_score(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("cost", "label-cost", "heldout", "loop", "score", "al-fresh"))
    parser.add_argument("--model", nargs="+", default=["chgnet-0.3.0"],
                        help="model(s); cost measures each in turn, the other parts use the first")
    parser.add_argument("--trust-model", action="store_true", help="load pickled model files (a MACE .model)")
    parser.add_argument("--committee", type=int, default=4)
    parser.add_argument("--structures", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--test", default=None, help="held-out labelled MD frames (extxyz) for the loop")
    parser.add_argument("--calculator", default="gpaw", help="the loop's labeller (gpaw; emt for a quick dry run)")
    parser.add_argument("--steps", type=int, default=100, help="MD steps per temperature in exploration")
    parser.add_argument("--threshold", type=float, default=0.1, help="relative force-spread flag threshold")
    parser.add_argument("--per-iteration", type=int, default=5, help="labels per active-learning iteration")
    parser.add_argument("--out", default=str(RESULTS / "active_learning_loop"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heldout-cells", type=int, default=4, help="heldout: shipped cells outside the start set")
    args = parser.parse_args()
    from atomtune.runtime import configure_threads

    configure_threads(args.threads)
    run = {"cost": run_cost, "label-cost": run_label_cost, "heldout": run_heldout, "loop": run_loop,
           "score": run_score, "al-fresh": run_al_fresh}[args.part]
    if args.part != "cost":
        args.model = args.model[0]
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"_{args.calculator}" if args.part in ("loop", "heldout", "score", "al-fresh") else ""
    part = "loop" if args.part in ("score", "al-fresh") else args.part.replace("-", "_")
    path = RESULTS / f"active_learning_{part}{suffix}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
