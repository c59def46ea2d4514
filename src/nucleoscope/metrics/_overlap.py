"""Label images -> sparse overlap table (intersection, IoU, intersection over truth / over prediction).

The first layer of every score: both label images are validated, compactly re-indexed to ``1..n`` (small
objects dropped) and their overlapping pairs counted, without a dense ``n_true x n_pred`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._errors import InputError


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
