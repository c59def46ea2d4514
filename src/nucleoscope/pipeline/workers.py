"""Worker processes and stop signals of a batch: shared cores, workers that die with their parent, and
SIGTERM / SIGINT turned into a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["BatchInterrupted", "stop_on_signals", "worker_count", "worker_init"]


class BatchInterrupted(BaseException):
    """The batch was stopped (SIGTERM, SIGINT / Ctrl-C): finished items are kept, a rerun resumes.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no item's ``except Exception`` records
    the stop as that item's failure.
    """

    def __init__(self, signum: int, done: int = 0, total: int = 0) -> None:
        self.signum, self.done, self.total = signum, done, total
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def worker_init(n: int, parent: int) -> None:
    """Pool-worker initializer: share the cores, ignore Ctrl-C, and die with the parent.

    Without the thread limit every worker's torch/OpenMP/BLAS pool starts one thread per core, and
    ``--jobs 2`` on two cores ran NuSeT 1.8x slower than ``--jobs 1``. A parent killed with ``kill -9``
    cannot stop its workers, which then ran on under PID 1 (~400 MB each): a watchdog thread exits the
    worker once its parent is gone (it is re-parented, so ``getppid`` changes). SIGINT is the parent's
    to handle (it stops the pool itself); SIGTERM keeps its default, ending the worker.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # imported by the parent before the fork
        sys.modules["torch"].set_num_threads(n)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="nucleoscope-parent-watchdog", daemon=True).start()


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this process the moment its parent dies (``PR_SET_PDEATHSIG``).

    The watchdog alone left a window of up to 0.5 s in which a worker of a ``kill -9``-ed run went on
    writing; a run resumed within it found the worker alive, kept its temporary file, and the file stayed
    behind. The watchdog stays for other systems and for a parent that died before this call.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def worker_count(jobs: int, n_items: int) -> int:
    """Worker processes for ``n_items``: at most one per item and one per core (more only compete)."""
    return max(1, min(int(jobs), int(n_items), os.cpu_count() or 1))


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGTERM and SIGINT into :class:`BatchInterrupted` while a batch runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise BatchInterrupted(signum)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
