"""A small deterministic toy fine-tuning run as a separate process, for the SIGKILL/--resume test.

``python resume_run.py OUT fresh|resume SLEEP_S``: trains the toy potential on EMT cells into OUT (checkpoint every epoch),
sleeping SLEEP_S after each epoch so the test can kill it mid-training.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(out: str, mode: str, sleep_s: float) -> None:
    import torch
    from emt_data import emt_structures
    from toy_potential import ToyPotential

    from atomtune.finetune import LoRA, Replay, Trainer, TrainingSettings

    torch.set_num_threads(1)
    structures = emt_structures(12, seed=3)
    torch.manual_seed(0)
    potential = ToyPotential(seed=0)
    settings = TrainingSettings(epochs=5, learning_rate=2e-2, batch_size=3, ema_decay=0.9, progress=False)
    strategy = Replay(generate=3, weight=0.5, base=LoRA(rank=2, alpha=4.0))
    Trainer(settings).fit(
        potential,
        structures[:9],
        structures[9:],
        strategy,
        out=out,
        resume=mode == "resume",
        callback=lambda record: time.sleep(sleep_s),
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
