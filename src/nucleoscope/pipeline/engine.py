"""The one batch engine: discovery -> per-item work -> atomic outputs -> resume state -> process pool ->
tables, run.json and report. Every batch command (``run``, ``measure`` and those to come) is a
:class:`BatchJob` handed to :func:`run_jobs`.

Per item the engine (in the worker process) calls :meth:`BatchJob.process`, which writes the item's own
files (labels, overlays ...) atomically and returns its table rows and record fields; the engine then
writes ``.state/<name>.parquet`` (the rows) and, last, ``.state/<name>.json`` (the record): an item whose
record says ``ok`` is complete, so a run killed at any point loses only the items in flight. Running the
same job again skips the items finished with the same parameters key from unchanged input files
(size + modification time of every input), with the same table columns and all their output files, and
retries the failed ones. At the end the per-item rows are concatenated in input order into
``nuclei.parquet`` / ``nuclei.csv``, the records into ``images.csv``, and ``run.json`` (+ the report)
describe the run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import errno
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import InputError, __version__
from .lock import output_lock, pid_alive
from .workers import BatchInterrupted, stop_on_signals, worker_count, worker_init

__all__ = ["BASE_IMAGE_COLUMNS", "BatchInterrupted", "BatchJob", "Item", "OUTPUT_SUBFOLDERS", "OutputError",
           "output_lock", "prepare_output", "run_jobs", "source_stamp", "state_dir"]

log = logging.getLogger(__name__)

#: The images.csv columns every batch command writes (a job appends its own).
BASE_IMAGE_COLUMNS = ["ImageName", "Path", "Status", "Error", "Count", "Megapixels", "Seconds"]

#: Sub-folders a batch writes; never listed as inputs when the output folder lies in (or is) the input folder.
OUTPUT_SUBFOLDERS = ("labels", "overlays", "rois", "ome-zarr", "cells", "cytoplasm", ".state")


@dataclass(frozen=True)
class Item:
    """One unit of batch work: an image (and, for ``measure``, its label image; for ``cells``, its
    cell-channel partner), named uniquely."""

    name: str
    path: str
    labels: str | None = None
    partner: str | None = None

    @property
    def sources(self) -> list[str]:
        """The input files whose change (size, mtime) makes a finished item stale."""
        return [self.path] + [p for p in (self.labels, self.partner) if p]


class BatchJob:
    """What a batch command does per item and for the whole run; subclasses fill in the hooks.

    A job must be picklable (a frozen dataclass of plain values): it is sent to the worker processes.
    """

    kind: str = "batch"
    #: write report.html at the end
    report: bool = True

    def key(self) -> str:
        """Hash of everything that changes an item's results (the resume key)."""
        raise NotImplementedError

    def image_columns(self) -> list[str]:
        """images.csv columns, in order (:data:`BASE_IMAGE_COLUMNS` first)."""
        return list(BASE_IMAGE_COLUMNS)

    def table_columns(self) -> list[str]:
        """Columns of the per-nucleus table, in order."""
        raise NotImplementedError

    def empty_record(self, item: Item) -> dict[str, Any]:
        """The images.csv record of an item that has not (yet) succeeded."""
        rec: dict[str, Any] = {c: float("nan") for c in self.image_columns()}
        rec.update(ImageName=item.name, Path=item.path, Status="failed", Error="", Count=0)
        return rec

    def outputs(self, out: Path, name: str) -> list[Path]:
        """The files besides the state that a finished item must still have (else it is redone)."""
        return []

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        """Do one item: write its own files atomically, fill ``rec`` (images.csv fields), return its
        table rows (with ``ImageName`` first). Raise :class:`nucleoscope.InputError` for bad input."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        """The parameters recorded in run.json."""
        return {}

    def model(self) -> dict[str, Any]:
        """Identity of the model files behind the results (recorded in run.json and in the key)."""
        return {}

    def finish(self, out: Path, images: pd.DataFrame) -> None:
        """Whole-run outputs written after every item (e.g. crops.h5 over the finished images)."""


class OutputError(OSError):
    """Results could not be written (disk full, permissions): the message names every path that failed."""


#: The nucleus windows (crops, patches) of one image are held in memory before they are written: refuse
#: more than this rather than ask the system for it (``--crops 2048`` on 10,000 nuclei is 200 GiB).
MAX_WINDOW_BYTES = 2 << 30


def check_window_bytes(name: str, count: int, size: int) -> None:
    """Raise :class:`OutputError` naming the image when its ``count`` windows of ``size`` px would need
    more than :data:`MAX_WINDOW_BYTES` (float32 pixels + a bool mask each)."""
    need = int(count) * int(size) ** 2 * 5
    if need > MAX_WINDOW_BYTES:
        raise OutputError(f"{name}: {count} nuclei in {size} x {size} px windows would need {need / 2**30:.1f} GiB "
                          f"of memory (at most {MAX_WINDOW_BYTES / 2**30:g} GiB per image); choose a smaller size")


def state_dir(out: Path) -> Path:
    return Path(out) / ".state"


def source_stamp(path: str | os.PathLike) -> list[int] | None:
    """Size and modification time (ns) of an input, to notice a file replaced since it was processed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _remove_stale_temporaries(out: Path) -> int:
    """Delete ``.~<pid>-<hex>.<name>`` files (see :func:`nucleoscope.io.atomic_path`) left by killed runs.

    A run killed mid-write (Ctrl-C, a batch system's time limit) leaves its temporary files behind; they
    are hidden and never read, but pile up. Files of a process still running (a concurrent run) are kept.
    """
    removed = 0
    for folder in [out, *(out / d for d in OUTPUT_SUBFOLDERS)]:
        if not folder.is_dir():
            continue
        for f in folder.glob(".~*-*.*"):
            pid = f.name[2:].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    f.unlink()
                    removed += 1
    return removed


