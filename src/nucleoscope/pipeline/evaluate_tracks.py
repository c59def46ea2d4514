"""Scoring a tracking result against Cell Tracking Challenge ground truth with ``traccuracy`` (the
community implementation of the CTC measures): TRA, DET, LNK (and their AOGM error counts), and
division precision / recall / F1; SEG (which traccuracy does not compute) on the truth's ``SEG`` frames by
:func:`nucleoscope.metrics.ctc_seg_jaccard`.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
from pathlib import Path

import numpy as np

from .. import InputError

__all__ = ["evaluate_tracks", "seg_score"]


def _folder(path: Path, kind: str) -> tuple[Path, Path]:
    """(masks folder, track file) of a CTC result or truth folder (``res_track.txt``/``man_track.txt``,
    directly or in ``TRA``/``tra``)."""
    for d in (path, path / "TRA", path / "tra"):
        for name in ("res_track.txt", "man_track.txt"):
            if (d / name).is_file():
                return d, d / name
    raise InputError(f"no res_track.txt or man_track.txt found in the {kind} folder (or its TRA/ sub-folder)",
                     path=path)


def _seg_folder(truth: Path, gt_dir: Path) -> Path | None:
    """The CTC SEG folder beside the truth's TRA folder (``SEG``/``seg``), if there is one."""
    for base in (truth, gt_dir.parent):
        for name in ("SEG", "seg"):
            if (base / name).is_dir() and any((base / name).glob("man_seg*.tif")):
                return base / name
    return None


def seg_score(result: str | os.PathLike, seg: str | os.PathLike) -> tuple[float, int, int]:
    """CTC SEG of a result's ``maskNNN.tif`` against the truth's ``man_segNNN.tif`` frames.

    Every annotated object of every SEG frame scores its Jaccard index with the predicted nucleus that
    covers more than half of it, or 0 (:func:`nucleoscope.metrics.ctc_seg_jaccard`); SEG is the mean.

    Returns
    -------
    (SEG, objects scored, frames scored)
    """
    import re

    import tifffile

    from ..metrics import ctc_seg_jaccard

    result, seg = Path(result), Path(seg)
    masks = {int(m.group(1)): p for p in result.glob("mask*.tif") if (m := re.fullmatch(r"mask(\d+)\.tif", p.name))}
    scores, frames = [], 0
    for p in sorted(seg.glob("man_seg*.tif")):
        m = re.fullmatch(r"man_seg(?:_\d+_)?(\d+)\.tif", p.name)
        if not m:
            continue
        t = int(m.group(1))
        if t not in masks:
            raise InputError(f"the result has no mask for SEG frame {t}", path=result)
        gt = tifffile.imread(p).astype(np.int64)
        scores.append(ctc_seg_jaccard(gt, tifffile.imread(masks[t]).astype(np.int64)))
        frames += 1
    allj = np.concatenate(scores) if scores else np.zeros(0)
    return (float(allj.mean()) if allj.size else float("nan")), int(allj.size), frames


def evaluate_tracks(result: str | os.PathLike, truth: str | os.PathLike, *,
                    division_frame_buffer: int = 1, seg: str | os.PathLike | None = None) -> dict:
    """CTC scores of a tracking result.

    Parameters
    ----------
    result : path
        A folder in the CTC result format (``maskNNN.tif`` + ``res_track.txt``), as ``nucleoscope
        track`` writes it.
    truth : path
        A CTC ground-truth folder: ``man_trackNNN.tif`` + ``man_track.txt`` (the folder or its ``TRA``/``tra``).
    division_frame_buffer : int
        Frames a predicted division may lie off the true one and still count.
    seg : path, optional
        CTC SEG truth (``man_segNNN.tif``); default: a ``SEG``/``seg`` folder in ``truth`` or beside its
        ``TRA`` folder. Without one, ``SEG`` is NaN.

    Returns
    -------
    dict
        ``TRA``, ``DET``, ``LNK`` and the AOGM counts (``fp_nodes``, ``fn_nodes``, ``ns_nodes``,
        ``fp_edges``, ``fn_edges``, ``ws_edges``), ``division_precision``, ``division_recall``,
        ``division_f1`` with their counts, all from ``traccuracy``; ``SEG`` (with ``seg_objects``,
        ``seg_frames``) by :func:`seg_score`.
    """
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher, IOUMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    res_dir, res_file = _folder(Path(result), "result")
    gt_dir, gt_file = _folder(Path(truth), "ground-truth")
    # traccuracy prints progress bars and per-frame notes: keep them off the user's terminal
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        logging.getLogger("traccuracy").setLevel(logging.ERROR)
        gt = load_ctc_data(os.fspath(gt_dir), os.fspath(gt_file), name="truth")
        pred = load_ctc_data(os.fspath(res_dir), os.fspath(res_file), name="result")
        results, _ = run_metrics(gt, pred, CTCMatcher(), [CTCMetrics()])
        # division metrics need a one-to-one matching; the CTC matcher is many-to-one wherever one
        # predicted nucleus covers two true ones (a merge), so divisions are matched by IoU >= 0.5, 1:1
        div, _ = run_metrics(gt, pred, IOUMatcher(iou_threshold=0.5, one_to_one=True),
                             [DivisionMetrics(max_frame_buffer=division_frame_buffer)])
        results = [*results, *div]
    scores: dict = {}
    for r in results:
        vals = r["results"]
        if "TRA" in vals:
            scores.update({k: float(v) for k, v in vals.items()})
        else:
            d = vals[f"Frame Buffer {division_frame_buffer}"]
            scores.update(division_precision=float(d["Division Precision"]), division_recall=float(d["Division Recall"]),
                          division_f1=float(d["Division F1"]), divisions_true=int(d["Total GT Divisions"]),
                          divisions_predicted=int(d["Total Predicted Divisions"]),
                          divisions_matched=int(d["True Positive Divisions"]))
    seg_dir = Path(seg) if seg is not None else _seg_folder(Path(truth), gt_dir)
    if seg_dir is not None:
        scores["SEG"], scores["seg_objects"], scores["seg_frames"] = seg_score(result, seg_dir)
    else:
        scores.update(SEG=float("nan"), seg_objects=0, seg_frames=0)
    return scores
