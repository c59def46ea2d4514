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
from ..pipeline import DEFAULT_TILE_SIZE, RunConfig
from ..pipeline.run import LAZY_MEGAPIXELS
from ..qc import QCConfig
from ..segment import METHODS

__all__ = ["add_arguments", "run", "add_run_options", "config_from_args", "print_summary"]


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a bad value is a usage error, not a traceback)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
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


#: Largest crop / patch side (px): a window is stored per nucleus, so 2048 px windows already take
#: 16 MiB each; beyond that a typo (``--crops 100000``) would allocate gigabytes per nucleus.
MAX_WINDOW = 2048


def _window_size(text: str) -> int:
    """argparse type: a crop or patch side in px, 1 to :data:`MAX_WINDOW`."""
    v = _int_at_least(1)(text)
    if v > MAX_WINDOW:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WINDOW} px, got {v}")
    return v


def _tile_size(text: str) -> int:
    """argparse type: 0 (never tile) or a tile side >= 256 px."""
    v = _int_at_least(0)(text)
    if 0 < v < 256:
        raise argparse.ArgumentTypeError(f"must be 0 (never tile) or >= 256 px, got {v}")
    return v


def add_run_options(p: argparse.ArgumentParser, method_flag: str = "--method") -> None:
    """Options shared by ``run``, ``demo`` and ``cells`` (whose nucleus segmenter is ``--nuclei-method``)."""
    p.add_argument(method_flag, dest="method", default="auto", choices=["auto", *METHODS],
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
    p.add_argument("--tile-size", type=_tile_size, default=DEFAULT_TILE_SIZE, metavar="PX",
                   help="segment images with a side over PX (as segmented, after --scale) in overlapping tiles, "
                        "so memory stays bounded whatever the image size; 0 = never tile (default: %(default)s)")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="NuSeT's arithmetic: bfloat16 is ~2x faster on CPUs with native bfloat16 (AVX512-BF16, "
                        "AMX) and its labels differ slightly from float32's (docs/nuset.md, Speed; default: float32)")
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
    p.add_argument("--ome-zarr", action="store_true",
                   help="also write ome-zarr/<image>.ome.zarr: the image with its labels, multiscale (napari, "
                        "Fiji, OMERO open it); needs pip install 'nucleoscope[ome]'")
    p.add_argument("--lazy-above", type=_nonnegative_float, default=LAZY_MEGAPIXELS, metavar="MP",
                   help="with --ome-zarr: a TIFF or OME-Zarr image over MP megapixels that is tiled is segmented "
                        "without reading it whole, its labels written tile by tile to the store, so segmenting "
                        "needs memory for a tile, not the image (measuring still reads it whole; default: "
                        "%(default)s)")
    p.add_argument("--crops", type=_window_size, nargs="?", const=128, default=0, metavar="SIZE",
                   help="also write crops.h5: every nucleus centred in a SIZE x SIZE window (default SIZE 128)")
    p.add_argument("--patches", type=_window_size, nargs="?", const=32, default=0, metavar="SIZE",
                   help="also write patches.h5: SIZE x SIZE windows, stride SIZE/2, >= 85%% inside a nucleus "
                        "(default SIZE 32; PatchNet uses 11 and 17)")
    p.add_argument("-j", "--jobs", type=_int_at_least(1), default=1, help="worker processes (default: 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the images on a Dask cluster: local:N (N worker processes here) or a scheduler's "
                        "address (tcp://host:8786); the output folder must be writable by the workers; needs "
                        "pip install 'nucleoscope[dask]'")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (failures and the summary still print)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--channel", type=_int_at_least(0), metavar="C", help="channel of a multichannel image (0-based)")
    p.add_argument("--plane", type=_int_at_least(0), metavar="Z", help="plane of a z-stack or time series (0-based)")
    p.add_argument("-r", "--recursive", action="store_true", help="also search sub-folders")
    p.add_argument("--3d", dest="three_d", action="store_true",
                   help="inputs are (Z, Y, X) stacks: segment each slice with --method, link the slices into 3D "
                        "nuclei, one table row per 3D nucleus (volume, surface, sphericity; docs/volume.md)")
    p.add_argument("--spacing-z", type=_positive_float, metavar="UM",
                   help="with --3d: z step in µm (overrides the file's metadata)")
    p.add_argument("--cells", metavar="DIR",
                   help="whole-cell-stain images (a folder, file or glob) paired with the inputs by file name: "
                        "also segment each nucleus's cell, as `nucleoscope cells` (cells/, cytoplasm/)")
    add_run_options(p)
    from .cells import add_cell_options  # here, not at the top: cli.cells imports this module

    add_cell_options(p)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of parsed ``run``/``demo`` options (diameter as given: units are settled
    once, per image, by :func:`nucleoscope.pipeline.analyze`)."""
    if args.diameter_um and args.diameter is None:
        raise InputError("--diameter-um says the unit of --diameter; give --diameter too")
    um = bool(args.diameter_um)
    options = {}
    if getattr(args, "precision", "float32") != "float32":
        if args.method not in ("auto", "nuset"):
            raise InputError(f"--precision applies to the NuSeT segmenter, not --method {args.method}")
        options["precision"] = args.precision
    return RunConfig(segment_options=options, method=args.method, pixel_size=args.pixel_size, channel=getattr(args, "channel", None),
                     plane=getattr(args, "plane", None), feature_set=args.features,
                     drop_flagged=args.drop_flagged, qc=QCConfig(edge_margin=args.edge_margin, max_box=args.max_box),
                     diameter=None if um else args.diameter, diameter_um=args.diameter if um else None,
                     overlays=not args.no_overlays, rois=args.rois, ome_zarr=args.ome_zarr, scale=args.scale,
                     lazy_megapixels=getattr(args, "lazy_above", LAZY_MEGAPIXELS),
                     crops=args.crops, patches=args.patches, tile_size=args.tile_size or None)


def print_summary(images, out: str, requested: str) -> None:
    """One line of counts and the method, then one line per failed image (stderr)."""
    n_fail = int((images["Status"] != "ok").sum())
    method = str(images["Method"].iloc[0]) if len(images) else requested
    how = f"method {method}" + (" (auto: no NuSeT model installed)" if requested == "auto"
                                and method != "nuset" else "")
    print(f"{len(images) - n_fail} of {len(images)} images ok, {int(images['Count'].sum())} nuclei, "
          f"{how} -> {out}", file=sys.stderr)
    for _, r in images[images["Status"] != "ok"].iterrows():
        print(f"failed: {r['Error']}", file=sys.stderr)


def _run_3d(args: argparse.Namespace) -> int:
    from ..pipeline import VolumeConfig, run_volume_batch

    if args.plane is not None:
        raise InputError("--plane picks one plane of a stack; --3d segments all of them: give one or the other")
    if args.ome_zarr:
        raise InputError("--ome-zarr is not written for --3d stacks yet; their labels are (Z, Y, X) TIFFs")
    config = VolumeConfig(method=args.method, pixel_size=args.pixel_size, spacing_z=args.spacing_z,
                          channel=args.channel, diameter=args.diameter if not args.diameter_um else None)
    if args.diameter_um:
        raise InputError("--diameter-um is not supported with --3d; give --diameter in px")
    images = run_volume_batch(args.inputs, args.out, config, jobs=args.jobs, scheduler=args.scheduler,
                              show_progress=not args.quiet,
                              recursive=args.recursive, command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    print_summary(images, args.out, args.method)
    return 1 if (images["Status"] != "ok").any() else 0


def run(args: argparse.Namespace) -> int:
    from ..pipeline import run_batch

    if args.three_d:
        return _run_3d(args)
    if args.spacing_z is not None:
        raise InputError("--spacing-z needs --3d")

    if args.cells:
        from .cells import run_cells

        return run_cells(args, args.inputs, [args.cells])
    images = run_batch(args.inputs, args.out, config_from_args(args), jobs=args.jobs, scheduler=args.scheduler,
                       show_progress=not args.quiet,
                       recursive=args.recursive, command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    print_summary(images, args.out, args.method)  # -q drops the progress bar only
    return 1 if (images["Status"] != "ok").any() else 0