def prepare_output(out: str | os.PathLike) -> Path:
    """Create the output folder and its state folder and check they are writable, before any work.

    Raises
    ------
    InputError
        The folder cannot be created or written (named in the message).
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        state_dir(out).mkdir(exist_ok=True)
        probe = state_dir(out) / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = "it is a file" if out.is_file() else (exc.strerror or str(exc))
        raise InputError(f"cannot write to the output folder: {why}", path=out) from None
    if _remove_stale_temporaries(out):
        log.info("removed temporary files left by an interrupted run in %s", out)
    return out


def _load_done(job: BatchJob, out: Path, item: Item, key: str, columns: list[str]) -> dict | None:
    """The earlier record of ``item`` if it finished OK with the same key from unchanged inputs, its
    table has exactly ``columns`` (one written by another version of the measurements is redone rather
    than mixed into the new table) and the job's output files exist."""
    st = state_dir(out)
    try:
        rec = json.loads((st / f"{item.name}.json").read_text())
    except (OSError, ValueError):
        return None
    if rec.get("Status") != "ok" or rec.get("Key") != key:
        return None
    # an input changed (re-exported, replaced) since: redo it; records older than the stamp are trusted
    stamps = rec.get("Sources", [rec["Source"]] if rec.get("Source") is not None else None)
    if stamps is not None and stamps != [source_stamp(p) for p in item.sources][:len(stamps)]:
        return None
    if not (st / f"{item.name}.parquet").exists() or not all(p.exists() for p in job.outputs(out, item.name)):
        return None
    import pyarrow.parquet as pq

    try:
        if pq.read_schema(st / f"{item.name}.parquet").names != columns:
            return None
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None
    return rec


def _work(job: BatchJob, item: Item, out: str, key: str) -> dict[str, Any]:
    """One item in a worker: the job's work, then its state (rows, then the record); never raises."""
    from .. import io

    out_p = Path(out)
    t0 = time.perf_counter()
    rec = job.empty_record(item)
    rec["Key"] = key
    rec["Sources"] = [source_stamp(p) for p in item.sources]  # before reading: a file replaced meanwhile is redone
    try:
        table = job.process(item, out_p, rec)
        io.write_table(table, state_dir(out_p) / f"{item.name}.parquet")
        rec.update(Status="ok", Count=int(len(table)))
    except InputError as exc:
        rec["Error"] = str(exc)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            rec["Error"] = f"cannot write the results of {item.path}: {exc.strerror} ({exc.filename or out})"
        else:
            log.debug("failure on %s\n%s", item.path, traceback.format_exc())
            rec["Error"] = f"{item.path}: {type(exc).__name__}: {exc}"
    except MemoryError:
        mp = rec.get("Megapixels")
        size = f"{mp:.1f} MP" if isinstance(mp, float) and np.isfinite(mp) else "the image"
        rec["Error"] = (f"{item.path}: out of memory ({size}); try a smaller --tile-size, --scale < 1 "
                        f"or fewer --jobs")
    except Exception as exc:  # a batch records any failure and goes on
        log.debug("failure on %s\n%s", item.path, traceback.format_exc())
        rec["Error"] = f"{item.path}: {type(exc).__name__}: {exc}"
    if rec["Status"] != "ok":
        rec["Count"] = 0
    rec["Seconds"] = round(time.perf_counter() - t0, 4)
    try:
        io.write_json(rec, state_dir(out_p) / f"{item.name}.json")
    except OSError as exc:  # the output folder itself is broken: report, the caller records it
        rec["Status"], rec["Error"] = "failed", f"cannot write results to {out}: {exc}"
    return rec


