"""Curation on a Dask cluster: the client ``lmkit curate --dask ADDRESS`` runs its chunks on.

What this module owns: :func:`dask_client`, which starts a local cluster of single-threaded
processes or reaches a running scheduler within ``DASK_CONNECT_TIMEOUT_S`` (an unreachable one is
one ``LmkitError`` naming the address, not Dask's own long wait), and closes both on leaving. The
chunks themselves run the same function as on local processes (:mod:`lmkit.data.curate.engine`),
so the kept documents are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lmkit.data.curate.engine import cap_workers
from lmkit.errors import LmkitError

DASK_CONNECT_TIMEOUT_S = 3  # --dask tcp://...: how long to wait for the scheduler before failing


@contextlib.contextmanager
def dask_client(address: str | None, workers: int = 0) -> Iterator[Any]:
    """The ``dask.distributed.Client`` :func:`curate` runs its chunks on for ``--dask ADDRESS``
    (None: no client, the local processes are used): ``local`` starts a cluster of
    ``cap_workers(workers)`` single-threaded processes on this machine, anything else is a
    scheduler address, reached within ``DASK_CONNECT_TIMEOUT_S`` or refused in one line naming it.
    The client (and a local cluster) is closed on leaving."""
    if not address:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise LmkitError("--dask needs dask[distributed] (pip install 'lmkit[dist]')") from None
    cluster = None
    if address == "local":
        cluster = LocalCluster(
            n_workers=cap_workers(workers), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        try:  # a short connect timeout: Dask's own default waits 30 s for an unreachable scheduler
            client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, ValueError, TypeError) as e:
            raise LmkitError(
                f"--dask {address}: cannot reach the scheduler at {address} within "
                f"{DASK_CONNECT_TIMEOUT_S} s ({e}); is it running (dask scheduler) and "
                "reachable from this machine?"
            ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
