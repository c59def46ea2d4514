"""Measure the nuclei of existing label images (from any tool) and write one table per batch.

``nucleoscope measure IMAGES... --labels LABELS -o OUT``: IMAGES are image files, folders or glob
patterns; LABELS are label images (0 = background), a folder or files, paired with the images by name
(file stem; a label name may also carry a tool's suffix such as ``_masks``, ``_cp_masks``, ``_labels``
or ``_label``). Writes ``OUT/nuclei.parquet`` + ``OUT/nuclei.csv`` (one row per nucleus, keyed by
``ImageName`` + ``ObjectNumber``), ``OUT/images.csv`` (one row per image: nuclei, status, error,
seconds), ``OUT/run.json``, ``OUT/report.html`` and, on request, ``OUT/crops.h5`` / ``OUT/patches.h5``. A failing image is recorded and the
batch goes on; running the same command again resumes (finished images are skipped); exits 1 if any image failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..pipeline.measure import LABEL_SUFFIXES
from .run import _int_at_least, _positive_float, _window_size

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders or glob patterns")
    p.add_argument("--labels", required=True, nargs="+", metavar="LABELS",
                   help="label images: a folder, files or glob patterns, paired with the images by name "
                        f"(a label name may end in {', '.join(LABEL_SUFFIXES)})")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--features", default="default", choices=["shape", "default", "all"],
                   help="measurement groups: shape (+intensity), default (SCENMED's set + Haralick + HC/EC), "
                        "all (+run length, Gabor) (default: %(default)s)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM",
                   help="pixel size in µm (overrides the files' metadata); fills the _um/_um2 columns")
    p.add_argument("--channel", type=_int_at_least(0), metavar="C", help="channel of a multichannel image (0-based)")
    p.add_argument("--hc-k", type=float, default=1.0, metavar="K",
                   help="heterochromatin threshold = mean + K * SD of the nucleus (default: %(default)s)")
    p.add_argument("--crops", action="store_true", help="also write crops.h5 (each nucleus centred)")
    p.add_argument("--crop-size", type=_window_size, default=128, metavar="PX", help="crop side (default: %(default)s)")
    p.add_argument("--patches", action="store_true", help="also write patches.h5 (sliding-window patches)")
    p.add_argument("--patch-size", type=_window_size, default=32, metavar="PX",
                   help="patch side (default: %(default)s; PatchNet: 11 or 17)")
    p.add_argument("--patch-stride", type=_int_at_least(1), default=16, metavar="PX",
                   help="patch step (default: %(default)s)")
    p.add_argument("--class-label", metavar="NAME", help="class of every image (stored in the HDF5 labels)")
    p.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders")
    p.add_argument("-j", "--jobs", type=_int_at_least(1), default=1, metavar="N", help="worker processes (default: 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the images on a Dask cluster: local:N (N worker processes here) or a scheduler's "
                        "address (tcp://host:8786); the output folder must be writable by the workers; needs "
                        "pip install 'nucleoscope[dask]'")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (failures and the summary still print)")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import MeasureOptions, measure_batch

    opts = MeasureOptions(feature_set=args.features, pixel_size=args.pixel_size, channel=args.channel,
                          hc_k=args.hc_k, crops=args.crops, crop_size=args.crop_size, patches=args.patches,
                          patch_size=args.patch_size, patch_stride=args.patch_stride, class_label=args.class_label)
    images = measure_batch(args.inputs, args.labels, args.out, opts, jobs=args.jobs, scheduler=args.scheduler,
                           show_progress=not args.quiet,
                           recursive=args.recursive, command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    failed = images[images["Status"] != "ok"]
    print(f"measured {int(images['Count'].sum())} nuclei in {len(images) - len(failed)} of {len(images)} images "
          f"-> {args.out}", file=sys.stderr)
    for _, r in failed.iterrows():
        print(f"failed: {r['Error']}", file=sys.stderr)
    return 1 if len(failed) else 0