def _empty_table(columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series([], dtype=object if c == "ImageName" else float) for c in columns})
    for c in columns:
        if c.startswith("QC_"):
            df[c] = df[c].astype(bool)
    if "ObjectNumber" in df:
        df["ObjectNumber"] = df["ObjectNumber"].astype(np.int32)
    return df


def _failed_record(job: BatchJob, item: Item, key: str, message: str) -> dict[str, Any]:
    """The record of an item whose worker could not report (it died, or its task failed on a cluster)."""
    rec = job.empty_record(item)
    rec.update(Key=key, Error=message)
    return rec


def _execute(job: BatchJob, todo: list[Item], out: Path, key: str, jobs: int, bar) -> dict[str, dict]:
    """Run the pending items serially or on a process pool; returns their records by name."""
    records: dict[str, dict] = {}
    if jobs > 1 and len(todo) > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ex = ProcessPoolExecutor(max_workers=jobs, initializer=worker_init, initargs=(threads, os.getpid()))
        try:
            futs = {ex.submit(_work, job, it, os.fspath(out), key): it for it in todo}
            for fut in as_completed(futs):
                it = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker killed (e.g. out of memory) breaks
                    # the pool; the items it took down are recorded as failed, a re-run retries them
                    log.debug("worker failure on %s", it.path, exc_info=True)
                    rec = _failed_record(job, it, key, f"{it.path}: the worker process died ({type(exc).__name__}), "
                                                       f"e.g. killed for lack of memory; run again to retry, with "
                                                       f"fewer --jobs")
                records[it.name] = rec
                bar.update(1)
        except BaseException:  # stopped (or broken): end the workers now, keep what is finished
            procs = list(getattr(ex, "_processes", {}).values())
            ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                with contextlib.suppress(Exception):
                    p.terminate()
            raise
        ex.shutdown(wait=True)
    else:
        for it in todo:
            records[it.name] = _work(job, it, os.fspath(out), key)
            bar.update(1)
    return records


def run_jobs(job: BatchJob, items: Sequence[Item], out: str | os.PathLike, *, jobs: int = 1,
             show_progress: bool = True, command: str | None = None,
             inputs: Sequence[str | os.PathLike] = (), scheduler: str | None = None) -> pd.DataFrame:
    """Run ``job`` over ``items`` into ``out``, resuming an earlier run; returns the images table.

    Parameters
    ----------
    job : BatchJob
    items : sequence of Item
        Uniquely named inputs, in the order of the output tables.
    out : str or os.PathLike
        Output folder; created and checked for writing before any work.
    jobs : int
        Worker processes (1 = in this process).
    show_progress : bool
        tqdm progress bar on stderr.
    command : str, optional
        The command line, recorded in run.json.
    inputs : sequence
        The inputs as given (files, folders, globs), recorded in run.json.
    scheduler : str, optional
        Run the items on a Dask cluster instead (``local:N`` or a scheduler address;
        :mod:`nucleoscope.pipeline.cluster`); ``jobs`` is then unused.

    Returns
    -------
    pandas.DataFrame
        One row per item, columns :meth:`BatchJob.image_columns`; ``Status`` is ``"ok"`` or ``"failed"``.
    """
    started = _dt.datetime.now(_dt.timezone.utc)
    if scheduler is not None:
        from .cluster import check_scheduler

        check_scheduler(scheduler)
    out = prepare_output(out)
    with output_lock(out, command or " ".join(sys.argv)):
        return _run_locked(job, items, out, jobs=jobs, show_progress=show_progress, command=command,
                           inputs=inputs, started=started, scheduler=scheduler)


