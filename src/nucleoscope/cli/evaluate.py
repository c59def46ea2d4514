"""Score predicted label images against ground truth (object, pixel and error metrics).

``nucleoscope evaluate PRED GT``: PRED and GT are two label files, or two folders whose label images are
paired by file name (stem, e.g. ``pred/a.tif`` with ``gt/a.png``). Prints a table of pooled object scores
per IoU threshold, pixel scores and the error analysis; ``--json`` prints one JSON object instead;
``-o`` writes one row per image (``.csv`` or ``.parquet``). Definitions: docs/metrics.md.
"""

from __future__ import annotations

import argparse
import json
import math

from .. import InputError
from .. import metrics as M
from ..io import check_writable
from ..pipeline.evaluate import image_rows, pair_files, score_files

__all__ = ["add_arguments", "format_table", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", metavar="PRED", help="predicted label image, or folder of them")
    parser.add_argument("gt", metavar="GT", help="ground-truth label image, or folder of them (paired by name)")
    parser.add_argument("--iou", nargs="+", type=float, metavar="T", default=list(M.DEFAULT_THRESHOLDS),
                        help="IoU thresholds for the object scores (default 0.5 0.55 ... 0.95)")
    parser.add_argument("--error-iou", type=float, default=0.5, metavar="T",
                        help="IoU threshold of the matching behind split/merge/catastrophe, touching nuclei "
                             "and Hausdorff (default 0.5)")
    parser.add_argument("--min-size", type=int, default=0, metavar="PX",
                        help="ignore truth and predicted objects smaller than PX pixels (default 0: keep all)")
    parser.add_argument("--no-hausdorff", action="store_true", help="skip the Hausdorff distance (faster)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("-o", "--output", metavar="TABLE", help="write one row per image to TABLE (.csv/.parquet)")


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(scores: M.DatasetScores, min_size: int = 0) -> str:
    """The human-readable report."""
    n_true = sum(s.n_true for s in scores.images)
    n_pred = sum(s.n_pred for s in scores.images)
    lines = [f"{scores.n_images} image(s): {n_true} true, {n_pred} predicted objects"
             + (f" (objects < {min_size} px ignored)" if min_size else ""), ""]
    head = f"{'IoU':>5} {'TP':>7} {'FP':>7} {'FN':>7} {'prec':>6} {'recall':>6} {'F1':>6} {'AP':>6} " \
           f"{'mIoU':>6} {'PQ':>6}  {'F1/img':>6}"
    lines += ["object scores, pooled over images (F1/img: mean of per-image F1)", head]
    for t, p in scores.pooled.items():
        lines.append(f"{t:>5.2f} {p.tp:>7d} {p.fp:>7d} {p.fn:>7d} {_fmt(p.precision):>6} {_fmt(p.recall):>6} "
                     f"{_fmt(p.f1):>6} {_fmt(p.ap):>6} {_fmt(p.mean_matched_iou):>6} {_fmt(p.panoptic_quality):>6}  "
                     f"{_fmt(scores.per_image_mean[t]['f1']):>6}")
    px = scores.pixel
    lines += ["", f"pixel scores, mean over images: mean IoU {_fmt(px['mean_iou'])}  F1 {_fmt(px['f1'])}  "
                  f"RMSE {_fmt(px['rmse'])}  accuracy {_fmt(px['accuracy'])}"]
    e = scores.errors
    lines += [
        "",
        f"errors (matching at IoU {e.thresh:g}): correct {e.correct}, missed {e.missed}, gained {e.gained}; "
        f"splits {e.split}, merges {e.merge}, catastrophes {e.catastrophe}",
        f"touching nuclei separated: {e.touching_separated_pairs}/{e.touching_pairs} pairs "
        f"({_fmt(100 * e.touching_separated, 1)}%)",
        f"NuSeT rates (overlap {M.NUSET_OVERLAP}): FN {_fmt(100 * e.fn_rate, 1)}%, FP {_fmt(100 * e.fp_rate, 1)}%",
        f"cell-averaged best IoU per truth object: {_fmt(e.mean_best_iou)}",
        f"Hausdorff distance of matched pairs: mean {_fmt(e.hausdorff_mean, 2)} px over {e.hausdorff_n} pairs",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    for opt, t in [("--iou", t) for t in args.iou] + [("--error-iou", args.error_iou)]:
        if not 0 < t <= 1:
            raise InputError(f"{opt} thresholds must lie in (0, 1], got {t}")
    if args.min_size < 0:
        raise InputError(f"--min-size must be >= 0, got {args.min_size}")
    thresholds = tuple(dict.fromkeys(M.threshold_key(t) for t in args.iou))
    if args.output:
        check_writable(args.output)  # before the work, not after it
    pairs = pair_files(args.pred, args.gt)
    scores = score_files(pairs, thresholds=thresholds, error_thresh=args.error_iou, min_size=args.min_size,
                         hausdorff=not args.no_hausdorff)
    if args.output:
        import pandas as pd

        from ..io import write_table

        write_table(pd.DataFrame(image_rows(scores)), args.output)
    if args.json:
        print(json.dumps(scores.to_json_dict(), allow_nan=False))
    else:
        print(format_table(scores, args.min_size))
    return 0
