"""Segment every frame of a movie and track the nuclei through time (CTC result format).

FRAMES is a folder of frames (taken in name order) or one (T, Y, X) file. Writes maskNNN.tif +
res_track.txt (Cell Tracking Challenge format), tracks.csv/.parquet (napari Tracks: track_id, t, y, x,
parent), labels/, images.csv, tracking.json and run.json. Running it again resumes frame by frame.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..segment import METHODS
from .run import _int_at_least, _positive_float

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("frames", nargs="+", metavar="FRAMES", help="folder of frames, frame files, or a (T, Y, X) file")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--method", default="auto", choices=["auto", *METHODS], help="segmenter of every frame (default: auto)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", help="pixel size in µm (overrides metadata)")
    p.add_argument("--diameter", type=_positive_float, metavar="PX", help="typical nucleus diameter in px")
    p.add_argument("--max-distance", type=_positive_float, default=30.0, metavar="PX",
                   help="largest frame-to-frame move of a nucleus (default: %(default)s px)")
    p.add_argument("--max-gap", type=_int_at_least(0), default=1, metavar="N",
                   help="frames a nucleus may be missed and still be linked (default: %(default)s)")
    p.add_argument("--division-distance", type=_positive_float, default=40.0, metavar="PX",
                   help="largest mother-to-daughter distance of a division (default: %(default)s px)")
    p.add_argument("--division-min-frames", type=_int_at_least(1), default=3, metavar="N",
                   help="both daughters of a division live N frames or reach the last frame; a shorter-lived "
                        "piece split off a nucleus is a segmentation fragment (default: %(default)s)")
    p.add_argument("--no-divisions", action="store_true", help="do not detect divisions")
    p.add_argument("--min-area", type=_int_at_least(0), default=0, metavar="PX",
                   help="ignore segmented objects smaller than PX before linking (default: 0)")
    p.add_argument("-j", "--jobs", type=_int_at_least(1), default=1, help="worker processes (default: 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import TrackConfig, track_movie

    config = TrackConfig(method=args.method, pixel_size=args.pixel_size, diameter=args.diameter,
                         max_distance=args.max_distance, max_gap=args.max_gap, min_area=args.min_area,
                         division_min_frames=args.division_min_frames,
                         division_distance=None if args.no_divisions else args.division_distance)
    images = track_movie(args.frames, args.out, config, jobs=args.jobs, show_progress=not args.quiet,
                         command=shlex.join(["nucleoscope", *sys.argv[1:]]))
    n_fail = int((images["Status"] != "ok").sum())
    print(f"{len(images) - n_fail} of {len(images)} frames ok -> {args.out}", file=sys.stderr)
    for _, r in images[images["Status"] != "ok"].iterrows():
        print(f"failed: {r['Error']}", file=sys.stderr)
    return 1 if n_fail else 0
