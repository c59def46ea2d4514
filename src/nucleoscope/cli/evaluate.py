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
import os
from pathlib import Path

from .. import InputError
from .. import metrics as M

__all__ = ["add_arguments", "run", "pair_files", "score_files"]


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


def pair_files(pred: str | os.PathLike, gt: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Pair prediction and truth files: ``[(name, pred_path, gt_path), ...]`` sorted by name.

    Raises
    ------
    InputError
        A path that does not exist, a file paired with a folder, a name found on one side only, or two
        files of one folder with the same name.
    """
    from ..io import find_images, image_name

    p, g = Path(pred), Path(gt)
    for path in (p, g):
        if not path.exists():
            raise InputError("no such file or folder", path=path)
    if p.is_dir() != g.is_dir():
        raise InputError(f"PRED and GT must both be files or both be folders; {g} is "
                         f"{'a folder' if g.is_dir() else 'a file'}", path=p)
    if not p.is_dir():
        return [(image_name(g), p, g)]

    def by_name(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        if (folder / "labels").is_dir() and (folder / "run.json").is_file():
            raise InputError(f"is the output folder of `nucleoscope run`; its label images are in "
                             f"{folder / 'labels'}", path=folder)
        for f in find_images([folder]):
            name = image_name(f)
            if name in out:
                raise InputError(f"two label images named {name!r}: {out[name].name} and {f.name}", path=folder)
            out[name] = f
        return out

    preds, gts = by_name(p), by_name(g)
    only_pred, only_gt = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(f"no prediction for {_few([gts[n].name for n in only_gt])} (in {g})")
        if only_pred:
            parts.append(f"no ground truth for {_few([preds[n].name for n in only_pred])} (in {p})")
        raise InputError("missing partners: " + "; ".join(parts), path=p)
    return [(n, preds[n], gts[n]) for n in sorted(gts)]


def _few(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def score_files(pairs: list[tuple[str, Path, Path]], *, thresholds=M.DEFAULT_THRESHOLDS, error_thresh=0.5,
                min_size=0, hausdorff=True) -> M.DatasetScores:
    """Read and score each ``(name, pred_path, gt_path)``; errors name both files."""
    from ..io import read_labels

    scores = []
    for name, pp, gp in pairs:
        pred, gt = read_labels(pp), read_labels(gp)
        if pred.shape != gt.shape:
            raise InputError(f"shape {pred.shape} differs from the ground truth's {gt.shape} ({gp})", path=pp)
        scores.append(M.evaluate_image(gt, pred, thresholds=thresholds, error_thresh=error_thresh,
                                       min_size=min_size, hausdorff=hausdorff, name=name))
    return M.summarize(scores)


def image_rows(scores: M.DatasetScores) -> list[dict]:
    """One flat dict per image: counts and scores per threshold (``f1@0.5``), pixel and error columns."""
    rows = []
    for s in scores.images:
        row: dict = {"name": s.name, "n_true": s.n_true, "n_pred": s.n_pred}
        for t, m in s.objects.items():
            for k in ("tp", "fp", "fn", "precision", "recall", "f1", "ap", "mean_matched_iou", "panoptic_quality"):
                row[f"{k}@{t}"] = getattr(m, k)
        row.update({f"pixel_{k}": v for k, v in s.pixel.as_dict().items() if k not in ("tp", "fp", "fn", "tn")})
        e = s.errors
        for k in ("correct", "missed", "gained", "split", "merge", "catastrophe", "touching_pairs",
                  "touching_separated_pairs", "touching_separated", "fn_rate", "fp_rate", "mean_best_iou",
                  "hausdorff_mean"):
            row[k] = getattr(e, k)
        rows.append(row)
    return rows


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
