"""Segmentation metrics: every score the source papers use, defined once, on label images.

Layers, as in StarDist's ``matching``: label images -> sparse overlap table (intersection, IoU,
intersection over truth / over prediction) -> one-to-one matching at an IoU threshold -> frozen
dataclass results. Everything is computed from the sparse table of overlapping pairs, so a
2048 x 2048 image with ~2,000 nuclei is scored in well under a second.

Inputs are ground truth ``gt`` and prediction ``pred``: integer label images of the same shape, 0 =
background, any positive value an object (values need not be consecutive). Argument order is always
``(gt, pred)``. ``docs/metrics.md`` gives every definition with its formula and source paper.

Conventions for empty cases ("vacuous truth"): a ratio whose denominator counts nothing is 1 when its
numerator's failures are impossible too — precision with no predictions is 1, recall with no truth is
1, F1 / AP / PQ with neither truth nor prediction are 1 — so an image with no nuclei segmented as
empty scores perfectly. Quantities that need a matched pair (mean matched IoU, Hausdorff distance) are
NaN when there is none; per-image means skip NaN.

Examples
--------
>>> import numpy as np
>>> gt = np.zeros((8, 8), np.int32); gt[1:5, 1:5] = 1
>>> pred = np.zeros_like(gt); pred[1:5, 2:6] = 7
>>> m = match(gt, pred, thresh=0.5)
>>> m.tp, m.fp, m.fn, round(m.mean_matched_iou, 3)
(1, 0, 0, 0.6)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._errors import InputError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LINK_IOU",
    "NUSET_OVERLAP",
    "Overlap",
    "ObjectScores",
    "Matching",
    "PixelScores",
    "ErrorScores",
    "ImageScores",
    "DatasetScores",
    "overlap",
    "match",
    "pixel_scores",
    "error_scores",
    "evaluate_image",
    "evaluate_dataset",
    "summarize",
    "threshold_key",
]

logger = logging.getLogger(__name__)

#: IoU thresholds scored by default: 0.5, 0.55, ..., 0.95 (0.7, the NuSeT / STORM-paper threshold, is one).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Caicedo et al. 2019 / DeepCell: unmatched objects overlapping at least this IoU are linked.
LINK_IOU = 0.1
#: NuSeT's overlap rule for its FN / FP rates.
NUSET_OVERLAP = 0.7


def threshold_key(thresh: float) -> float:
    """Normalise a threshold so it can key a dict exactly (``0.5 + 0.05 * 4`` -> ``0.7``)."""
    return round(float(thresh), 4)


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / float(den) if den else empty


# --------------------------------------------------------------------------------------------------
# Overlap table
# --------------------------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.int32)
    if labels.dtype.kind not in "iu":
        raise InputError(f"{what} must be an integer label image, got dtype {labels.dtype}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError(f"{what} has negative labels (min {labels.min()}); 0 is background, objects > 0")
    return labels


def _compact(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel to 1..n (0 = background), dropping objects smaller than ``min_size`` px.

    Returns ``(index_image int32, ids (n,) original label values, areas (n,) px)``.
    """
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 16):
        # Dense lookup table: one bincount and one gather, no sort.
        counts = np.bincount(flat, minlength=top + 1)
        counts[0] = 0
        keep = counts >= max(int(min_size), 1)
        ids = np.flatnonzero(keep)
        lut = np.zeros(top + 1, np.int32)
        lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
        index = lut[flat]
        areas = counts[ids]
    else:  # huge, sparse label values: sort instead of a giant table
        values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        keep = (values > 0) & (counts >= max(int(min_size), 1))
        lut = np.zeros(values.size, np.int32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        index = lut[inverse.ravel()]
        ids, areas = values[keep], counts[keep]
    return index.reshape(labels.shape), ids.astype(np.int64), areas.astype(np.int64)


@dataclass(frozen=True)
class Overlap:
    """Sparse overlap table between ground-truth and predicted objects.

    Objects are indexed ``0..n_true-1`` / ``0..n_pred-1``; ``gt_ids`` / ``pred_ids`` map an index back to
    the label value. Only pairs that share at least one pixel are listed (``k`` pairs).

    Attributes
    ----------
    gt_ids, pred_ids : ndarray of int64, (n_true,), (n_pred,)
        Label values of the objects (after ``min_size`` filtering).
    gt_areas, pred_areas : ndarray of int64
        Object areas in pixels.
    pair_gt, pair_pred : ndarray of int64, (k,)
        Object indices of each overlapping pair.
    intersection : ndarray of int64, (k,)
        Shared pixels.
    iou : ndarray of float64, (k,)
        Intersection over union ``|G ∩ P| / |G ∪ P|``.
    """

    gt_ids: np.ndarray = field(repr=False, compare=False)
    pred_ids: np.ndarray = field(repr=False, compare=False)
    gt_areas: np.ndarray = field(repr=False, compare=False)
    pred_areas: np.ndarray = field(repr=False, compare=False)
    pair_gt: np.ndarray = field(repr=False, compare=False)
    pair_pred: np.ndarray = field(repr=False, compare=False)
    intersection: np.ndarray = field(repr=False, compare=False)
    iou: np.ndarray = field(repr=False, compare=False)

    @property
    def n_true(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def iot(self) -> np.ndarray:
        """Intersection over the truth object's area, (k,)."""
        return self.intersection / self.gt_areas[self.pair_gt]

    @property
    def iop(self) -> np.ndarray:
        """Intersection over the predicted object's area, (k,)."""
        return self.intersection / self.pred_areas[self.pair_pred]

    def dense_iou(self) -> np.ndarray:
        """The full IoU matrix, (n_true, n_pred) (for small images and tests)."""
        out = np.zeros((self.n_true, self.n_pred))
        out[self.pair_gt, self.pair_pred] = self.iou
        return out


def _overlap_indexed(gi: np.ndarray, gt_ids, gt_areas, pi: np.ndarray, pred_ids, pred_areas) -> Overlap:
    n_g, n_p = gt_ids.size, pred_ids.size
    both = (gi > 0) & (pi > 0)
    code = gi[both].astype(np.int64) * (n_p + 1) + pi[both]
    if (n_g + 1) * (n_p + 1) <= max(4 * code.size, 1 << 22):
        counts = np.bincount(code, minlength=(n_g + 1) * (n_p + 1))
        codes = np.flatnonzero(counts)
        inter = counts[codes]
    else:
        codes, inter = np.unique(code, return_counts=True)
    pg, pp = np.divmod(codes, n_p + 1)
    pg, pp = pg - 1, pp - 1
    inter = inter.astype(np.int64)
    union = gt_areas[pg] + pred_areas[pp] - inter
    return Overlap(gt_ids, pred_ids, gt_areas, pred_areas, pg, pp, inter, inter / union)


def overlap(gt: np.ndarray, pred: np.ndarray, *, min_size: int = 0) -> Overlap:
    """Sparse overlap table of two label images.

    Parameters
    ----------
    gt, pred : ndarray of int, (Y, X) or any shape, equal shapes
        Label images, 0 = background.
    min_size : int
        Objects smaller than this many pixels, in either image, are set to background first.

    Returns
    -------
    Overlap
    """
    return _indexed(gt, pred, min_size)[2]


def _indexed(gt: np.ndarray, pred: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray, Overlap]:
    """Validated, compactly re-indexed label images and their overlap table (shared by every scorer)."""
    gt, pred = _prepare(gt, pred)
    gi, gids, gareas = _compact(gt, min_size)
    pi, pids, pareas = _compact(pred, min_size)
    return gi, pi, _overlap_indexed(gi, gids, gareas, pi, pids, pareas)


def _prepare(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = _check_labels(gt, "ground truth"), _check_labels(pred, "prediction")
    if gt.shape != pred.shape:
        raise InputError(f"shape mismatch: ground truth {gt.shape} vs prediction {pred.shape}")
    return gt, pred


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Pixel level (NuSeT)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelScores:
    """Foreground-vs-background pixel scores of one image (NuSeT's pixel-level metrics).

    Foreground is ``labels > 0``. With pixel counts TP, FP, FN, TN of the foreground class and N pixels:

    Attributes
    ----------
    tp, fp, fn, tn : int
        Pixel counts.
    mean_iou : float
        Mean over the two classes of TP_c / (TP_c + FP_c + FN_c): (IoU_fg + IoU_bg) / 2 (NuSeT's "mean
        IU"). A class absent from both images has IoU 1.
    f1 : float
        2 TP / (2 TP + FP + FN) (the Dice coefficient); 1 when both have no foreground.
    rmse : float
        sqrt(mean((pred_i - gt_i)^2)) over binary pixels = sqrt((FP + FN) / N).
    accuracy : float
        (TP + TN) / N.
    fg_iou : float
        IoU of the foreground class alone (Jaccard index).
    """

    tp: int
    fp: int
    fn: int
    tn: int
    mean_iou: float
    f1: float
    rmse: float
    accuracy: float
    fg_iou: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, tn: int) -> PixelScores:
        n = tp + fp + fn + tn
        fg = _ratio(tp, tp + fp + fn)
        bg = _ratio(tn, tn + fn + fp)
        return cls(tp=int(tp), fp=int(fp), fn=int(fn), tn=int(tn), mean_iou=(fg + bg) / 2,
                   f1=_ratio(2 * tp, 2 * tp + fp + fn), rmse=math.sqrt(_ratio(fp + fn, n, 0.0)),
                   accuracy=_ratio(tp + tn, n), fg_iou=fg)

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def pixel_scores(gt: np.ndarray, pred: np.ndarray) -> PixelScores:
    """Pixel-level scores of the foreground masks ``gt > 0`` and ``pred > 0`` (see :class:`PixelScores`)."""
    g, p = np.asarray(gt) > 0, np.asarray(pred) > 0
    if g.shape != p.shape:
        raise InputError(f"shape mismatch: ground truth {g.shape} vs prediction {p.shape}")
    tp = int(np.count_nonzero(g & p))
    ng, npred = int(np.count_nonzero(g)), int(np.count_nonzero(p))
    fp, fn = npred - tp, ng - tp
    return PixelScores.from_counts(tp, fp, fn, g.size - tp - fp - fn)


# --------------------------------------------------------------------------------------------------
# Error analysis: split / merge / catastrophe, touching nuclei, NuSeT rates, Hausdorff
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorScores:
    """Error analysis of one image (or, pooled, of a dataset).

    Attributes
    ----------
    thresh : float
        IoU threshold of the one-to-one matching the analysis starts from (default 0.5).
    correct : int
        Correct detections: matched pairs (= TP at ``thresh``).
    missed, gained : int
        Unmatched truth objects (FN) and unmatched predictions (FP, NuSeT's "incorrect detections").
    split, merge, catastrophe : int
        Error events, following Caicedo et al. 2019 and DeepCell (Van Valen et al. 2016;
        ``deepcell_toolbox.metrics.ObjectAccuracy``), whose definitions NuSeT uses. A truth and a
        predicted object are *linked* when their IoU >= 0.1 or when the smaller of the two lies more than
        half inside the other (|G ∩ P| > min(|G|, |P|) / 2). A connected group of linked objects that
        holds at least one object left unmatched by the one-to-one matching at ``thresh`` is an error
        group; with G truth and P predicted objects in it: G = 1, P >= 2 is one **split**; G >= 2, P = 1
        is one **merge**; G >= 2, P >= 2 is one **catastrophe** (G, P <= 1 is a plain miss / gain).
        Each event counts once however many objects it involves. Unlike DeepCell, whose graph holds
        unmatched objects only, a merged prediction that still matches one of its nuclei is a merge
        here, not a miss.
    split_objects, merge_objects, catastrophe_objects : int
        Truth objects involved in those events (for splits, 1 per event).
    touching_pairs : int
        Pairs of truth objects that touch (a pixel of one is among the 8 neighbours of a pixel of the
        other).
    touching_separated_pairs : int
        Of those pairs, how many have both objects matched (each to its own prediction, at ``thresh``).
    touching_separated : float
        touching_separated_pairs / touching_pairs, a fraction in [0, 1] (x 100: NuSeT's "percentage of
        touching nuclei separated", counted over pairs); NaN without touching pairs.
    nuset_fn, nuset_fp : int
        NuSeT's detection failures: truth objects whose best-overlapping prediction has IoU < 0.7, and
        predictions whose best-overlapping truth has IoU < 0.7.
    fn_rate, fp_rate : float
        nuset_fn / n_true and nuset_fp / n_pred (0 when the denominator is 0).
    mean_best_iou : float
        Cell-averaged IoU: the mean over truth objects of the largest IoU with any prediction (0 when
        none overlaps), with no threshold and no one-to-one constraint — the per-cell "mIoU" of the
        whole-cell paper (Sci Rep 2021); NaN without truth objects.
    hausdorff_mean : float
        Mean over matched pairs of the symmetric Hausdorff distance (px) between the two objects'
        boundaries (pixels of the object with a 4-neighbour outside it); NaN when not computed or
        there is no pair.
    hausdorff_n : int
        Number of pairs averaged.
    """

    thresh: float
    n_true: int
    n_pred: int
    correct: int
    missed: int
    gained: int
    split: int
    merge: int
    catastrophe: int
    split_objects: int
    merge_objects: int
    catastrophe_objects: int
    touching_pairs: int
    touching_separated_pairs: int
    touching_separated: float
    nuset_fn: int
    nuset_fp: int
    fn_rate: float
    fp_rate: float
    mean_best_iou: float
    hausdorff_mean: float
    hausdorff_n: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def pooled(cls, items: Sequence[ErrorScores]) -> ErrorScores:
        """Sum counts over images; rates and means are recomputed from the sums."""
        if not items:
            raise ValueError("no images to pool")
        s = {k: sum(getattr(e, k) for e in items) for k in (
            "n_true", "n_pred", "correct", "missed", "gained", "split", "merge", "catastrophe", "split_objects",
            "merge_objects", "catastrophe_objects", "touching_pairs", "touching_separated_pairs", "nuset_fn",
            "nuset_fp",
            "hausdorff_n")}
        h_sum = sum(e.hausdorff_mean * e.hausdorff_n for e in items if e.hausdorff_n)
        b_sum = sum(e.mean_best_iou * e.n_true for e in items if e.n_true)
        return cls(thresh=items[0].thresh, **s,
                   touching_separated=_ratio(s["touching_separated_pairs"], s["touching_pairs"], math.nan),
                   fn_rate=_ratio(s["nuset_fn"], s["n_true"], 0.0), fp_rate=_ratio(s["nuset_fp"], s["n_pred"], 0.0),
                   mean_best_iou=_ratio(b_sum, s["n_true"], math.nan),
                   hausdorff_mean=_ratio(h_sum, s["hausdorff_n"], math.nan))


def _touching_pairs(gi: np.ndarray) -> np.ndarray:
    """Unique pairs (a, b), a < b, of 8-adjacent distinct objects in an index image; (k, 2)."""
    if gi.ndim != 2:
        raise ValueError("touching pairs need a 2D label image")
    codes = []
    n = int(gi.max()) + 1
    for a, b in ((gi[:, :-1], gi[:, 1:]), (gi[:-1, :], gi[1:, :]), (gi[:-1, :-1], gi[1:, 1:]),
                 (gi[:-1, 1:], gi[1:, :-1])):
        sel = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[sel], b[sel]).astype(np.int64), np.maximum(a[sel], b[sel]).astype(np.int64)
        codes.append(lo * n + hi)
    code = np.unique(np.concatenate(codes))
    return np.stack(np.divmod(code, n), axis=1)


def _boundary_image(index: np.ndarray) -> np.ndarray:
    """Object pixels with a 4-neighbour of another value (or beyond the image edge), (Y, X) bool."""
    edge = np.ones(index.shape, bool)
    inner = (slice(1, -1), slice(1, -1))
    c = index[inner]
    edge[inner] = ((c != index[:-2, 1:-1]) | (c != index[2:, 1:-1]) | (c != index[1:-1, :-2])
                   | (c != index[1:-1, 2:]))
    return edge & (index > 0)


def _boundary_points(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boundary pixel coordinates of every object, grouped by object.

    Returns ``(ys, xs, offsets)``: object ``i`` (index image value ``i + 1``) owns
    ``ys[offsets[i]:offsets[i + 1]]`` and the same slice of ``xs``.
    """
    ys, xs = np.nonzero(_boundary_image(index))
    lab = index[ys, xs]
    order = np.argsort(lab, kind="stable")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(lab, minlength=n + 1)[1:], out=offsets[1:])
    return ys[order].astype(np.int64), xs[order].astype(np.int64), offsets


def _hausdorff_pairs(gi: np.ndarray, pi: np.ndarray, g_idx: np.ndarray, p_idx: np.ndarray) -> np.ndarray:
    """Symmetric Hausdorff distance (px) between boundaries of each (truth, pred) index pair.

    Boundary pixels of all objects are found and grouped by object once; each pair then costs one
    small all-pairs squared-distance array (fast for the ~100-point boundaries of nuclei; separate y
    and x vectors are several times faster than an (k, 2) coordinate array), or k-d tree queries for
    large boundaries.
    """
    if g_idx.size == 0:
        return np.zeros(0)
    from scipy.spatial import cKDTree

    gy, gx, goff = _boundary_points(gi, int(gi.max()))
    py, px, poff = _boundary_points(pi, int(pi.max()))
    out = np.empty(g_idx.size)
    for k, (g, p) in enumerate(zip(g_idx.tolist(), p_idx.tolist())):
        ga, gb = goff[g], goff[g + 1]
        pa, pb = poff[p], poff[p + 1]
        if (gb - ga) * (pb - pa) <= 250_000:
            ay, ax, by, bx = gy[ga:gb], gx[ga:gb], py[pa:pb], px[pa:pb]
            d2 = (ay[:, None] - by[None, :]) ** 2 + (ax[:, None] - bx[None, :]) ** 2
            out[k] = math.sqrt(max(d2.min(1).max(), d2.min(0).max()))
        else:
            a = np.stack([gy[ga:gb], gx[ga:gb]], axis=1)
            b = np.stack([py[pa:pb], px[pa:pb]], axis=1)
            out[k] = max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max())
    return out


def _best_iou(pairs_idx: np.ndarray, iou: np.ndarray, n: int) -> np.ndarray:
    best = np.zeros(n)
    np.maximum.at(best, pairs_idx, iou)
    return best


def _error_scores(gi: np.ndarray, pi: np.ndarray, ov: Overlap, m_idx: np.ndarray, thresh: float,
                  hausdorff: bool) -> ErrorScores:
    n_g, n_p = ov.n_true, ov.n_pred
    mg, mp = ov.pair_gt[m_idx], ov.pair_pred[m_idx]
    g_matched = np.zeros(n_g, bool)
    g_matched[mg] = True
    p_matched = np.zeros(n_p, bool)
    p_matched[mp] = True

    # Link objects that overlap substantially (DeepCell's rule); groups holding an unmatched object are errors.
    inter = ov.intersection
    small = np.minimum(ov.gt_areas[ov.pair_gt], ov.pred_areas[ov.pair_pred])
    link = (ov.iou >= LINK_IOU) | (2 * inter > small)
    split = merge = cat = split_obj = merge_obj = cat_obj = 0
    if link.any() and (m_idx.size < n_g or m_idx.size < n_p):
        lg, lp = ov.pair_gt[link], ov.pair_pred[link]
        graph = coo_matrix((np.ones(lg.size), (lg, lp + n_g)), shape=(n_g + n_p, n_g + n_p))
        n_comp, comp = connected_components(graph, directed=False)
        is_g = np.arange(n_g + n_p) < n_g
        G = np.bincount(comp[is_g], minlength=n_comp)
        P = np.bincount(comp[~is_g], minlength=n_comp)
        unmatched = np.bincount(comp, weights=~np.concatenate([g_matched, p_matched]), minlength=n_comp) > 0
        is_split = unmatched & (G == 1) & (P >= 2)
        is_merge = unmatched & (G >= 2) & (P == 1)
        is_cat = unmatched & (G >= 2) & (P >= 2)
        split, merge, cat = int(is_split.sum()), int(is_merge.sum()), int(is_cat.sum())
        split_obj, merge_obj, cat_obj = split, int(G[is_merge].sum()), int(G[is_cat].sum())

    # Touching truth nuclei, separated when both are matched.
    if gi.ndim == 2 and n_g > 1:
        tp_pairs = _touching_pairs(gi) - 1
        n_touch = int(tp_pairs.shape[0])
        n_sep = int(np.count_nonzero(g_matched[tp_pairs[:, 0]] & g_matched[tp_pairs[:, 1]])) if n_touch else 0
    else:
        n_touch = n_sep = 0

    # NuSeT's rates: best IoU per object against any object of the other image.
    best_g = _best_iou(ov.pair_gt, ov.iou, n_g)
    nuset_fn = int(np.count_nonzero(best_g < NUSET_OVERLAP))
    nuset_fp = int(np.count_nonzero(_best_iou(ov.pair_pred, ov.iou, n_p) < NUSET_OVERLAP))

    if hausdorff and gi.ndim == 2:
        h = _hausdorff_pairs(gi, pi, mg, mp)
        h_mean, h_n = (float(h.mean()), int(h.size)) if h.size else (math.nan, 0)
    else:
        h_mean, h_n = math.nan, 0

    return ErrorScores(
        thresh=threshold_key(thresh), n_true=n_g, n_pred=n_p, correct=int(m_idx.size), missed=n_g - int(m_idx.size),
        gained=n_p - int(m_idx.size), split=split, merge=merge, catastrophe=cat, split_objects=split_obj,
        merge_objects=merge_obj, catastrophe_objects=cat_obj, touching_pairs=n_touch,
        touching_separated_pairs=n_sep, touching_separated=_ratio(n_sep, n_touch, math.nan), nuset_fn=nuset_fn,
        nuset_fp=nuset_fp, fn_rate=_ratio(nuset_fn, n_g, 0.0), fp_rate=_ratio(nuset_fp, n_p, 0.0),
        mean_best_iou=float(best_g.mean()) if n_g else math.nan, hausdorff_mean=h_mean, hausdorff_n=h_n,
    )


def error_scores(gt: np.ndarray, pred: np.ndarray, *, thresh: float = 0.5, min_size: int = 0,
                 hausdorff: bool = True) -> ErrorScores:
    """Split / merge / catastrophe counts, touching nuclei separated, NuSeT FN/FP rates, Hausdorff.

    Parameters
    ----------
    gt, pred : ndarray of int, (Y, X)
        Label images, 0 = background.
    thresh : float
        IoU threshold of the matching the analysis starts from.
    min_size : int
        Ignore objects smaller than this (px) in either image.
    hausdorff : bool
        Compute the mean Hausdorff distance of matched pairs (the slowest part; off gives NaN).

    Returns
    -------
    ErrorScores
    """
    gi, pi, ov = _indexed(gt, pred, min_size)
    return _error_scores(gi, pi, ov, _match_indices(ov, thresh), thresh, hausdorff)


# --------------------------------------------------------------------------------------------------
# Image and dataset
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageScores:
    """Every score of one image.

    Attributes
    ----------
    name : str or None
    n_true, n_pred : int
        Objects after ``min_size`` filtering.
    objects : dict float -> Matching
        Object scores per IoU threshold (keys normalised by :func:`threshold_key`).
    pixel : PixelScores
    errors : ErrorScores
    """

    name: str | None
    n_true: int
    n_pred: int
    objects: Mapping[float, Matching] = field(repr=False)
    pixel: PixelScores
    errors: ErrorScores

    def at(self, thresh: float) -> Matching:
        """Object scores at one of the evaluated thresholds."""
        return self.objects[threshold_key(thresh)]


def evaluate_image(gt: np.ndarray, pred: np.ndarray, *, thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
                   error_thresh: float = 0.5, min_size: int = 0, hausdorff: bool = True,
                   name: str | None = None) -> ImageScores:
    """Score one predicted label image against its ground truth.

    Parameters
    ----------
    gt, pred : ndarray of int, (Y, X), same shape
        Label images, 0 = background. (Z, Y, X) volumes work too for the object, pixel and
        split/merge scores; touching pairs and Hausdorff distances are 2D only (0 pairs / NaN).
    thresholds : iterable of float
        IoU thresholds for the object scores.
    error_thresh : float
        IoU threshold of the matching used by the error analysis (:class:`ErrorScores`).
    min_size : int
        Objects smaller than this many pixels, in truth or prediction, are set to background before
        anything is scored (objects, pixels and errors alike). 0 keeps everything.
    hausdorff : bool
        Compute the Hausdorff distance of matched pairs.
    name : str, optional
        Carried into the result.

    Returns
    -------
    ImageScores
    """
    gi, pi, ov = _indexed(gt, pred, min_size)
    objects = {threshold_key(t): _matching_from(ov, t) for t in thresholds}
    errors = _error_scores(gi, pi, ov, _match_indices(ov, error_thresh), error_thresh, hausdorff)
    g, p = gi > 0, pi > 0
    tp = int(np.count_nonzero(g & p))
    fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp
    pixel = PixelScores.from_counts(tp, fp, fn, g.size - tp - fp - fn)
    return ImageScores(name=name, n_true=ov.n_true, n_pred=ov.n_pred, objects=objects, pixel=pixel, errors=errors)


_MEAN_FIELDS = ("precision", "recall", "f1", "ap", "mean_matched_iou", "panoptic_quality")
_PIXEL_FIELDS = ("mean_iou", "f1", "rmse", "accuracy", "fg_iou")


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


@dataclass(frozen=True)
class DatasetScores:
    """Scores of a set of images, pooled and averaged.

    Attributes
    ----------
    thresholds : tuple of float
    n_images : int
    pooled : dict float -> ObjectScores
        Counts summed over all images, then the ratios (what the DSB 2018 / StarDist report).
    per_image_mean : dict float -> dict str -> float
        Mean over images of each per-image ratio (precision, recall, f1, ap, mean_matched_iou,
        panoptic_quality); NaN values are skipped.
    pixel : dict str -> float
        Mean over images of each pixel score (NuSeT averages per image).
    errors : ErrorScores
        Counts summed over images, rates and means recomputed from the sums.
    images : list of ImageScores
    """

    thresholds: tuple[float, ...]
    n_images: int
    pooled: Mapping[float, ObjectScores]
    per_image_mean: Mapping[float, Mapping[str, float]]
    pixel: Mapping[str, float]
    errors: ErrorScores
    images: Sequence[ImageScores] = field(repr=False)

    def to_json_dict(self) -> dict:
        """The ``nucleoscope evaluate --json`` object (NaN -> None, threshold keys as strings)."""
        return _jsonable({
            "thresholds": list(self.thresholds),
            "n_images": self.n_images,
            "pooled": {str(t): s.as_dict() for t, s in self.pooled.items()},
            "per_image_mean": {str(t): dict(v) for t, v in self.per_image_mean.items()},
            "pixel": dict(self.pixel),
            "errors": self.errors.as_dict(),
            "per_image": [_image_json(s) for s in self.images],
        })


def _image_json(s: ImageScores) -> dict:
    return {
        "name": s.name, "n_true": s.n_true, "n_pred": s.n_pred,
        "objects": {str(t): {k: v for k, v in m.as_dict().items()} for t, m in s.objects.items()},
        "pixel": s.pixel.as_dict(), "errors": s.errors.as_dict(),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def summarize(images: Sequence[ImageScores]) -> DatasetScores:
    """Pool and average per-image scores (all must share the same thresholds)."""
    images = list(images)
    if not images:
        raise ValueError("no images to summarize")
    thresholds = tuple(images[0].objects)
    for s in images:
        if tuple(s.objects) != thresholds:
            raise ValueError("images were scored at different thresholds")
    pooled, means = {}, {}
    for t in thresholds:
        ms = [s.objects[t] for s in images]
        pooled[t] = ObjectScores.from_counts(t, sum(m.n_true for m in ms), sum(m.n_pred for m in ms),
                                             sum(m.tp for m in ms), sum(m.sum_matched_iou for m in ms))
        means[t] = {k: _nanmean([getattr(m, k) for m in ms]) for k in _MEAN_FIELDS}
    pixel = {k: _nanmean([getattr(s.pixel, k) for s in images]) for k in _PIXEL_FIELDS}
    return DatasetScores(thresholds=thresholds, n_images=len(images), pooled=pooled, per_image_mean=means,
                         pixel=pixel, errors=ErrorScores.pooled([s.errors for s in images]), images=images)


def evaluate_dataset(pairs: Iterable[tuple[np.ndarray, np.ndarray]], *,
                     thresholds: Iterable[float] = DEFAULT_THRESHOLDS, names: Sequence[str] | None = None,
                     **options) -> DatasetScores:
    """Score many ``(gt, pred)`` pairs; see :func:`evaluate_image` for ``options``.

    Returns
    -------
    DatasetScores
        Pooled counts and per-image means, with every :class:`ImageScores` in ``images``.
    """
    thresholds = tuple(thresholds)
    scores = []
    for i, (gt, pred) in enumerate(pairs):
        name = names[i] if names is not None else None
        scores.append(evaluate_image(gt, pred, thresholds=thresholds, name=name, **options))
    return summarize(scores)
