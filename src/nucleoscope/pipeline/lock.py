"""One batch per output folder: a lock file naming the run that holds it."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import time
from pathlib import Path

from .. import InputError

__all__ = ["LOCK_NAME", "output_lock", "pid_alive"]

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


LOCK_NAME = ".nucleoscope.lock"


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def output_lock(out: Path, command: str = ""):
    """Hold ``out/.nucleoscope.lock`` (pid, host, start, command) for the length of a batch.

    Two runs writing into one folder would mix their labels and tables; the second one is refused with
    a message naming the first. A lock left by a dead process of this host (kill -9, a crash) is taken
    over; one of another host is refused (its process cannot be checked from here), naming the file to
    delete if that run is known to be over.

    Raises
    ------
    InputError
        Another live run holds the folder.
    """
    path = Path(out) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _dt.datetime.now(_dt.timezone.utc).isoformat(),
          "command": command}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(path)
            if other is None:  # being written by its owner this very moment, or garbage: look again
                time.sleep(0.05)
                other = _read_lock(path)
            if other is not None and (other.get("host") != me["host"] or pid_alive(int(other.get("pid", -1)))):
                where = "" if other.get("host") == me["host"] else f" on host {other.get('host')}"
                raise InputError(f"another nucleoscope run (pid {other.get('pid')}{where}, started "
                                 f"{other.get('started')}) is writing to this folder; wait for it to finish, "
                                 f"or choose another -o (if that run is over, delete {path})", path=out) from None
            log.info("taking over the lock of a run that ended without releasing it (%s)", other)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise InputError(f"cannot take the lock {path}", path=out)
    try:
        yield path
    finally:
        if (_read_lock(path) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(OSError):
                path.unlink()
