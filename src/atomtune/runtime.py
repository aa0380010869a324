"""Thread settings for everything that computes.

Two processes each using both cores ran 5–9× slower on a 2-core machine, so atomtune sets torch and BLAS threads
explicitly: in the CLI, in Dask workers and in tests.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def configure_threads(threads: int | None = None) -> int:
    """Set torch intra-op threads and the BLAS/OpenMP variables (for child processes) to ``threads``.

    ``None`` reads ``ATOMTUNE_THREADS`` then ``OMP_NUM_THREADS``, else uses all cores. Returns the number set.
    """
    if threads is None:
        threads = int(os.environ.get("ATOMTUNE_THREADS") or os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1))
    threads = max(1, int(threads))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads


def single_thread_cluster(workers: int, silence_logs: int | None = None):
    """A local Dask cluster of ``workers`` processes with one thread each and one BLAS / OpenMP thread per process
    (threaded BLAS on small cells ran many times slower and oversubscribed the cores); returns ``(client, cluster)``.
    Used by the campaign runner and by parallel labelling."""
    from distributed import Client, LocalCluster

    single = {name: "1" for name in THREAD_VARIABLES}
    options = {"silence_logs": silence_logs} if silence_logs is not None else {}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env=single, **options)
    return Client(cluster), cluster
