"""Baselines that answer "would something simpler do as well?" next to the fine-tuned models.

Two kinds, one module each, each with one typed spec:

- :mod:`atomtune.baselines.mace_scratch` — a small MACE trained from scratch with mace's own ``mace_run_train`` on the
  same splits, saved as an atomtune model directory, so it is a ``--model DIR`` like any other (errors and every task).
- :mod:`atomtune.baselines.regression` — classic descriptor regression (composition fractions, SOAP, or a foundation
  model's own per-atom embeddings → scikit-learn Ridge / LASSO / kNN / random forest / SVR / Gaussian process with
  cross-validated hyperparameters) for energy per atom or any per-structure scalar; saved as plain data (JSON + npz).

``atomtune baseline --kind mace-scratch|regression`` (:mod:`atomtune.cli.baseline`) is the command-line face of both.
"""

KINDS = {
    "mace-scratch": "atomtune.baselines.mace_scratch",
    "regression": "atomtune.baselines.regression",
}