def _write_all(writes: list[tuple[Path, Any]]) -> list[str]:
    """Write each ``(path, thing)`` atomically; returns a message per path that failed (the rest is written)."""
    from .. import io

    errors = []
    for path, thing in writes:
        try:
            if isinstance(thing, pd.DataFrame):
                io.write_table(thing, path)
            else:
                io.write_json(thing, path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    return errors


def _run_locked(job: BatchJob, items: Sequence[Item], out: Path, *, jobs: int, show_progress: bool,
                command: str | None, inputs: Sequence[str | os.PathLike], started: _dt.datetime,
                scheduler: str | None = None) -> pd.DataFrame:
    from tqdm.auto import tqdm

    key = job.key()
    columns = job.table_columns()
    records: dict[str, dict] = {}
    todo = []
    for it in items:
        done = _load_done(job, out, it, key, columns)
        if done is not None:
            records[it.name] = done
        else:
            todo.append(it)
    if records:
        log.info("resuming: %d of %d images already done", len(records), len(items))
    workers = worker_count(jobs, len(todo)) if todo else 1
    if workers < jobs and scheduler is None:
        log.warning("--jobs %d capped to %d (%d image%s to do, %d cores)", jobs, workers, len(todo),
                    "" if len(todo) == 1 else "s", os.cpu_count() or 1)
    bar = tqdm(total=len(items), initial=len(records), unit="image", disable=not show_progress,
               desc="nucleoscope", dynamic_ncols=True)
    try:
        with stop_on_signals():
            if scheduler is not None and todo:
                from .cluster import execute_on_cluster

                done, workers = execute_on_cluster(job, todo, out, key, scheduler, bar)
                records.update(done)
            else:
                records.update(_execute(job, todo, out, key, workers, bar))
    except BatchInterrupted as stop:
        stop.done = sum(1 for n in records) + sum(
            1 for it in todo if (state_dir(out) / f"{it.name}.json").exists() and it.name not in records)
        stop.total = len(items)
        raise
    finally:
        bar.close()

    names = [it.name for it in items]
    images = pd.DataFrame([records[n] for n in names], columns=job.image_columns())
    parts = [pd.read_parquet(state_dir(out) / f"{n}.parquet") for n in names if records[n]["Status"] == "ok"]
    parts = [p for p in parts if len(p)]
    nuclei = pd.concat(parts, ignore_index=True) if parts else _empty_table(columns)
    errors = _write_all([(out / "nuclei.parquet", nuclei), (out / "nuclei.csv", nuclei), (out / "images.csv", images)])
    try:
        job.finish(out, images)
    except OSError as exc:
        errors.append(f"{exc.filename or out}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - crops/patches must not lose run.json and the report
        log.debug("finishing the batch failed", exc_info=True)
        errors.append(f"{out}: {type(exc).__name__}: {exc}")
    # Again at the end: a worker of a killed run may have outlived it by a moment and left a file after
    # the sweep in prepare_output.
    _remove_stale_temporaries(out)
    finished = _dt.datetime.now(_dt.timezone.utc)
    failures = images.loc[images["Status"] != "ok", ["ImageName", "Path", "Error"]].to_dict("records")
    run_info = {
        "nucleoscope_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": command or " ".join(sys.argv),
        "cwd": os.getcwd(),  # relative input paths in images.csv are relative to it
        "job": job.kind,
        "inputs": [os.fspath(i) for i in inputs],
        "parameters": {**job.parameters(), "jobs": jobs, "workers": workers,
                       **({"scheduler": scheduler} if scheduler is not None else {})},
        "parameters_key": key,
        "model": job.model(),
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 3),
        "n_images": len(images),
        "n_ok": int((images["Status"] == "ok").sum()),
        "n_failed": len(failures),
        "n_resumed": len(items) - len(todo),
        "n_nuclei": int(len(nuclei)),
        "failures": failures,
        "output_errors": errors,
    }
    errors += _write_all([(out / "run.json", run_info)])
    if job.report:
        from ..report import write_report

        try:
            write_report(out, images, nuclei, run_info)
        except OSError as exc:
            errors.append(f"{out / 'report.html'}: {exc.strerror or exc}")
    if errors:
        raise OutputError("some results could not be written (the others were): " + "; ".join(errors))
    return images
