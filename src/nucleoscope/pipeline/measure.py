"""The ``measure`` job: the nuclei of existing label images (from any tool), measured and tabled with
the same engine, resume and outputs as ``run`` (:mod:`nucleoscope.pipeline.engine`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .. import InputError
from .engine import BASE_IMAGE_COLUMNS, BatchJob, Item, check_window_bytes, run_jobs

__all__ = ["LABEL_SUFFIXES", "MEASURE_IMAGE_COLUMNS", "MeasureJob", "MeasureOptions", "measure_batch",
           "pair_labels"]

#: Suffixes other tools append to a label image's name (Cellpose ``_cp_masks``, StarDist/others).
LABEL_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg")

MEASURE_IMAGE_COLUMNS = BASE_IMAGE_COLUMNS[:2] + ["LabelsPath"] + BASE_IMAGE_COLUMNS[2:] + ["PixelSize_um"]


def _strip(name: str) -> str:
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def files_by_name(paths: Sequence[Path], what: str) -> dict[str, Path]:
    """``{image name: path}`` of ``paths`` (:func:`nucleoscope.io.image_name`), in order.

    Raises
    ------
    InputError
        Two files with the same name (``what`` says which side, e.g. "label").
    """
    from ..io import image_name

    found: dict[str, Path] = {}
    for p in paths:
        n = image_name(p)
        if n in found:
            raise InputError(f"two {what} images named {n!r}: {found[n]} and {p}", path=p)
        found[n] = p
    return found


def pair_labels(images: list[Path], labels: list[Path]) -> list[tuple[str, Path, Path | None]]:
    """Pair each image with the label image of the same name: ``[(name, image, labels or None)]``.

    An exact name match wins; otherwise a label name minus one of :data:`LABEL_SUFFIXES` matches.

    Raises
    ------
    InputError
        Two images, or two label images, that claim the same name.
    """
    from ..io import image_name

    exact = files_by_name(labels, "label")
    loose: dict[str, Path] = {}
    for n, f in exact.items():
        s = _strip(n)
        if s != n:
            if s in loose:
                raise InputError(f"two label images for {s!r}: {loose[s]} and {f}", path=f)
            loose[s] = f
    out, seen = [], set()
    for img in images:
        n = image_name(img)
        if n in seen:
            raise InputError(f"two images named {n!r}; rename one (tables are keyed by name)", path=img)
        seen.add(n)
        out.append((n, img, exact.get(n) or loose.get(n)))
    return out


@dataclass(frozen=True)
class MeasureOptions:
    """What ``measure`` computes per image (picklable, for worker processes).

    ``crops``/``patches`` switch on crops.h5 / patches.h5, written over the finished images at the end.
    """

    feature_set: str = "default"
    pixel_size: float | None = None
    channel: int | None = None
    hc_k: float = 1.0
    crops: bool = False
    crop_size: int = 128
    patches: bool = False
    patch_size: int = 32
    patch_stride: int = 16
    class_label: str | None = None

    def key(self) -> str:
        """Short hash of what changes an image's table (the HDF5 windows do not)."""
        d = {k: v for k, v in asdict(self).items() if k in ("feature_set", "pixel_size", "channel", "hc_k")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_pair(item: Item, opts: MeasureOptions):
    from ..io import read_image, read_labels

    if item.labels is None:
        raise InputError("no label image with this name", path=item.path)
    img = read_image(item.path, channel=opts.channel, pixel_size=opts.pixel_size)
    labels = read_labels(item.labels)
    if labels.shape != img.data.shape:
        raise InputError(f"label image shape {labels.shape} differs from the image's {img.data.shape} "
                         f"({item.path})", path=item.labels)
    return img, labels


@dataclass(frozen=True)
class MeasureJob(BatchJob):
    """``nucleoscope measure`` as a batch job."""

    options: MeasureOptions

    kind = "measure"
    report = True

    def key(self) -> str:
        return self.options.key()

    def image_columns(self) -> list[str]:
        return list(MEASURE_IMAGE_COLUMNS)

    def table_columns(self) -> list[str]:
        from ..features import feature_columns

        return ["ImageName", *feature_columns(self.options.feature_set)]

    def empty_record(self, item: Item) -> dict[str, Any]:
        rec = super().empty_record(item)
        rec["LabelsPath"] = item.labels or ""
        return rec

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        from ..features import FeatureConfig, measure_nuclei

        img, labels = _read_pair(item, self.options)
        rec["Megapixels"] = img.megapixels
        rec["PixelSize_um"] = img.spacing if img.spacing else float("nan")
        try:
            table = measure_nuclei(img.data, labels, spacing=img.spacing, feature_set=self.options.feature_set,
                                   saturation=img.saturation, config=FeatureConfig(hc_k=self.options.hc_k))
        except InputError as exc:
            raise InputError(exc.problem, path=item.path) from exc
        table.insert(0, "ImageName", item.name)
        return table

    def parameters(self) -> dict[str, Any]:
        return asdict(self.options)

    def finish(self, out: Path, images: pd.DataFrame) -> None:
        o = self.options
        if not (o.crops or o.patches):
            return
        from ..features import nucleus_crops, nucleus_patches
        from ..io.hdf5 import window_writers

        with window_writers(out, crop_size=o.crop_size if o.crops else 0,
                            patch_size=o.patch_size if o.patches else 0, patch_stride=o.patch_stride,
                            metadata={"features": o.feature_set, "pixel_size": o.pixel_size,
                                      "hc_k": o.hc_k}) as writers:
            for _, r in images[images["Status"] == "ok"].iterrows():
                check_window_bytes(r["ImageName"], r["Count"], max(o.crop_size if o.crops else 0,
                                                                   o.patch_size if o.patches else 0))
                img, labels = _read_pair(Item(r["ImageName"], r["Path"], r["LabelsPath"]), o)
                if "crops" in writers:
                    writers["crops"].add(r["ImageName"], nucleus_crops(img.data, labels, size=o.crop_size),
                                         class_label=o.class_label)
                if "patches" in writers:
                    writers["patches"].add(r["ImageName"], nucleus_patches(
                        img.data, labels, size=o.patch_size, stride=o.patch_stride, saturation=img.saturation),
                        class_label=o.class_label)


def measure_batch(inputs: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike],
                  out: str | os.PathLike, options: MeasureOptions = MeasureOptions(), *, jobs: int = 1,
                  show_progress: bool = True, recursive: bool = False, command: str | None = None,
                  scheduler: str | None = None) -> pd.DataFrame:
    """Measure the nuclei of label images paired by name with their images; resumable like ``run``.

    Parameters
    ----------
    inputs : sequence
        Image files, folders or glob patterns.
    labels : sequence
        Label images (0 = background): files, folders or glob patterns, paired by name
        (:func:`pair_labels`).
    out : str or os.PathLike
        Output folder: nuclei.parquet/.csv, images.csv, run.json, report.html (+ crops.h5/patches.h5).
    options : MeasureOptions
    jobs, show_progress, recursive, command, scheduler
        As :func:`nucleoscope.pipeline.run_batch`.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns :data:`MEASURE_IMAGE_COLUMNS`.
    """
    from ..io import find_images

    out = Path(out)
    images = find_images(inputs, recursive=recursive, exclude=[out])
    label_files = find_images(labels, recursive=recursive, exclude=[out])
    label_set = {p.resolve() for p in label_files}
    images = [p for p in images if p.resolve() not in label_set]  # LABELS inside the IMAGES folder
    if not images:
        raise InputError("no images to measure (all inputs are label images?)")
    items = [Item(n, os.fspath(i), os.fspath(lab) if lab else None) for n, i, lab in pair_labels(images, label_files)]
    return run_jobs(MeasureJob(options), items, out, jobs=jobs, show_progress=show_progress, command=command,
                    inputs=[*inputs, *labels], scheduler=scheduler)
