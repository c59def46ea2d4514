"""The main job: one image -> labels, QC flags and measurements; a batch over many, resumable.

:func:`analyze` is the pure core (array in, labels + table out). :func:`run_batch` wraps it with file
input/output: every image's results are written atomically as soon as it is done, a failing image is
recorded and the batch goes on, and running the same batch again skips the images already finished
with the same parameters from unchanged files (and retries the failed ones).

Layout of the output folder::

    labels/<name>.tif      int32 instance labels, 0 = background
    overlays/<name>.png    outlines on the contrast-stretched image (QC-flagged nuclei in orange)
    rois/<name>.zip        ImageJ ROIs of the nuclei (with ``rois=True``)
    nuclei.parquet/.csv    one row per nucleus (ImageName, ObjectNumber, measurements, QC flags)
    images.csv             one row per input (status, error, count, megapixels, seconds)
    report.html            a self-contained summary page
    run.json               version, command, parameters, model identity, times, failures
    .state/<name>.json     per-image record used to resume; .state/<name>.parquet its table rows
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import InputError, __version__
from .qc import QC_COLUMNS, QCConfig, drop_flagged, qc_flags

__all__ = ["AnalysisResult", "RunConfig", "analyze", "looks_like_labels", "resolve_method", "run_batch",
           "IMAGE_COLUMNS"]

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["ImageName", "Path", "Status", "Error", "Count", "Flagged", "Megapixels", "Seconds",
                 "Method", "PixelSize_um", "Diameter_px", "BackgroundFlattened"]


def _bundled_models() -> list[str]:
    """Names of the model JSON files shipped in ``nucleoscope/models`` (looked up without importing torch)."""
    from importlib import resources

    try:
        root = resources.files("nucleoscope") / "models"
        return sorted(p.name for p in root.iterdir() if p.name.endswith(".json"))
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        return []


def resolve_method(method: str) -> str:
    """``"auto"`` -> ``"nuset"`` when torch and a bundled NuSeT model are installed, else ``"otsu"``."""
    if method != "auto":
        return method
    import importlib.util

    if importlib.util.find_spec("torch") is not None and any(n.startswith("nuset") for n in _bundled_models()):
        return "nuset"
    return "otsu"


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a run; together they decide whether a finished image can be reused on resume.

    Attributes
    ----------
    method : str
        Segmenter name (see :mod:`nucleoscope.segment`), or ``"auto"``.
    pixel_size : float or None
        µm per pixel, overriding the files' metadata.
    channel, plane : int or None
        Channel / plane to take from multichannel or stacked images.
    feature_set : {"shape", "default", "all"}
        Measurement groups (see :func:`nucleoscope.features.measure_nuclei`).
    drop_flagged : bool
        Remove QC-flagged nuclei from the labels and the table.
    qc : QCConfig
    segment_options : dict
        Extra keyword arguments for the segmenter (e.g. ``diameter``).
    overlays : bool
        Write overlay PNGs.
    rois : bool
        Also write ``rois/<name>.zip``, one ImageJ polygon ROI per nucleus (Fiji's ROI Manager).
    scale : float
        Segment the image resized by this factor and map the nuclei back (see :func:`analyze`).
    """

    method: str = "auto"
    pixel_size: float | None = None
    channel: int | None = None
    plane: int | None = None
    feature_set: str = "default"
    drop_flagged: bool = False
    qc: QCConfig = field(default_factory=QCConfig)
    segment_options: dict = field(default_factory=dict)
    overlays: bool = True
    rois: bool = False
    crops: int = 0
    patches: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite factor > 0, got {self.scale}")
        if self.feature_set not in ("shape", "default", "all"):
            raise ValueError(f"feature_set must be 'shape', 'default' or 'all', got {self.feature_set!r}")
        if self.crops < 0 or self.patches < 0:
            raise ValueError(f"crop and patch sizes must be >= 0 px, got {self.crops} and {self.patches}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ValueError(f"pixel size must be > 0 µm, got {self.pixel_size}")

    def key(self) -> str:
        """Short hash of everything that changes the results of an image."""
        d = asdict(self)
        d.pop("overlays")
        d.pop("rois")
        d.pop("crops")
        d.pop("patches")
        if d["scale"] == 1.0:  # keeps the keys of runs made before the option existed
            d.pop("scale")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Result of :func:`analyze` for one image.

    Attributes
    ----------
    labels : (Y, X) int32
    table : pandas.DataFrame
        One row per nucleus: ``ObjectNumber``, measurements, QC flags.
    details : object
        The segmenter's details dataclass.
    """

    labels: np.ndarray
    table: pd.DataFrame
    details: Any


def analyze(image: np.ndarray, *, spacing: float | None = None, saturation: float | None = None,
            method: str = "otsu", feature_set: str = "default", qc: QCConfig = QCConfig(),
            drop_flagged_nuclei: bool = False, segment_options: dict | None = None,
            scale: float = 1.0) -> AnalysisResult:
    """Segment, quality-check and measure the nuclei of one image.

    Parameters
    ----------
    image : (Y, X) float array
        Nuclear stain, values as acquired.
    spacing : float, optional
        Pixel size in µm; physical columns are NaN without it.
    saturation : float, optional
        Detector full scale for the overexposure flag; default: the image maximum.
    method : str
        Segmenter name, or ``"auto"`` (see :func:`resolve_method`).
    feature_set : {"shape", "default", "all"}
    qc : QCConfig
    drop_flagged_nuclei : bool
        Remove QC-flagged nuclei before measuring.
    segment_options : dict, optional
        Passed to the segmenter.
    scale : float
        Segment the image resized by this factor (bilinear, anti-aliased when shrinking) and map the
        labels back to the full grid (:func:`nucleoscope.preprocess.segment_rescaled`); the segmenter
        gets the pixel size of the resized image, and QC and measurements use the full image. Shrinking
        (e.g. 0.25) turns the point clouds of STORM renderings and nuclei over ~100 px into compact
        blobs the model-free segmenters handle, and saves time on large images.

    Returns
    -------
    AnalysisResult
    """
    from .features import measure_nuclei
    from .segment import segment

    image = np.asarray(image, dtype=np.float32)
    method = resolve_method(method)
    if saturation is None:
        saturation = float(image.max()) if image.size else 1.0
    if scale == 1.0:
        labels, details = segment(image, method=method, spacing=spacing, **(segment_options or {}))
    else:
        from .postprocess import relabel
        from .preprocess import segment_rescaled

        found: list = []

        def _segment_small(small: np.ndarray) -> np.ndarray:
            lab, det = segment(small, method=method, spacing=spacing / scale if spacing else None,
                               **(segment_options or {}))
            found.append(det)
            return lab

        labels = relabel(segment_rescaled(image, _segment_small, scale))
        details = found[0]
    flags = qc_flags(image, labels, saturation=saturation, config=qc)
    if drop_flagged_nuclei and len(flags):
        labels = drop_flagged(labels, flags)
        flags = flags[~flags["QC_Flagged"]].reset_index(drop=True)
    table = measure_nuclei(image, labels, spacing=spacing, feature_set=feature_set, saturation=saturation)
    table = table.merge(flags, on="ObjectNumber", how="left", validate="one_to_one")
    for c in QC_COLUMNS:
        table[c] = table[c].fillna(False).astype(bool)
    return AnalysisResult(labels=labels, table=table, details=details)


# ---------------------------------------------------------------------------------------------- batch


def _overlay(image: np.ndarray, labels: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """RGB uint8: contrast-stretched image with cyan outlines, orange for QC-flagged nuclei."""
    from skimage.segmentation import find_boundaries

    lo, hi = np.percentile(image, [1.0, 99.8]) if image.size else (0.0, 1.0)
    g = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = find_boundaries(labels, mode="inner")
    bad = np.zeros(int(labels.max()) + 1, bool)
    if flagged.size:
        bad[flagged] = True
    is_bad = bad[labels] & edge
    rgb[edge & ~is_bad] = (0, 230, 255)
    rgb[is_bad] = (255, 140, 0)
    return rgb


def _limit_threads(n: int) -> None:
    """Pool-worker initializer: share the cores between workers instead of each taking all of them.

    Without it every worker's torch/OpenMP/BLAS pool starts one thread per core, and ``--jobs 2`` on
    two cores ran NuSeT 1.8x slower than ``--jobs 1``.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # imported by the parent before the fork
        sys.modules["torch"].set_num_threads(n)


def _state_dir(out: Path) -> Path:
    return out / ".state"


def looks_like_labels(image: np.ndarray, dtype: str) -> bool:
    """Whether an image read as intensities is more likely a mask or an instance label image.

    A boolean image, or an integer one that is mostly 0 and piecewise constant: at least 30% of pixels
    are 0 and at least 70% of the others equal all four neighbours. On the shared data sets (210 images
    and their masks) images with >= 30% zeros reach at most 58% equal neighbours, masks at least 79%.

    Parameters
    ----------
    image : (Y, X) array
        The values as read (float32 holds integers up to 2**24 exactly).
    dtype : str
        The stored dtype (:attr:`nucleoscope.io.Image.dtype`); float images are never taken for labels.
    """
    if dtype == "bool":
        return True
    if not (dtype.startswith("int") or dtype.startswith("uint")) or image.size == 0:
        return False
    nz = image != 0
    if nz.mean() > 0.7 or not nz.any():
        return False
    same = nz.copy()
    same[:-1] &= image[:-1] == image[1:]
    same[1:] &= image[1:] == image[:-1]
    same[:, :-1] &= image[:, :-1] == image[:, 1:]
    same[:, 1:] &= image[:, 1:] == image[:, :-1]
    return bool(same.sum() >= 0.7 * nz.sum())


def _failed_record(path: str, name: str, config: RunConfig, method: str, error: str = "") -> dict[str, Any]:
    """An images.csv record of an image that has not (yet) succeeded."""
    return {"ImageName": name, "Path": path, "Status": "failed", "Error": error, "Count": 0, "Flagged": 0,
            "Megapixels": float("nan"), "Seconds": float("nan"), "Method": method, "PixelSize_um": float("nan"),
            "Diameter_px": float("nan"), "BackgroundFlattened": False, "Key": config.key()}


def _segmentation_record(details: Any) -> dict[str, Any]:
    """What the segmenter decided per image, for images.csv: the nucleus diameter it worked at (px) and
    whether it subtracted an uneven background first (NuSeT)."""
    d = getattr(details, "diameter", None)
    if d is None:
        d = getattr(details, "diameter_px", None)
    return {"Diameter_px": float(d) if d is not None else float("nan"),
            "BackgroundFlattened": bool(getattr(details, "flattened", False))}


def _process_one(path: str, name: str, out: str, config: RunConfig, method: str, key: str | None = None) -> dict:
    """Read, analyze and write one image; returns its images.csv record (never raises)."""
    from . import io

    out_p = Path(out)
    t0 = time.perf_counter()
    rec = _failed_record(path, name, config, method)
    if key is not None:
        rec["Key"] = key
    rec["Source"] = _source_stamp(path)  # before reading: a file replaced meanwhile is redone next time
    try:
        img = io.read_image(path, channel=config.channel, plane=config.plane, pixel_size=config.pixel_size)
        rec["Megapixels"] = img.megapixels
        if looks_like_labels(img.data, img.dtype):
            log.warning("%s: this looks like a mask or label image, not the nuclear stain's intensities; "
                        "to measure a segmentation use `nucleoscope measure IMAGES --labels LABELS`", path)
        rec["PixelSize_um"] = img.spacing if img.spacing else float("nan")
        res = analyze(img.data, spacing=img.spacing, saturation=img.saturation, method=method,
                      feature_set=config.feature_set, qc=config.qc, drop_flagged_nuclei=config.drop_flagged,
                      segment_options=config.segment_options, scale=config.scale)
        table = res.table.copy()
        table.insert(0, "ImageName", name)
        io.write_labels(out_p / "labels" / f"{name}.tif", res.labels, spacing=img.spacing)
        if config.overlays:
            flagged = table.loc[table["QC_Flagged"], "ObjectNumber"].to_numpy(dtype=np.int64)
            io.write_png(out_p / "overlays" / f"{name}.png", _overlay(img.data, res.labels, flagged))
        if config.rois:
            io.write_imagej_rois(out_p / "rois" / f"{name}.zip", res.labels)
        io.write_table(table, _state_dir(out_p) / f"{name}.parquet")
        rec.update(Status="ok", Count=int(len(table)), Flagged=int(table["QC_Flagged"].sum()),
                   **_segmentation_record(res.details))
    except InputError as exc:
        rec["Error"] = str(exc)
    except MemoryError:
        rec["Error"] = f"{path}: out of memory ({rec['Megapixels']:.1f} MP); try a tiled method or --scale"
    except Exception as exc:  # a batch records any failure and goes on
        log.debug("failure on %s\n%s", path, traceback.format_exc())
        rec["Error"] = f"{path}: {type(exc).__name__}: {exc}"
    rec["Seconds"] = round(time.perf_counter() - t0, 4)
    try:
        io.write_json(rec, _state_dir(out_p) / f"{name}.json")
    except OSError as exc:  # the output folder itself is broken: report, the caller records it
        rec["Status"], rec["Error"] = "failed", f"cannot write results to {out}: {exc}"
    return rec


# Sub-folders a run writes; never listed as inputs when the output folder lies in (or is) the input folder.
_OUTPUT_SUBFOLDERS = ("labels", "overlays", "rois", ".state")


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
    for folder in [out, *(out / d for d in _OUTPUT_SUBFOLDERS)]:
        if not folder.is_dir():
            continue
        for f in folder.glob(".~*-*.*"):
            pid = f.name[2:].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    f.unlink()
                    removed += 1
    return removed


def _source_stamp(path: str | os.PathLike) -> list[int] | None:
    """Size and modification time (ns) of an input, to notice a file replaced since it was analysed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _load_done(out: Path, name: str, key: str, config: RunConfig | None = None,
               path: str | os.PathLike | None = None, columns: list[str] | None = None) -> dict | None:
    """The earlier record of ``name`` if it finished OK with the same parameters and its files exist.

    With ``columns``, its table must have exactly these columns: one written by another version of
    the measurements (columns added or renamed) is redone rather than mixed into the new table.

    Overlays and ROIs do not change the results (they are not in the key), but when ``config`` asks for
    them and they are missing (an earlier run had ``--no-overlays`` or no ``--rois``) the image is redone.
    """
    st = _state_dir(out)
    try:
        rec = json.loads((st / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if rec.get("Status") != "ok" or rec.get("Key") != key:
        return None
    # the input changed (re-exported, replaced) since: redo it; records older than the stamp are trusted
    if path is not None and rec.get("Source") is not None and rec["Source"] != _source_stamp(path):
        return None
    if not (st / f"{name}.parquet").exists() or not (out / "labels" / f"{name}.tif").exists():
        return None
    if config is not None and config.overlays and not (out / "overlays" / f"{name}.png").exists():
        return None
    if config is not None and config.rois and not (out / "rois" / f"{name}.zip").exists():
        return None
    if columns is not None:
        import pyarrow.parquet as pq

        try:
            if pq.read_schema(st / f"{name}.parquet").names != columns:
                return None
        except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
            return None
    return rec


def run_batch(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: RunConfig = RunConfig(), *,
              jobs: int = 1, show_progress: bool = True, recursive: bool = False,
              command: str | None = None) -> pd.DataFrame:
    """Run the main job over files, folders or globs; returns the images table.

    Parameters
    ----------
    inputs : sequence of str or os.PathLike
        Image files, folders, glob patterns.
    out : str or os.PathLike
        Output folder (created).
    config : RunConfig
    jobs : int
        Worker processes (1 = in this process).
    show_progress : bool
        tqdm progress bar on stderr.
    recursive : bool
        Search sub-folders.
    command : str, optional
        The command line, recorded in run.json.

    Returns
    -------
    pandas.DataFrame
        One row per input, columns :data:`IMAGE_COLUMNS`; ``Status`` is ``"ok"`` or ``"failed"``.

    Raises
    ------
    InputError
        When an input matches no file, or the output folder cannot be created or written (nothing is
        run then).
    """
    from . import io

    out = Path(out)
    started = _dt.datetime.now(_dt.timezone.utc)
    # Only the folders we write are excluded, so that ``-o`` may name the input folder itself.
    paths = io.find_images(inputs, recursive=recursive, exclude=[out / d for d in _OUTPUT_SUBFOLDERS])
    if not paths:
        raise InputError("no image to analyse: every input lies in the output folder's own sub-folders")
    names = io.unique_names(paths)
    method = resolve_method(config.method)
    # replace(), not asdict(): asdict turns the dataclasses inside segment_options (ClassicConfig from
    # --diameter) into dicts, and every image then failed
    config_run = replace(config, method=method)
    model = _model_identity(method)
    key = config_run.key()
    if len(model) > 1:  # a model file's identity (sha256): retrained weights redo every image
        key = hashlib.sha256(json.dumps([key, model], sort_keys=True).encode()).hexdigest()[:16]
    try:
        out.mkdir(parents=True, exist_ok=True)
        _state_dir(out).mkdir(exist_ok=True)
        probe = _state_dir(out) / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        why = "it is a file" if out.is_file() else (exc.strerror or str(exc))
        raise InputError(f"cannot write to the output folder: {why}", path=out) from None
    if _remove_stale_temporaries(out):
        log.info("removed temporary files left by an interrupted run in %s", out)
    from .features import feature_columns

    columns = ["ImageName"] + feature_columns(config.feature_set) + QC_COLUMNS

    records: dict[str, dict] = {}
    todo = []
    for p, n in zip(paths, names):
        done = _load_done(out, n, key, config_run, p, columns)
        if done is not None:
            records[n] = done
        else:
            todo.append((os.fspath(p), n))
    if records:
        log.info("resuming: %d of %d images already done", len(records), len(paths))

    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), initial=len(records), unit="image", disable=not show_progress,
               desc="nucleoscope", dynamic_ncols=True)
    try:
        if jobs > 1 and len(todo) > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, initializer=_limit_threads, initargs=(threads,)) as ex:
                futs = {ex.submit(_process_one, p, n, os.fspath(out), config_run, method, key): (p, n) for p, n in todo}
                for fut in as_completed(futs):
                    p, n = futs[fut]
                    try:
                        rec = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker killed (e.g. out of memory) breaks
                        # the pool; the images it took down are recorded as failed, a re-run retries them
                        log.debug("worker failure on %s", p, exc_info=True)
                        rec = _failed_record(p, n, config_run, method,
                                             f"{p}: the worker process died ({type(exc).__name__}), e.g. killed "
                                             f"for lack of memory; run again to retry, with fewer --jobs")
                    records[n] = rec
                    bar.update(1)
        else:
            for p, n in todo:
                rec = _process_one(p, n, os.fspath(out), config_run, method, key)
                records[n] = rec
                bar.update(1)
    finally:
        bar.close()

    images = pd.DataFrame([records[n] for n in names], columns=IMAGE_COLUMNS + ["Key"])
    images = images[IMAGE_COLUMNS]
    parts = [pd.read_parquet(_state_dir(out) / f"{n}.parquet") for n in names if records[n]["Status"] == "ok"]
    parts = [p for p in parts if len(p)]
    if parts:
        nuclei = pd.concat(parts, ignore_index=True)
    else:
        nuclei = pd.DataFrame({c: pd.Series([], dtype=object if c == "ImageName" else float) for c in columns})
        for c in QC_COLUMNS:
            nuclei[c] = nuclei[c].astype(bool)
        nuclei["ObjectNumber"] = nuclei["ObjectNumber"].astype(np.int32)
    io.write_table(nuclei, out / "nuclei.parquet")
    io.write_table(nuclei, out / "nuclei.csv")
    io.write_table(images, out / "images.csv")
    finished = _dt.datetime.now(_dt.timezone.utc)
    failures = images.loc[images["Status"] != "ok", ["ImageName", "Path", "Error"]].to_dict("records")
    run_info = {
        "nucleoscope_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": command or " ".join(sys.argv),
        "inputs": [os.fspath(i) for i in inputs],
        "parameters": {**asdict(config_run), "jobs": jobs},
        "parameters_key": key,
        "model": model,
        "started": started.isoformat(),
        "finished": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 3),
        "n_images": len(images),
        "n_ok": int((images["Status"] == "ok").sum()),
        "n_failed": len(failures),
        "n_resumed": len(paths) - len(todo),
        "n_nuclei": int(len(nuclei)),
        "failures": failures,
    }
    if config_run.crops or config_run.patches:
        _write_windows(out, images, config_run)
    io.write_json(run_info, out / "run.json")
    from .report import write_report

    write_report(out, images, nuclei, run_info)
    return images


def _write_windows(out: Path, images: pd.DataFrame, config: RunConfig) -> None:
    """Write crops.h5 / patches.h5 from the finished images' labels (so resumed images are included).

    The HDF5 layout is :class:`nucleoscope.io.hdf5.CropWriter`'s, the same as ``nucleoscope measure``.
    """
    from . import io
    from .features import nucleus_crops, nucleus_patches
    from .io.hdf5 import window_writers

    with window_writers(out, crop_size=config.crops, patch_size=config.patches,
                        patch_stride=max(config.patches // 2, 1),
                        metadata={"method": config.method, "pixel_size": config.pixel_size}) as writers:
        for _, r in images[images["Status"] == "ok"].iterrows():
            img = io.read_image(r["Path"], channel=config.channel, plane=config.plane, pixel_size=config.pixel_size)
            labels = io.read_labels(out / "labels" / f"{r['ImageName']}.tif")
            if "crops" in writers:
                writers["crops"].add(r["ImageName"], nucleus_crops(img.data, labels, size=config.crops))
            if "patches" in writers:
                writers["patches"].add(r["ImageName"], nucleus_patches(
                    img.data, labels, size=config.patches, stride=max(config.patches // 2, 1),
                    saturation=img.saturation))


def _model_identity(method: str) -> dict:
    """Name and sha256 of the model files behind ``method`` (just the name for model-free methods)."""
    info: dict[str, Any] = {"method": method}
    if method == "nuset":
        from importlib import resources

        from .models import DEFAULT_NUSET  # no torch import

        name = DEFAULT_NUSET + ".json"
        try:
            meta = json.loads((resources.files("nucleoscope") / "models" / name).read_text())
            info[name] = {k: meta[k] for k in ("name", "version", "sha256") if k in meta}
        except (OSError, ValueError):
            pass
    return info
