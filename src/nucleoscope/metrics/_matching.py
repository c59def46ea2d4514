"""Object scores: one-to-one matching of truth and predicted objects at an IoU threshold.

``ObjectScores`` (TP / FP / FN, precision, recall, F1, AP, mean matched IoU, panoptic quality) and
``Matching`` (the same plus the matched pairs), computed from the sparse :class:`Overlap` table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._conventions import _ratio, threshold_key
from ._overlap import Overlap, overlap


@dataclass(frozen=True)
class ObjectScores:
    """Object-level detection scores at one IoU threshold.

    A truth and a predicted object are a true positive (TP) when they are paired by the one-to-one
    matching and their IoU >= ``thresh``. Unpaired truth objects are false negatives (FN), unpaired
    predictions false positives (FP).

    Attributes
    ----------
    thresh : float
        IoU threshold.
    n_true, n_pred, tp, fp, fn : int
        Object counts (``tp + fn = n_true``, ``tp + fp = n_pred``).
    precision : float
        TP / (TP + FP); 1 when there is no prediction.
    recall : float
        TP / (TP + FN); 1 when there is no truth.
    f1 : float
        2 TP / (2 TP + FP + FN); 1 when both are empty.
    ap : float
        "Average precision" of the DSB 2018 / Caicedo et al. 2019 / StarDist: TP / (TP + FP + FN);
        1 when both are empty.
    mean_matched_iou : float
        Mean IoU of the TP pairs (StarDist's ``mean_matched_score``); NaN without TP.
    panoptic_quality : float
        Kirillov et al. 2019: sum of TP IoUs / (TP + FP/2 + FN/2); 1 when both are empty.
    sum_matched_iou : float
        Sum of TP IoUs (lets scores be pooled over images).
    """

    thresh: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float
    mean_matched_iou: float
    panoptic_quality: float
    sum_matched_iou: float

    @classmethod
    def from_counts(cls, thresh: float, n_true: int, n_pred: int, tp: int, sum_matched_iou: float) -> ObjectScores:
        """Scores from counts (how pooled dataset scores are made)."""
        fp, fn = n_pred - tp, n_true - tp
        return cls(
            thresh=threshold_key(thresh), n_true=int(n_true), n_pred=int(n_pred), tp=int(tp), fp=int(fp), fn=int(fn),
            precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn),
            ap=_ratio(tp, tp + fp + fn), mean_matched_iou=_ratio(sum_matched_iou, tp, math.nan),
            panoptic_quality=_ratio(sum_matched_iou, tp + fp / 2 + fn / 2), sum_matched_iou=float(sum_matched_iou),
        )

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict of the scalar scores (JSON-ready apart from NaN)."""
        return {k: getattr(self, k) for k in ObjectScores.__dataclass_fields__}


@dataclass(frozen=True)
class Matching(ObjectScores):
    """:class:`ObjectScores` plus the matched pairs.

    Attributes
    ----------
    matched_gt, matched_pred : ndarray of int64, (tp,)
        Label values of the TP pairs.
    matched_iou : ndarray of float64, (tp,)
        Their IoU.
    """

    matched_gt: np.ndarray = field(default=None, repr=False, compare=False)
    matched_pred: np.ndarray = field(default=None, repr=False, compare=False)
    matched_iou: np.ndarray = field(default=None, repr=False, compare=False)


def _match_indices(ov: Overlap, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching on the pairs with IoU >= thresh; returns pair indices into ``ov`` arrays.

    Maximises the number of matches, then the sum of their IoU (as StarDist does). For thresh > 0.5 a
    candidate pair is the only candidate of both its objects (IoU > 0.5 is exclusive), so almost all
    pairs are matched directly; the Hungarian algorithm runs only on the rare connected groups of
    candidates (thresh <= 0.5), each on its own small dense matrix.
    """
    thresh = float(thresh)
    cand = np.flatnonzero(ov.iou >= thresh) if thresh > 0 else np.arange(ov.iou.size)
    if cand.size == 0:
        return cand
    pg, pp = ov.pair_gt[cand], ov.pair_pred[cand]
    deg_g = np.bincount(pg, minlength=ov.n_true)
    deg_p = np.bincount(pp, minlength=ov.n_pred)
    simple = (deg_g[pg] == 1) & (deg_p[pp] == 1)
    chosen = [cand[simple]]
    rest = cand[~simple]
    if rest.size:
        rg, rp = ov.pair_gt[rest], ov.pair_pred[rest]
        n_nodes = ov.n_true + ov.n_pred
        graph = coo_matrix((np.ones(rest.size), (rg, rp + ov.n_true)), shape=(n_nodes, n_nodes))
        _, comp = connected_components(graph, directed=False)
        edge_comp = comp[rg]
        order = np.argsort(edge_comp, kind="stable")
        bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
        for group in np.split(rest[order], bounds):
            gs, g_inv = np.unique(ov.pair_gt[group], return_inverse=True)
            ps, p_inv = np.unique(ov.pair_pred[group], return_inverse=True)
            k_min = min(gs.size, ps.size)
            # count first, IoU second: each match is worth 1, all IoU together < 1/2
            cost = np.zeros((gs.size, ps.size))
            cost[g_inv, p_inv] = -(1.0 + ov.iou[group] / (2 * k_min))
            rows, cols = linear_sum_assignment(cost)
            hit = cost[rows, cols] < 0
            pos = np.full((gs.size, ps.size), -1, np.int64)
            pos[g_inv, p_inv] = group
            chosen.append(pos[rows[hit], cols[hit]])
    return np.concatenate(chosen)


def _matching_from(ov: Overlap, thresh: float) -> Matching:
    idx = _match_indices(ov, thresh)
    idx = idx[np.argsort(ov.pair_gt[idx], kind="stable")]
    iou = ov.iou[idx]
    base = ObjectScores.from_counts(thresh, ov.n_true, ov.n_pred, idx.size, float(iou.sum()))
    return Matching(**base.as_dict(), matched_gt=ov.gt_ids[ov.pair_gt[idx]],
                    matched_pred=ov.pred_ids[ov.pair_pred[idx]], matched_iou=iou)


def match(gt: np.ndarray, pred: np.ndarray, *, thresh: float = 0.5, min_size: int = 0) -> Matching:
    """Match predicted to ground-truth objects one-to-one at an IoU threshold.

    Parameters
    ----------
    gt, pred : ndarray of int, same shape
        Label images, 0 = background.
    thresh : float
        A pair can match when IoU >= ``thresh`` (StarDist's convention). Among all one-to-one matchings
        of such pairs the one with most matches, then the largest total IoU, is taken.
    min_size : int
        Objects smaller than this (px), in either image, are ignored (set to background).

    Returns
    -------
    Matching
    """
    return _matching_from(overlap(gt, pred, min_size=min_size), thresh)
