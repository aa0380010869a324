"""A tiny active-learning run (toy committee, EMT as the "DFT", counted labels) as a separate process, for the SIGKILL
resume test; also imported by the in-process tests for its settings.

``python learn_run.py OUT LOG [FAIL_N_ATOMS]``: runs the loop into OUT, appending one line to LOG per EMT calculation;
cells of FAIL_N_ATOMS atoms fail to label (0: none). ``COUNTING_EMT_SLEEP_S`` pauses after every calculation (so the
test can kill the process mid-labelling).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

EXPLORE_YAML = """\
explorers:
  - {kind: md, temperatures_k: [300, 900], steps: 10, timestep_fs: 2.0, sample_interval: 5}
  - {kind: rattle, count: 3, stdev: 0.08}
flag: {metric: absolute, threshold: 1.0e-4}
selection: {method: fps, per_iteration: 3}
"""


def prepare(directory: Path) -> dict:
    """Write the start / test sets, the toy base model and the exploration file; return LearnSpec settings."""
    import torch
    from emt_data import emt_structures
    from toy_potential import ToyPotential

    from atomtune.data.dataset import Dataset

    directory.mkdir(parents=True, exist_ok=True)
    structures = emt_structures(10, seed=5)
    Dataset(structures[:6]).write(directory / "start.extxyz")
    Dataset(structures[6:]).write(directory / "test.extxyz")
    torch.manual_seed(0)
    ToyPotential(seed=0).save(directory / "toy-model")
    (directory / "explore.yaml").write_text(EXPLORE_YAML)
    return {
        "model": str(directory / "toy-model"),
        "start": str(directory / "start.extxyz"),
        "test": str(directory / "test.extxyz"),
        "calculator": "counting_emt:CountingEMT",
        "budget_labels": 6,
        "max_iterations": 3,
        "committee_size": 2,
        "finetune": {"epochs": 2, "learning_rate": 2e-2, "batch_size": 4},
        "valid_fraction": 0.34,
        "seed": 0,
    }


def register_toy() -> None:
    from atomtune.models import registry

    registry.BACKBONES["toy"] = "toy_potential:ToyPotential"


def main(out: str, log: str, fail_n_atoms: int = 0) -> None:
    import torch

    torch.set_num_threads(1)
    register_toy()
    from atomtune.learn import ActiveLearning, ExploreSpec, LearnSpec

    directory = Path(out).parent / "inputs"
    settings = prepare(directory)
    settings["calculator_kwargs"] = {"log": log, "fail_n_atoms": fail_n_atoms}
    spec = LearnSpec.build(**settings, explore=ExploreSpec.read(directory / "explore.yaml"))
    result = ActiveLearning(spec).run(out, progress=False)
    print("STOP", result.stop_reason, result.labels_used)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
