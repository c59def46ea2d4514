"""Linking per-slice 2D labels into 3D nuclei (NuSeT's slice-by-slice reconstruction).

Objects of consecutive z-slices are matched one-to-one by IoU with the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`); a matched object inherits the 3D id of its partner in the
slice above, an unmatched one starts a new nucleus. Two nuclei stacked in z and touching form one chain;
it is cut where the area profile has a neck (a slice much smaller than the largest slices on both sides).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["iou_table", "link_slices", "split_necks"]


def iou_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every object of ``a`` with every object of ``b`` (two (Y, X) label images).

    Returns
    -------
    ids_a, ids_b : 1D int arrays
        The labels present (background excluded), rows and columns of the table.
    iou : (len(ids_a), len(ids_b)) float64
    """
    ids_a = np.unique(a[a > 0])
    ids_b = np.unique(b[b > 0])
    iou = np.zeros((ids_a.size, ids_b.size))
    if ids_a.size == 0 or ids_b.size == 0:
        return ids_a, ids_b, iou
    ia = np.searchsorted(ids_a, a.ravel())  # background (0) lands at 0 but is masked out below
    ib = np.searchsorted(ids_b, b.ravel())
    both = (a.ravel() > 0) & (b.ravel() > 0)
    inter = np.zeros_like(iou)
    np.add.at(inter, (ia[both], ib[both]), 1)
    area_a = np.bincount(ia[a.ravel() > 0], minlength=ids_a.size)
    area_b = np.bincount(ib[b.ravel() > 0], minlength=ids_b.size)
    union = area_a[:, None] + area_b[None, :] - inter
    np.divide(inter, union, out=iou, where=union > 0)
    return ids_a, ids_b, iou


def split_necks(labels: np.ndarray, *, neck_ratio: float = 0.5, min_slices: int = 2) -> np.ndarray:
    """Cut 3D objects at necks of their per-slice area profile.

    A slice ``k`` is a neck when its area is below ``neck_ratio`` times the smaller of the largest
    areas above and below it, each side spanning at least ``min_slices`` slices. The deepest neck is
    cut first (the neck slice joins the side it overlaps more), then each part again.

    Parameters
    ----------
    labels : (Z, Y, X) int
        3D labels (each object contiguous in z).
    neck_ratio : float
        Area ratio (0-1) below which a slice counts as a neck.
    min_slices : int
        Fewest slices each part must keep.

    Returns
    -------
    (Z, Y, X) int32, objects renumbered 1..N.
    """
    out = np.asarray(labels, dtype=np.int32).copy()
    n_z = out.shape[0]
    areas = np.stack([np.bincount(out[z].ravel(), minlength=out.max() + 1) for z in range(n_z)])  # (Z, N+1)
    next_id = int(out.max()) + 1
    todo = [(lab, 0, n_z) for lab in range(1, areas.shape[1]) if areas[:, lab].any()]
    while todo:
        lab, z0, z1 = todo.pop()
        zs = np.flatnonzero(areas[z0:z1, lab]) + z0
        if zs.size < 2 * min_slices + 1:
            continue
        prof = areas[zs, lab].astype(float)
        best, best_k = neck_ratio, -1
        for k in range(min_slices, prof.size - min_slices):
            ratio = prof[k] / min(prof[:k].max(), prof[k + 1:].max())
            if ratio < best:
                best, best_k = ratio, k
        if best_k < 0:
            continue
        zn = zs[best_k]
        # the neck slice goes with the neighbour slice it overlaps more
        neck = out[zn] == lab
        up = np.count_nonzero(neck & (out[zn - 1] == lab))
        down = np.count_nonzero(neck & (out[zn + 1] == lab))
        first_new = zn + 1 if up >= down else zn
        sub = out[first_new:zs[-1] + 1]
        sub[sub == lab] = next_id
        if next_id >= areas.shape[1]:
            areas = np.concatenate([areas, np.zeros((n_z, next_id + 1 - areas.shape[1]), areas.dtype)], axis=1)
        areas[first_new:zs[-1] + 1, next_id] = areas[first_new:zs[-1] + 1, lab]
        areas[first_new:zs[-1] + 1, lab] = 0
        todo += [(lab, zs[0], first_new), (next_id, first_new, zs[-1] + 1)]
        next_id += 1
    return _renumber(out)


def _renumber(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def link_slices(slices: np.ndarray, *, min_iou: float = 0.2, neck_ratio: float | None = 0.5,
                min_slices: int = 1) -> np.ndarray:
    """Link a stack of independently segmented 2D label images into 3D nuclei.

    Parameters
    ----------
    slices : (Z, Y, X) int
        Per-slice labels (each slice numbered on its own, 0 = background).
    min_iou : float
        Smallest IoU between objects of consecutive slices that links them.
    neck_ratio : float or None
        Cut chains at necks (:func:`split_necks`); ``None`` disables.
    min_slices : int
        Drop 3D objects spanning fewer slices (1 keeps all).

    Returns
    -------
    (Z, Y, X) int32
        3D labels 1..N, numbered in the order their first slice appears.

    Examples
    --------
    >>> s = np.zeros((3, 8, 8), int)
    >>> s[0, 2:6, 2:6], s[1, 2:6, 3:7], s[2, 2:6, 3:7] = 1, 5, 2  # one nucleus, numbered per slice
    >>> int(link_slices(s).max())
    1
    """
    slices = np.asarray(slices)
    if slices.ndim != 3:
        raise ValueError(f"expected (Z, Y, X) labels, got shape {slices.shape}")
    out = np.zeros(slices.shape, dtype=np.int32)
    next_id = 1
    prev_map: dict[int, int] = {}
    for z in range(slices.shape[0]):
        cur = slices[z]
        ids = np.unique(cur[cur > 0])
        cur_map: dict[int, int] = {}
        if z > 0 and prev_map and ids.size:
            ids_a, ids_b, iou = iou_table(slices[z - 1], cur)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= min_iou:
                    cur_map[int(ids_b[c])] = prev_map[int(ids_a[r])]
        for i in ids:
            if int(i) not in cur_map:
                cur_map[int(i)] = next_id
                next_id += 1
        if ids.size:
            lut = np.zeros(int(ids.max()) + 1, dtype=np.int32)
            for i, g in cur_map.items():
                lut[i] = g
            out[z] = lut[np.where(cur > 0, cur, 0)]
        prev_map = cur_map
    if neck_ratio is not None:
        out = split_necks(out, neck_ratio=neck_ratio, min_slices=max(2, min_slices))
    if min_slices > 1:
        span = np.zeros(int(out.max()) + 1, dtype=int)
        for z in range(out.shape[0]):
            span[np.unique(out[z])] += 1
        short = np.flatnonzero(span < min_slices)
        out[np.isin(out, short[short > 0])] = 0
    return _renumber(out)
