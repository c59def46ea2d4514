"""The ``run`` job: read each image, :func:`~nucleoscope.pipeline.analyze` it, write its labels, overlay
and ROIs; at the end crops/patches over the finished images. Driven by the batch engine
(:mod:`nucleoscope.pipeline.engine`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import InputError
from ..qc import QC_COLUMNS, QCConfig
from .analyze import analyze
from .engine import BASE_IMAGE_COLUMNS, OUTPUT_SUBFOLDERS, BatchJob, Item, check_window_bytes, run_jobs
from .overlay import overlay_rgb

__all__ = ["DEFAULT_TILE_SIZE", "IMAGE_COLUMNS", "LAZY_MEGAPIXELS", "RunConfig", "RunJob", "looks_like_labels", "run_batch"]

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["ImageName", "Path", "Status", "Error", "Count", "Flagged", "Megapixels", "Seconds",
                 "Method", "PixelSize_um", "Diameter_px", "BackgroundFlattened", "Warnings"]
assert set(BASE_IMAGE_COLUMNS) <= set(IMAGE_COLUMNS)

#: Images with a side over this (px, as segmented) are segmented in tiles. Measured (bench/tiling.py):
#: untiled Otsu peaks at ~25x the image's float32 size, so 8192² (256 MiB) reaches ~6 GiB, while tiles
#: of 4096² keep the segmenter's share under ~1.6 GiB whatever the image size.
DEFAULT_TILE_SIZE = 4096
#: With ``--ome-zarr``, tiled images over this many megapixels are segmented lazily, their labels written
#: tile by tile to the store (bench/huge.py: 8192² is 67 MP).
LAZY_MEGAPIXELS = 64.0


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
    diameter : float or None
        Typical nucleus diameter in px of the input images; ``None``: each segmenter estimates it.
    diameter_um : float or None
        The same in µm (with the pixel size); ``diameter`` wins when both are set.
    segment_options : dict
        The method's own keyword arguments (e.g. ``model`` for NuSeT).
    overlays : bool
        Write overlay PNGs.
    rois : bool
        Also write ``rois/<name>.zip``, one ImageJ polygon ROI per nucleus (Fiji's ROI Manager).
    ome_zarr : bool
        Also write ``ome-zarr/<name>.ome.zarr``: the image as read with the labels as its image-label
        ``nuclei``, both as multiscale pyramids (needs the ``ome`` extra).
    crops, patches : int
        Side (px) of the nucleus crops / patches written to crops.h5 / patches.h5 (0: none).
    scale : float
        Segment the image resized by this factor and map the nuclei back (see :func:`analyze`).
    tile_size : int or None
        Segment images with a side over this (px, as segmented) in overlapping tiles; ``None``: never.
    lazy_megapixels : float or None
        With ``ome_zarr``: a TIFF or OME-Zarr image over this many megapixels that is tiled is segmented
        without reading it whole, its labels written tile by tile straight to the OME-Zarr store
        (:class:`nucleoscope.io.ZarrLabelSink`; not with ``scale`` or ``drop_flagged``). The
        measurements and the other outputs then read the image and the labels whole, as for any image.
        ``None``: never. The labels are the same either way, so it is not part of :meth:`key`.
    """

    method: str = "auto"
    pixel_size: float | None = None
    channel: int | None = None
    plane: int | None = None
    feature_set: str = "default"
    drop_flagged: bool = False
    qc: QCConfig = field(default_factory=QCConfig)
    diameter: float | None = None
    diameter_um: float | None = None
    segment_options: dict = field(default_factory=dict)
    overlays: bool = True
    rois: bool = False
    ome_zarr: bool = False
    crops: int = 0
    patches: int = 0
    scale: float = 1.0
    tile_size: int | None = DEFAULT_TILE_SIZE
    lazy_megapixels: float | None = LAZY_MEGAPIXELS

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite factor > 0, got {self.scale}")
        if self.feature_set not in ("shape", "default", "all"):
            raise ValueError(f"feature_set must be 'shape', 'default' or 'all', got {self.feature_set!r}")
        if self.crops < 0 or self.patches < 0:
            raise ValueError(f"crop and patch sizes must be >= 0 px, got {self.crops} and {self.patches}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ValueError(f"pixel size must be > 0 µm, got {self.pixel_size}")
        for name in ("diameter", "diameter_um"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if self.tile_size is not None and (int(self.tile_size) != self.tile_size or self.tile_size < 256):
            raise ValueError(f"tile_size must be an integer >= 256 px, got {self.tile_size}")
        if self.lazy_megapixels is not None and not (np.isfinite(self.lazy_megapixels) and self.lazy_megapixels >= 0):
            raise ValueError(f"lazy_megapixels must be a number >= 0, got {self.lazy_megapixels}")

    def key(self) -> str:
        """Short hash of everything that changes the results of an image."""
        d = asdict(self)
        for k in ("overlays", "rois", "ome_zarr", "crops", "patches", "lazy_megapixels"):
            d.pop(k)
        # options at their defaults are left out: keeps the keys of runs made before they existed
        for k, default in (("scale", 1.0), ("diameter", None), ("diameter_um", None),
                           ("tile_size", DEFAULT_TILE_SIZE)):
            if d[k] == default:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def _segmentation_record(details: Any) -> dict[str, Any]:
    """What the segmenter decided per image, for images.csv (the shared details fields)."""
    d = getattr(details, "diameter_px", float("nan"))
    return {"Diameter_px": float(d) if d is not None else float("nan"),
            "BackgroundFlattened": bool(getattr(details, "flattened", False)),
            "Warnings": "; ".join(getattr(details, "warnings", None) or [])}


def model_identity(method: str, segment_options: dict | None = None) -> dict:
    """Name and sha256 of the model files behind ``method`` (just the name for model-free methods).

    For NuSeT, the JSON of the model the segmenter will load: ``segment_options["model"]`` (a name of
    a bundled model or a path) or the bundled default. A model given as a ``(net, meta)`` pair is
    recorded by its ``meta``.
    """
    info: dict[str, Any] = {"method": method}
    if method == "nuset":
        from ..models import IDENTITY_KEYS, model_identity as json_identity, model_paths  # no torch import

        model = (segment_options or {}).get("model")
        if isinstance(model, tuple):
            info[str(model[1].get("name", "model"))] = {k: model[1][k] for k in IDENTITY_KEYS if k in model[1]}
        elif model is None or isinstance(model, (str, os.PathLike)):
            try:
                info[model_paths(model or _default_nuset())[1].name] = json_identity(model)
            except (OSError, ValueError):  # unreadable: the segmenter reports it per image
                pass
    return info


def _default_nuset() -> str:
    from ..models import DEFAULT_NUSET

    return DEFAULT_NUSET


@dataclass(frozen=True)
class RunJob(BatchJob):
    """``nucleoscope run`` as a batch job: ``config.method`` already resolved (never ``"auto"``)."""

    config: RunConfig
    model_info: dict

    kind = "run"

    def key(self) -> str:
        key = self.config.key()
        if len(self.model_info) > 1:  # a model file's identity (sha256): retrained weights redo every image
            key = hashlib.sha256(json.dumps([key, self.model_info], sort_keys=True).encode()).hexdigest()[:16]
        return key

    def image_columns(self) -> list[str]:
        return list(IMAGE_COLUMNS)

    def table_columns(self) -> list[str]:
        from ..features import feature_columns

        return ["ImageName"] + feature_columns(self.config.feature_set) + QC_COLUMNS

    def empty_record(self, item: Item) -> dict[str, Any]:
        rec = super().empty_record(item)
        rec.update(Flagged=0, Method=self.config.method, BackgroundFlattened=False, Warnings="")
        return rec

    def outputs(self, out: Path, name: str) -> list[Path]:
        files = [out / "labels" / f"{name}.tif"]
        if self.config.overlays:
            files.append(out / "overlays" / f"{name}.png")
        if self.config.rois:
            files.append(out / "rois" / f"{name}.zip")
        if self.config.ome_zarr:
            files.append(out / "ome-zarr" / f"{name}.ome.zarr")
        return files

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        from .. import io

        c = self.config
        lazy = self._lazy_input(item)
        if lazy is not None:
            return self._process_lazy(item, lazy, out, rec)
        img = io.read_image(item.path, channel=c.channel, plane=c.plane, pixel_size=c.pixel_size)
        rec["Megapixels"] = img.megapixels
        if looks_like_labels(img.data, img.dtype):
            log.warning("%s: this looks like a mask or label image, not the nuclear stain's intensities; "
                        "to measure a segmentation use `nucleoscope measure IMAGES --labels LABELS`", item.path)
        rec["PixelSize_um"] = img.spacing if img.spacing else float("nan")
        try:
            res = analyze(img.data, spacing=img.spacing, saturation=img.saturation, method=c.method,
                          feature_set=c.feature_set, qc=c.qc, drop_flagged_nuclei=c.drop_flagged,
                          diameter=c.diameter, diameter_um=c.diameter_um, segment_options=c.segment_options,
                          scale=c.scale, tile_size=c.tile_size)
        except InputError as exc:
            if exc.path is None:  # the problem is this image's: name it
                raise InputError(exc.problem, path=item.path) from exc
            raise
        if c.ome_zarr:
            stored = np.dtype(img.dtype)  # values as acquired, so the file's own integer type holds them
            pixels = img.data.astype(stored) if np.issubdtype(stored, np.integer) else img.data
            io.write_ome_zarr(out / "ome-zarr" / f"{item.name}.ome.zarr", pixels, res.labels, spacing=img.spacing)
        return self._write_outputs(item, out, rec, img, res.labels, res.table, res.details)

    def _write_outputs(self, item: Item, out: Path, rec: dict[str, Any], img: Any, labels: np.ndarray,
                       table: pd.DataFrame, details: Any) -> pd.DataFrame:
        """labels/, overlays/, rois/ of one image and its record; returns its table rows."""
        from .. import io

        c = self.config
        table = table.copy()
        table.insert(0, "ImageName", item.name)
        io.write_labels(out / "labels" / f"{item.name}.tif", labels, spacing=img.spacing)
        if c.overlays:
            flagged = table.loc[table["QC_Flagged"], "ObjectNumber"].to_numpy(dtype=np.int64)
            io.write_png(out / "overlays" / f"{item.name}.png", overlay_rgb(img.data, labels, flagged))
        if c.rois:
            io.write_imagej_rois(out / "rois" / f"{item.name}.zip", labels)
        rec.update(Flagged=int(table["QC_Flagged"].sum()), **_segmentation_record(details))
        return table

    def _lazy_input(self, item: Item) -> Any:
        """The image opened lazily (:class:`nucleoscope.io.LazyFile`) when it takes the lazy path
        (:attr:`RunConfig.lazy_megapixels`), else None."""
        from .. import io
        from ..segment.tiled import needs_tiling

        c = self.config
        if (not c.ome_zarr or c.lazy_megapixels is None or c.tile_size is None or c.scale != 1.0
                or c.drop_flagged):
            return None
        name = Path(item.path).name.lower()
        if not name.endswith((".tif", ".tiff", ".zarr")):
            return None
        try:
            lazy = io.open_image_lazy(item.path, channel=c.channel, plane=c.plane, pixel_size=c.pixel_size)
        except InputError:  # axes it cannot slice lazily and the like: the whole-image reader decides
            return None
        if lazy.megapixels <= c.lazy_megapixels or not needs_tiling(lazy.shape, c.tile_size):
            return None
        return lazy

    def _process_lazy(self, item: Item, lazy: Any, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        """Segment tile by tile with the labels written straight to ``ome-zarr/<name>.ome.zarr``, then
        measure as :meth:`process` does (the image and the labels read whole)."""
        from .. import io
        from ..segment.tiled import segment_large
        from .analyze import check_sizes, diameter_px, measure_labels

        c = self.config
        rec["Megapixels"] = lazy.megapixels
        rec["PixelSize_um"] = lazy.spacing if lazy.spacing else float("nan")
        store = out / "ome-zarr" / f"{item.name}.ome.zarr"
        try:
            d = diameter_px(c.diameter, c.diameter_um, lazy.spacing)
            check_sizes(lazy.shape, 1.0, d)
            with io.ZarrLabelSink(store, lazy.data, spacing=lazy.spacing) as sink:
                _, details = segment_large(lazy.data, method=c.method, spacing=lazy.spacing, diameter=d,
                                           tile_size=c.tile_size, sink=sink, **c.segment_options)
        except InputError as exc:
            if exc.path is None:
                raise InputError(exc.problem, path=item.path) from exc
            raise
        log.info("%s: %.0f MP segmented lazily, labels written tile by tile to %s", item.path,
                 lazy.megapixels, store)
        # measuring is today's step: the image and the labels whole in memory
        img = io.read_image(item.path, channel=c.channel, plane=c.plane, pixel_size=c.pixel_size)
        labels = io.read_zarr_labels(store)
        table = measure_labels(img.data, labels, spacing=img.spacing, saturation=img.saturation,
                               feature_set=c.feature_set, qc=c.qc)
        return self._write_outputs(item, out, rec, img, labels, table, details)

    def parameters(self) -> dict[str, Any]:
        return asdict(self.config)

    def model(self) -> dict[str, Any]:
        return dict(self.model_info)

    def finish(self, out: Path, images: pd.DataFrame) -> None:
        if self.config.crops or self.config.patches:
            _write_windows(out, images, self.config)


def _write_windows(out: Path, images: pd.DataFrame, config: RunConfig) -> None:
    """Write crops.h5 / patches.h5 from the finished images' labels (so resumed images are included).

    The HDF5 layout is :class:`nucleoscope.io.hdf5.CropWriter`'s, the same as ``nucleoscope measure``.
    """
    from .. import io
    from ..features import nucleus_crops, nucleus_patches
    from ..io.hdf5 import window_writers

    with window_writers(out, crop_size=config.crops, patch_size=config.patches,
                        patch_stride=max(config.patches // 2, 1),
                        metadata={"method": config.method, "pixel_size": config.pixel_size}) as writers:
        for _, r in images[images["Status"] == "ok"].iterrows():
            check_window_bytes(r["ImageName"], r["Count"], max(config.crops, config.patches))
            img = io.read_image(r["Path"], channel=config.channel, plane=config.plane, pixel_size=config.pixel_size)
            labels = io.read_labels(out / "labels" / f"{r['ImageName']}.tif")
            if "crops" in writers:
                writers["crops"].add(r["ImageName"], nucleus_crops(img.data, labels, size=config.crops))
            if "patches" in writers:
                writers["patches"].add(r["ImageName"], nucleus_patches(
                    img.data, labels, size=config.patches, stride=max(config.patches // 2, 1),
                    saturation=img.saturation))


def input_items(inputs: Sequence[str | os.PathLike], out: Path, *, recursive: bool, what: str) -> list[Item]:
    """One uniquely named engine Item per input file (``run``, ``run --3d``).

    Only the folders the batch writes are excluded, so that ``-o`` may name the input folder itself;
    ``what`` names the inputs in the error when every one lies in those folders.
    """
    from .. import io

    paths = io.find_images(inputs, recursive=recursive, exclude=[Path(out) / d for d in OUTPUT_SUBFOLDERS])
    if not paths:
        raise InputError(f"no {what} to analyse: every input lies in the output folder's own sub-folders")
    return [Item(n, os.fspath(p)) for p, n in zip(paths, io.unique_names(paths))]


def run_batch(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, config: RunConfig = RunConfig(), *,
              jobs: int = 1, show_progress: bool = True, recursive: bool = False,
              command: str | None = None, scheduler: str | None = None) -> pd.DataFrame:
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
    scheduler : str, optional
        ``local:N`` or a Dask scheduler's address: the images run as tasks on that cluster
        (:mod:`nucleoscope.pipeline.cluster`) instead of ``jobs`` local processes.

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
    from ..segment import resolve_method

    out = Path(out)
    items = input_items(inputs, out, recursive=recursive, what="image")
    # the method is resolved once, here; replace(), not asdict(), keeps the dataclasses inside options
    config = replace(config, method=resolve_method(config.method))
    job = RunJob(config, model_identity(config.method, config.segment_options))
    return run_jobs(job, items, out, jobs=jobs, show_progress=show_progress, command=command, inputs=inputs,
                    scheduler=scheduler)
