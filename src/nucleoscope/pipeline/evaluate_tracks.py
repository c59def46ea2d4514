"""Scoring a tracking result against Cell Tracking Challenge ground truth with ``traccuracy`` (the
community implementation of the CTC measures): TRA, DET (and their AOGM error counts), SEG where the
truth has full masks, and division precision / recall / F1.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
from pathlib import Path

from .. import InputError

__all__ = ["evaluate_tracks"]


def _folder(path: Path, kind: str) -> tuple[Path, Path]:
    """(masks folder, track file) of a CTC result or truth folder (``res_track.txt``/``man_track.txt``,
    directly or in ``TRA``/``tra``)."""
    for d in (path, path / "TRA", path / "tra"):
        for name in ("res_track.txt", "man_track.txt"):
            if (d / name).is_file():
                return d, d / name
    raise InputError(f"no res_track.txt or man_track.txt found in the {kind} folder (or its TRA/ sub-folder)",
                     path=path)


def evaluate_tracks(result: str | os.PathLike, truth: str | os.PathLike, *,
                    division_frame_buffer: int = 1) -> dict:
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

    Returns
    -------
    dict
        ``TRA``, ``DET``, ``LNK`` and the AOGM counts (``fp_nodes``, ``fn_nodes``, ``ns_nodes``,
        ``fp_edges``, ``fn_edges``, ``ws_edges``), ``division_precision``, ``division_recall``,
        ``division_f1`` with their counts, all from ``traccuracy``.
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
    return scores
