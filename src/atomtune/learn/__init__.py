"""Active learning: explore with a committee, flag uncertain frames, label a diverse few with the reference calculator,
retrain, repeat — resumable step by step. ``ActiveLearning(LearnSpec(...)).run(out)``; ``atomtune learn`` on the
command line. Built on :mod:`atomtune.uncertainty` (committees), :mod:`atomtune.data` (generate, select, label),
:mod:`atomtune.tasks.md` and :mod:`atomtune.finetune`.
"""

from atomtune.learn.loop import ActiveLearning, IterationRecord, LearnResult
from atomtune.learn.spec import ExploreSpec, LearnSpec

__all__ = ["ActiveLearning", "ExploreSpec", "IterationRecord", "LearnResult", "LearnSpec"]
