"""Error analysis: split / merge / catastrophe events, touching nuclei separated, NuSeT rates, Hausdorff.

Starts from the one-to-one matching at an IoU threshold (default 0.5) and the sparse overlap table;
definitions follow Caicedo et al. 2019 and DeepCell (see :class:`ErrorScores` and ``docs/metrics.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ._conventions import _ratio, threshold_key
from ._matching import _match_indices
from ._overlap import Overlap, _indexed

#: Caicedo et al. 2019 / DeepCell: unmatched objects overlapping at least this IoU are linked.
LINK_IOU = 0.1
#: NuSeT's overlap rule for its FN / FP rates.
NUSET_OVERLAP = 0.7


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
