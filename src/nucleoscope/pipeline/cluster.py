"""The batch engine's items on a Dask cluster (``--scheduler``): the same per-item work, state files and
tables as the local pool, with the workers elsewhere.

Each item is one task running :func:`nucleoscope.pipeline.engine._work` on a worker: it writes the
item's outputs and state into the output folder itself, so that folder must be one the workers can
write (a shared file system on a real cluster) and resume works from the same state files whichever
machine did the work. A worker that dies mid-item has its task rerun on another worker by the
scheduler (``distributed``'s ``allowed-failures``, 3 by default); a task that kills every worker it
lands on is recorded as failed, like a dead pool worker. Stopping the driver (Ctrl-C, SIGTERM) cancels
what is still queued; a new run resumes from what finished.

``scheduler`` is ``local:N`` (a ``LocalCluster`` of N single-threaded worker processes on this machine) or
the address of a running scheduler (``tcp://host:8786``, or ``host:8786``), e.g. one started by
``dask-jobqueue`` on SLURM or by ``dask-gateway``; see docs/scale-out.md. Needs the ``dask`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import InputError

__all__ = ["check_scheduler", "execute_on_cluster"]

log = logging.getLogger(__name__)

_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(?:(tcp|tls|ws|wss|inproc|ucx)://)?[\w.\-\[\]:]+:\d+$")
#: Seconds to wait for a remote scheduler before giving up (one that is starting may take a while).
CONNECT_TIMEOUT_S = 20
_INSTALL = "--scheduler needs the 'dask' extra: pip install 'nucleoscope[dask]'"


def check_scheduler(spec: str) -> str:
    """``spec`` if it is ``local:N`` (N >= 1) or a scheduler address, else :class:`InputError`."""
    m = _LOCAL.match(spec)
    if m and int(m.group(1)) >= 1:
        return spec
    if not m and _ADDRESS.match(spec):
        return spec
    raise InputError(f"scheduler must be 'local:N' (N >= 1 workers) or a scheduler address such as "
                     f"tcp://host:8786, got {spec!r}")


@contextlib.contextmanager
def _client(spec: str) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - the extra is installed by `make test`
        raise InputError(_INSTALL) from exc
    if not log.isEnabledFor(logging.DEBUG):  # the scheduler's INFO lines are not the user's business
        logging.getLogger("distributed").setLevel(logging.WARNING)
    m = _LOCAL.match(spec)
    if m:
        # one thread per worker: an item is a whole image, parallelism comes from the workers; no
        # dashboard (a port this machine may not have free)
        cluster = LocalCluster(n_workers=int(m.group(1)), threads_per_worker=1, processes=True,
                               scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(spec, timeout=f"{CONNECT_TIMEOUT_S}s")
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {spec}: {exc}") from exc
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _task(job: Any, item: Any, out: str, key: str) -> dict[str, Any]:
    """One item on a worker: the engine's own per-item work, single-threaded inside."""
    from .engine import _work

    with contextlib.suppress(Exception):
        import threadpoolctl

        threadpoolctl.threadpool_limits(1)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    return _work(job, item, out, key)


def execute_on_cluster(job: Any, todo: list, out: Path, key: str, spec: str,
                       bar: Any) -> tuple[dict[str, dict], int]:
    """Run ``todo`` (engine Items) as tasks on the cluster ``spec``; returns (records by name, workers)."""
    from distributed import as_completed

    from .engine import _failed_record

    records: dict[str, dict] = {}
    with _client(spec) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        run = uuid.uuid4().hex[:8]
        futs = {client.submit(_task, job, it, os.fspath(out), key, pure=False, key=f"nucleoscope-{run}-{i}"): it
                for i, it in enumerate(todo)}
        try:
            for fut in as_completed(list(futs)):
                it = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: every worker it ran on died
                    log.debug("cluster failure on %s", it.path, exc_info=True)
                    rec = _failed_record(job, it, key, f"{it.path}: the task failed on the cluster "
                                                       f"({type(exc).__name__}: {exc}); run again to retry")
                records[it.name] = rec
                bar.update(1)
        except BaseException:  # stopped: cancel what is queued, keep what is finished
            client.cancel(list(futs))
            raise
    return records, workers
