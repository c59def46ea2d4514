"""Measure the nuclei of existing label images (from any tool) and write one table per batch.

``nucleoscope measure IMAGES... --labels LABELS -o OUT``: IMAGES are image files, folders or glob
patterns; LABELS are label images (0 = background), a folder or files, paired with the images by name
(file stem; a label name may also carry a tool's suffix such as ``_masks``, ``_cp_masks``, ``_labels``
or ``_label``). Writes ``OUT/nuclei.parquet`` + ``OUT/nuclei.csv`` (one row per nucleus, keyed by
``ImageName`` + ``ObjectNumber``), ``OUT/images.csv`` (one row per image: nuclei, status, error,
seconds) and, on request, ``OUT/crops.h5`` / ``OUT/patches.h5``. A failing image is recorded and the
batch goes on; exits 1 if any image failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import InputError

__all__ = ["add_arguments", "run", "pair_labels", "MeasureOptions", "measure_file", "LABEL_SUFFIXES"]

log = logging.getLogger(__name__)

#: Suffixes other tools append to a label image's name (Cellpose ``_cp_masks``, StarDist/others).
LABEL_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    p.add_argument("--labels", required=True, nargs="+", metavar="LABELS",
                   help="label images: a folder, files or glob patterns, paired with the images by name")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--features", default="default", choices=["shape", "default", "all"],
                   help="measurement groups: shape (+intensity), default (SCENMED's set + Haralick + HC/EC), "
                        "all (+run length, Gabor) (default: %(default)s)")
    p.add_argument("--pixel-size", type=float, metavar="UM",
                   help="pixel size in µm (overrides the files' metadata); fills the _um/_um2 columns")
    p.add_argument("--channel", type=int, metavar="C", help="channel of a multichannel image (0-based)")
    p.add_argument("--hc-k", type=float, default=1.0, metavar="K",
                   help="heterochromatin threshold = mean + K * SD of the nucleus (default: %(default)s)")
    p.add_argument("--crops", action="store_true", help="also write crops.h5 (each nucleus centred)")
    p.add_argument("--crop-size", type=int, default=128, metavar="PX", help="crop side (default: %(default)s)")
    p.add_argument("--patches", action="store_true", help="also write patches.h5 (sliding-window patches)")
    p.add_argument("--patch-size", type=int, default=32, metavar="PX",
                   help="patch side (default: %(default)s; PatchNet: 11 or 17)")
    p.add_argument("--patch-stride", type=int, default=16, metavar="PX", help="patch step (default: %(default)s)")
    p.add_argument("--class-label", metavar="NAME", help="class of every image (stored in the HDF5 labels)")
    p.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="worker processes (default: 1)")


def _strip(name: str) -> str:
    for suffix in LABEL_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def pair_labels(images: list[Path], labels: list[Path]) -> list[tuple[str, Path, Path | None]]:
    """Pair each image with the label image of the same name: ``[(name, image, labels or None)]``.

    An exact name match wins; otherwise a label name minus one of :data:`LABEL_SUFFIXES` matches.

    Raises
    ------
    InputError
        Two images, or two label images, that claim the same name.
    """
    from ..io import image_name

    exact: dict[str, Path] = {}
    loose: dict[str, Path] = {}
    for f in labels:
        n = image_name(f)
        if n in exact:
            raise InputError(f"two label images named {n!r}: {exact[n]} and {f}", path=f)
        exact[n] = f
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
    """What :func:`measure_file` computes (picklable, for worker processes)."""

    feature_set: str = "default"
    pixel_size: float | None = None
    channel: int | None = None
    hc_k: float = 1.0
    crops: bool = False
    crop_size: int = 128
    patches: bool = False
    patch_size: int = 32
    patch_stride: int = 16


def measure_file(name: str, image_path: Path, labels_path: Path | None, opts: MeasureOptions) -> dict[str, Any]:
    """Measure one image; never raises: a failure (bad input or unexpected) goes into the record.

    Returns
    -------
    dict
        ``record`` (the images.csv row), ``table`` (DataFrame or None), ``crops``/``patches`` (or None).
    """
    from ..features import FeatureConfig, measure_nuclei, nucleus_crops, nucleus_patches
    from ..io import read_image, read_labels

    t0 = time.perf_counter()
    # same column names as `run`'s images.csv, so the two tables can be concatenated
    record: dict[str, Any] = {"ImageName": name, "Path": os.fspath(image_path),
                              "LabelsPath": os.fspath(labels_path) if labels_path else "", "Status": "ok",
                              "Error": "", "Count": 0, "Seconds": 0.0}
    result: dict[str, Any] = {"record": record, "table": None, "crops": None, "patches": None}
    try:
        if labels_path is None:
            raise InputError("no label image with this name", path=image_path)
        img = read_image(image_path, channel=opts.channel, pixel_size=opts.pixel_size)
        labels = read_labels(labels_path)
        if labels.shape != img.data.shape:
            raise InputError(f"label image shape {labels.shape} differs from the image's {img.data.shape} "
                             f"({image_path})", path=labels_path)
        try:
            table = measure_nuclei(img.data, labels, spacing=img.spacing, feature_set=opts.feature_set,
                                   saturation=img.saturation, config=FeatureConfig(hc_k=opts.hc_k))
        except InputError as exc:
            raise InputError(exc.problem, path=image_path) from exc
        table.insert(0, "ImageName", name)
        result["table"] = table
        record["Count"] = len(table)
        if opts.crops:
            result["crops"] = nucleus_crops(img.data, labels, size=opts.crop_size)
        if opts.patches:
            result["patches"] = nucleus_patches(img.data, labels, size=opts.patch_size, stride=opts.patch_stride,
                                                saturation=img.saturation)
    except InputError as exc:
        record.update(Status="failed", Error=str(exc))
        log.warning("%s", exc)
    except Exception as exc:  # noqa: BLE001 - one image's unexpected failure must not end the batch
        record.update(Status="failed", Error=f"{image_path}: unexpected {type(exc).__name__}: {exc}")
        log.exception("measuring %s failed", image_path)
    record["Seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _star(job: tuple) -> dict[str, Any]:
    return measure_file(*job)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..features import feature_columns
    from ..io import find_images, write_table
    from ..io.hdf5 import window_writers

    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.out)
    images = find_images(args.inputs, recursive=args.recursive, exclude=[out])
    labels = find_images(args.labels, recursive=args.recursive, exclude=[out])
    label_set = {p.resolve() for p in labels}
    images = [p for p in images if p.resolve() not in label_set]  # LABELS inside the IMAGES folder
    if not images:
        raise InputError("no images to measure (all inputs are label images?)")
    pairs = pair_labels(images, labels)
    opts = MeasureOptions(feature_set=args.features, pixel_size=args.pixel_size, channel=args.channel,
                          hc_k=args.hc_k, crops=args.crops, crop_size=args.crop_size, patches=args.patches,
                          patch_size=args.patch_size, patch_stride=args.patch_stride)
    jobs = [(n, i, lab, opts) for n, i, lab in pairs]
    tables, records = [], []
    with window_writers(out, crop_size=args.crop_size if args.crops else 0,
                        patch_size=args.patch_size if args.patches else 0, patch_stride=args.patch_stride,
                        metadata={"features": args.features, "pixel_size": args.pixel_size,
                                  "hc_k": args.hc_k}) as writers:
        if args.jobs == 1 or len(jobs) == 1:
            results = map(_star, jobs)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs)))
            # Results come back in input order, so the table and the HDF5 files are deterministic.
            results = pool.map(_star, jobs, chunksize=1)
        for res in results:
            records.append(res["record"])
            if res["table"] is not None:
                tables.append(res["table"])
            for kind, w in writers.items():
                if res[kind] is not None:
                    w.add(res["record"]["ImageName"], res[kind], class_label=args.class_label)
        if pool is not None:
            pool.shutdown()
    columns = ["ImageName", *feature_columns(args.features)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        {c: pd.Series([], dtype=object if c == "ImageName" else ("int32" if c == "ObjectNumber" else "float64"))
         for c in columns})
    write_table(table[columns], out / "nuclei.parquet")
    write_table(table[columns], out / "nuclei.csv")
    write_table(pd.DataFrame(records), out / "images.csv")
    failed = [r for r in records if r["Status"] != "ok"]
    log.info("measured %d nuclei in %d images (%d failed) -> %s", len(table), len(records), len(failed), out)
    return 1 if failed else 0
