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

__all__ = ["BASE_IMAGE_COLUMNS", "BatchJob", "Item", "OUTPUT_SUBFOLDERS", "prepare_output", "run_jobs",
           "source_stamp", "state_dir"]

log = logging.getLogger(__name__)

#: The images.csv columns every batch command writes (a job appends its own).
BASE_IMAGE_COLUMNS = ["ImageName", "Path", "Status", "Error", "Count", "Megapixels", "Seconds"]

#: Sub-folders a batch writes; never listed as inputs when the output folder lies in (or is) the input folder.
OUTPUT_SUBFOLDERS = ("labels", "overlays", "rois", ".state")


@dataclass(frozen=True)
class Item:
    """One unit of batch work: an image (and, for ``measure``, its label image), named uniquely."""

    name: str
    path: str
    labels: str | None = None

    @property
    def sources(self) -> list[str]:
        """The input files whose change (size, mtime) makes a finished item stale."""
        return [self.path] + ([self.labels] if self.labels else [])


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


def state_dir(out: Path) -> Path:
    return Path(out) / ".state"


def source_stamp(path: str | os.PathLike) -> list[int] | None:
    """Size and modification time (ns) of an input, to notice a file replaced since it was processed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


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
            if pid.isdigit() and not _pid_alive(int(pid)):
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


def _limit_threads(n: int) -> None:
    """Pool-worker initializer: share the cores between workers instead of each taking all of them.

    Without it every worker's torch/OpenMP/BLAS pool starts one thread per core, and ``--jobs 2`` on
    two cores ran NuSeT 1.8x slower than ``--jobs 1``.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # imported by the parent before the fork
        sys.modules["torch"].set_num_threads(n)


def _empty_table(columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series([], dtype=object if c == "ImageName" else float) for c in columns})
    for c in columns:
        if c.startswith("QC_"):
            df[c] = df[c].astype(bool)
    if "ObjectNumber" in df:
        df["ObjectNumber"] = df["ObjectNumber"].astype(np.int32)
    return df


def _execute(job: BatchJob, todo: list[Item], out: Path, key: str, jobs: int, bar) -> dict[str, dict]:
    """Run the pending items serially or on a process pool; returns their records by name."""
    records: dict[str, dict] = {}
    if jobs > 1 and len(todo) > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, initializer=_limit_threads, initargs=(threads,)) as ex:
            futs = {ex.submit(_work, job, it, os.fspath(out), key): it for it in todo}
            for fut in as_completed(futs):
                it = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - a worker killed (e.g. out of memory) breaks
                    # the pool; the items it took down are recorded as failed, a re-run retries them
                    log.debug("worker failure on %s", it.path, exc_info=True)
                    rec = job.empty_record(it)
                    rec.update(Key=key, Error=f"{it.path}: the worker process died ({type(exc).__name__}), e.g. "
                                              f"killed for lack of memory; run again to retry, with fewer --jobs")
                records[it.name] = rec
                bar.update(1)
    else:
        for it in todo:
            records[it.name] = _work(job, it, os.fspath(out), key)
            bar.update(1)
    return records


def run_jobs(job: BatchJob, items: Sequence[Item], out: str | os.PathLike, *, jobs: int = 1,
             show_progress: bool = True, command: str | None = None,
             inputs: Sequence[str | os.PathLike] = ()) -> pd.DataFrame:
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

    Returns
    -------
    pandas.DataFrame
        One row per item, columns :meth:`BatchJob.image_columns`; ``Status`` is ``"ok"`` or ``"failed"``.
    """
    from tqdm.auto import tqdm

    from .. import io

    started = _dt.datetime.now(_dt.timezone.utc)
    out = prepare_output(out)
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
    bar = tqdm(total=len(items), initial=len(records), unit="image", disable=not show_progress,
               desc="nucleoscope", dynamic_ncols=True)
    try:
        records.update(_execute(job, todo, out, key, jobs, bar))
    finally:
        bar.close()

    names = [it.name for it in items]
    image_cols = job.image_columns()
    images = pd.DataFrame([records[n] for n in names], columns=image_cols)
    parts = [pd.read_parquet(state_dir(out) / f"{n}.parquet") for n in names if records[n]["Status"] == "ok"]
    parts = [p for p in parts if len(p)]
    nuclei = pd.concat(parts, ignore_index=True) if parts else _empty_table(columns)
    io.write_table(nuclei, out / "nuclei.parquet")
    io.write_table(nuclei, out / "nuclei.csv")
    io.write_table(images, out / "images.csv")
    job.finish(out, images)
    finished = _dt.datetime.now(_dt.timezone.utc)
    failures = images.loc[images["Status"] != "ok", ["ImageName", "Path", "Error"]].to_dict("records")
    run_info = {
        "nucleoscope_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": command or " ".join(sys.argv),
        "job": job.kind,
        "inputs": [os.fspath(i) for i in inputs],
        "parameters": {**job.parameters(), "jobs": jobs},
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
    }
    io.write_json(run_info, out / "run.json")
    if job.report:
        from ..report import write_report

        write_report(out, images, nuclei, run_info)
    return images
