"""Segment, quality-check and measure every nucleus in images, folders or glob patterns.

Writes labels/, overlays/, nuclei.parquet + nuclei.csv, images.csv, report.html and run.json into the
output folder. Running the same command again resumes: finished images are skipped, failed ones retried.
Exits 1 if any image failed (after finishing the others), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys

from .. import InputError
from ..pipeline import RunConfig
from ..qc import QCConfig
from ..segment import METHODS

__all__ = ["add_arguments", "run", "add_run_options", "config_from_args"]


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a bad value is a usage error, not a traceback)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v
    return parse


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``demo``."""
    p.add_argument("--method", default="auto", choices=["auto", *METHODS],
                   help="segmenter: auto = the bundled NuSeT model when available, else otsu; "
                        "classic = SCENMED's marker watershed; otsu = Otsu + distance watershed; "
                        "tissue = SCENMED's tissue pipeline (default: auto)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM",
                   help="pixel size in µm (overrides the files' metadata); physical columns need it")
    p.add_argument("--diameter", type=_positive_float, metavar="D",
                   help="typical nucleus diameter in px (or in µm with --diameter-um); default: estimated per image")
    p.add_argument("--diameter-um", action="store_true", help="--diameter is in µm (needs a pixel size)")
    p.add_argument("--scale", type=_positive_float, default=1.0, metavar="FACTOR",
                   help="segment the image resized by FACTOR and map the nuclei back; measurements stay on "
                        "the full image. 0.25 for STORM renderings or nuclei over ~100 px (default: 1)")
    p.add_argument("--features", default="default", choices=["shape", "default", "all"],
                   help="measurement groups: shape (+intensity), default (SCENMED's set), all (+run length, Gabor)")
    p.add_argument("--drop-flagged", action="store_true", help="remove QC-flagged nuclei from labels and table")
    p.add_argument("--edge-margin", type=_int_at_least(0), default=QCConfig().edge_margin, metavar="PX",
                   help="flag nuclei within this many px of the frame (default: %(default)s, SCENMED)")
    p.add_argument("--max-box", type=_int_at_least(1), default=QCConfig().max_box, metavar="PX",
                   help="flag nuclei whose bounding box is larger than PX in height or width (default: "
                        "%(default)s, SCENMED's crop; raise it at 40-100x magnification)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    p.add_argument("--rois", action="store_true", help="also write rois/<image>.zip for Fiji's ROI Manager")
    p.add_argument("--crops", type=int, nargs="?", const=128, default=0, metavar="SIZE",
                   help="also write crops.h5: every nucleus centred in a SIZE x SIZE window (default SIZE 128)")
    p.add_argument("--patches", type=int, nargs="?", const=32, default=0, metavar="SIZE",
                   help="also write patches.h5: SIZE x SIZE windows, stride SIZE/2, >= 85%% inside a nucleus "
                        "(default SIZE 32; PatchNet uses 11 and 17)")
    p.add_argument("-j", "--jobs", type=_int_at_least(1), default=1, help="worker processes (default: 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--channel", type=_int_at_least(0), metavar="C", help="channel of a multichannel image (0-based)")
    p.add_argument("--plane", type=_int_at_least(0), metavar="Z", help="plane of a z-stack or time series (0-based)")
    p.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders")
    add_run_options(p)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    opts = {}
    if args.diameter is not None:
        if args.diameter_um:
            if not args.pixel_size:
                raise InputError("--diameter-um needs --pixel-size")
            opts["diameter"] = args.diameter / args.pixel_size
        else:
            opts["diameter"] = args.diameter
        opts["diameter"] *= args.scale  # the segmenter sees the resized image
    return RunConfig(method=args.method, pixel_size=args.pixel_size, channel=getattr(args, "channel", None),
                     plane=getattr(args, "plane", None), feature_set=args.features,
                     drop_flagged=args.drop_flagged, qc=QCConfig(edge_margin=args.edge_margin, max_box=args.max_box),
                     segment_options=opts, overlays=not args.no_overlays, rois=args.rois, scale=args.scale,
                     crops=args.crops, patches=args.patches)


def _segment_options_for(method: str, opts: dict) -> dict:
    """Classic methods take their diameter through their config dataclass."""
    if "diameter" in opts and method in ("classic", "otsu", "tissue"):
        from ..segment.classic import ClassicConfig

        opts = dict(opts)
        opts["config"] = ClassicConfig(diameter=opts.pop("diameter"))
    return opts


def run(args: argparse.Namespace) -> int:
    from ..pipeline import resolve_method, run_batch

    config = config_from_args(args)
    method = resolve_method(config.method)
    config = RunConfig(**{**config.__dict__, "method": method,
                          "segment_options": _segment_options_for(method, config.segment_options)})
    images = run_batch(args.inputs, args.out, config, jobs=args.jobs, show_progress=not args.quiet,
                       recursive=args.recursive, command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    n_fail = int((images["Status"] != "ok").sum())
    if not args.quiet:
        how = f"method {method}" + (" (auto: no NuSeT model installed)" if args.method == "auto"
                                    and method != "nuset" else "")
        print(f"{len(images) - n_fail} of {len(images)} images ok, {int(images['Count'].sum())} nuclei, "
              f"{how} -> {args.out}", file=sys.stderr)
        for _, r in images[images["Status"] != "ok"].iterrows():
            print(f"failed: {r['Error']}", file=sys.stderr)
    return 1 if n_fail else 0
