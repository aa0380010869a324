"""atomtune: fine-tune universal machine-learning interatomic potentials on your own materials system.

Flow: campaign.yaml → data (read / curate / generate / label / select) → Dataset → models (Potential) →
finetune (strategies on a Potential) → tasks (errors, relax, eos, …) → report.
"""

__version__ = "0.1.0"

from atomtune.exceptions import AtomtuneError  # noqa: E402

__all__ = ["AtomtuneError", "__version__"]
