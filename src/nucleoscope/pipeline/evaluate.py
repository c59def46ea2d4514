"""Score predicted label images against ground truth files: pairing by name, reading, per-image rows.

The metrics themselves are pure functions on arrays (:mod:`nucleoscope.metrics`); this is their file
face, used by ``nucleoscope evaluate`` and the benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import InputError
from .. import metrics as M

__all__ = ["image_rows", "pair_files", "score_files"]


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
