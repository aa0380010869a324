"""Environments of backbone families whose dependencies cannot share atomtune's main environment.

``specs`` holds the pinned spec of each family (the reason beside every pin); ``build`` turns a spec into a virtual
environment under a cache directory keyed by the spec's fingerprint (``atomtune env build|list|remove``); ``worker`` is
the one door into such an environment: whole units of work (predict, a task on one model) run there as a subprocess, and
:class:`~atomtune.envs.worker.WorkerCalculator` drives a model there step by step over the i-PI socket protocol.
Nothing else in atomtune needs to know which environment it runs in.
"""

from atomtune.envs.specs import SPECS, EnvironmentSpec, Pin

__all__ = ["SPECS", "EnvironmentSpec", "Pin"]
