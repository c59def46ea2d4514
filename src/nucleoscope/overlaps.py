"""Overlapping instance masks resolved into one label image: the STORM paper's merge / give / split rules.

Detections of neighbouring tiles (or of several proposals) may overlap; :func:`resolve_overlaps` merges
instances that mostly cover each other, gives the shared pixels to one side when the overlap is small,
splits them otherwise, and drops pieces left too small. Input masks are full ``(Y, X)`` boolean images or
``((y0, x0, y1, x1), crop)`` pairs; the output is an int32 ``(Y, X)`` label image, 0 = background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .postprocess import object_areas, relabel, remove_small_relative

__all__ = ["resolve_overlaps"]


def _ov_instances(masks: list, shape: tuple[int, int] | None) -> tuple[list[list], tuple[int, int]]:
    """Normalize ``masks`` to ``[y0, x0, y1, x1, crop]`` entries (empty instances dropped) and the shape."""
    full_shapes = {np.shape(m) for m in masks if not isinstance(m, tuple)}
    if shape is None:
        if len(full_shapes) != 1:
            raise ValueError("give `shape` when the masks are (bbox, crop) pairs or have different shapes")
        shape = full_shapes.pop()
    shape = (int(shape[0]), int(shape[1]))
    out = []
    for k, m in enumerate(masks):
        if isinstance(m, tuple):
            if len(m) != 2:
                raise ValueError(f"instance {k}: expected (bbox, crop mask), got a tuple of {len(m)}")
            (y0, x0, y1, x1), crop = m
            crop = np.asarray(crop, dtype=bool)
            y0, x0, y1, x1 = int(y0), int(x0), int(y1), int(x1)
            if crop.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"instance {k}: crop shape {crop.shape} does not match bbox {(y0, x0, y1, x1)}")
            if y0 < 0 or x0 < 0 or y1 > shape[0] or x1 > shape[1]:
                raise ValueError(f"instance {k}: bbox {(y0, x0, y1, x1)} outside the image {shape}")
        else:
            full = np.asarray(m, dtype=bool)
            if full.shape != shape:
                raise ValueError(f"instance {k}: mask shape {full.shape} differs from {shape}")
            rows = np.flatnonzero(full.any(axis=1))
            if rows.size == 0:
                continue
            cols = np.flatnonzero(full.any(axis=0))
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            crop = full[y0:y1, x0:x1]
        if crop.any():
            out.append([y0, x0, y1, x1, crop.copy()])
    return out, shape


def _ov_shared(a: list, b: list) -> tuple[int, tuple[int, int, int, int] | None, np.ndarray | None]:
    """Shared pixel count of two instances, the intersection box and the shared mask within it."""
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    if y0 >= y1 or x0 >= x1:
        return 0, None, None
    shared = (a[4][y0 - a[0]:y1 - a[0], x0 - a[1]:x1 - a[1]] & b[4][y0 - b[0]:y1 - b[0], x0 - b[1]:x1 - b[1]])
    n = int(np.count_nonzero(shared))
    return n, (y0, x0, y1, x1), shared


def _ov_union(a: list, b: list) -> list:
    y0, x0, y1, x1 = min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])
    crop = np.zeros((y1 - y0, x1 - x0), bool)
    for m in (a, b):
        crop[m[0] - y0:m[2] - y0, m[1] - x0:m[3] - x0] |= m[4]
    return [y0, x0, y1, x1, crop]


def _ov_pairs(inst: list[list]) -> list[tuple[int, int]]:
    """Pairs (i < j) whose bounding boxes intersect (sweep over boxes sorted by top row)."""
    if len(inst) < 2:
        return []
    box = np.array([m[:4] for m in inst], dtype=np.int64)
    order = np.argsort(box[:, 0], kind="stable")
    tops = box[order, 0]
    pairs = []
    for k, i in enumerate(order):
        # boxes starting (in sorted order) after i and above i's bottom edge may intersect it
        stop = np.searchsorted(tops, box[i, 2], side="left")
        js = order[k + 1:stop]
        if js.size == 0:
            continue
        hit = (box[js, 1] < box[i, 3]) & (box[js, 3] > box[i, 1])
        for j in js[hit]:
            pairs.append((int(min(i, j)), int(max(i, j))))
    return pairs


def _ov_merge(inst: list[list], merge_frac: float) -> list[list]:
    """Rule 1: merge pairs sharing more than ``merge_frac`` of either instance, until none qualifies."""
    # repeat: a union can newly qualify with a third instance
    while True:
        merged = False
        parent = list(range(len(inst)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        areas = [int(np.count_nonzero(m[4])) for m in inst]
        for i, j in _ov_pairs(inst):
            n, _, _ = _ov_shared(inst[i], inst[j])
            if n > merge_frac * min(areas[i], areas[j]) or n > merge_frac * (areas[i] + areas[j] - n):
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
                    merged = True
        if not merged:
            return inst
        groups: dict[int, list] = {}
        for i in range(len(inst)):
            r = find(i)
            groups[r] = inst[i] if r not in groups else _ov_union(groups[r], inst[i])
        inst = [groups[r] for r in sorted(groups)]


def _ov_give_or_split(inst: list[list], give_frac: float) -> tuple[list[np.ndarray], set[int]]:
    """Rules 2 and 3 on every remaining overlap; returns the crop each instance keeps and who lost pixels."""
    areas = [int(np.count_nonzero(m[4])) for m in inst]
    centroids = []
    for m in inst:
        cy, cx = ndi.center_of_mass(m[4])
        centroids.append((cy + m[0], cx + m[1]))
    keep_masks = [m[4].copy() for m in inst]
    cut: set[int] = set()
    for i, j in _ov_pairs(inst):
        n, box, shared = _ov_shared(inst[i], inst[j])
        if n == 0:
            continue
        fi, fj = n / areas[i], n / areas[j]
        y0, x0, y1, x1 = box
        if fi > give_frac and fj > give_frac:
            # split: nearer centroid wins (the perpendicular bisector of the centroid segment)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            (ayi, axi), (ayj, axj) = centroids[i], centroids[j]
            to_i = (yy - ayi) ** 2 + (xx - axi) ** 2 <= (yy - ayj) ** 2 + (xx - axj) ** 2
            lose_i = shared & ~to_i
            lose_j = shared & to_i
        elif fj > fi:
            lose_i, lose_j = shared, None
        else:
            lose_i, lose_j = None, shared
        if lose_i is not None:
            cut.add(i)
            keep_masks[i][y0 - inst[i][0]:y1 - inst[i][0], x0 - inst[i][1]:x1 - inst[i][1]] &= ~lose_i
        if lose_j is not None:
            cut.add(j)
            keep_masks[j][y0 - inst[j][0]:y1 - inst[j][0], x0 - inst[j][1]:x1 - inst[j][1]] &= ~lose_j
    return keep_masks, cut


def _ov_remove_small(labels: np.ndarray, inst: list[list], cut: set[int], small_frac: float) -> np.ndarray:
    """Remove resolved instances, then pieces of cut ones, below ``small_frac`` x the mean instance area."""
    labels = remove_small_relative(labels, small_frac)
    # A cut can leave an instance in several parts: each connected piece is judged on its own
    # size, against the mean area of the instances (not of the pieces, whose mean the slivers
    # themselves would pull down). Only instances that lost pixels can have been cut.
    areas_now = object_areas(labels)[1:]
    alive = areas_now[areas_now > 0]
    if alive.size:
        threshold = small_frac * float(alive.mean())
        for k in sorted(cut):
            m = inst[k]
            region = labels[m[0]:m[2], m[1]:m[3]]
            pieces, n_pieces = ndi.label(region == k + 1)
            if n_pieces > 1:
                sizes = np.bincount(pieces.ravel())
                region[(sizes < threshold)[pieces] & (pieces > 0)] = 0
    return labels


def resolve_overlaps(masks: list[np.ndarray | tuple[tuple[int, int, int, int], np.ndarray]], *,
                     merge_frac: float = 0.5, give_frac: float = 0.1, small_frac: float = 0.25,
                     shape: tuple[int, int] | None = None) -> np.ndarray:
    """Turn overlapping instance masks into a label image by the STORM paper's rules.

    Instance segmenters that work from proposals (Mask R-CNN, an RPN) or tiles can return masks that
    overlap. For every overlapping pair, with ``f_a`` and ``f_b`` the fractions of each instance's
    area that the overlap covers:

    1. **merge** (union, one id) when the overlap is more than ``merge_frac`` of either instance,
       i.e. ``max(f_a, f_b) > merge_frac`` (this includes sharing more than ``merge_frac`` of their
       total area, intersection over union); merging repeats until no pair qualifies;
    2. **give** the overlap to one instance when it is at most ``give_frac`` of one and more than
       ``give_frac`` of the other: it goes to the instance it is the larger part of (the paper's
       "greatest overlap"). When it is at most ``give_frac`` of both, the paper assigns it at random;
       here it goes by the same rule (larger fraction; ties to the earlier instance), so the result is
       reproducible;
    3. **split** along the perpendicular bisector of the segment between the two instances' centroids
       when the overlap is more than ``give_frac`` and at most ``merge_frac`` of each: every shared pixel
       goes to the instance whose centroid (of its whole mask, before any cut) is nearer; ties to the
       earlier instance.

    Before resolving, instances smaller than ``small_frac`` x the mean instance area are dropped (the
    paper's first step); after it, resolved instances below ``small_frac`` x their mean area are removed
    (:func:`remove_small_relative`), then each label is cut into its connected pieces and pieces below
    ``small_frac`` x the mean instance area are removed too ("new small instances created during the
    split were again removed").

    Parameters
    ----------
    masks : sequence
        One entry per instance: a boolean mask ``(Y, X)`` of the whole image, or a pair
        ``((min_row, min_col, max_row, max_col), crop)`` with ``crop`` a boolean array of shape
        ``(max_row - min_row, max_col - min_col)`` (scikit-image's ``bbox`` convention, end exclusive).
    merge_frac, give_frac : float
        Thresholds of the rules, ``0 <= give_frac <= merge_frac <= 1`` (paper: 0.5 and 0.1).
    small_frac : float
        Relative size below which instances and pieces are removed (paper: 0.25); 0 disables.
    shape : (int, int), optional
        Image shape; required when no full-image mask is given.

    Returns
    -------
    ndarray, int32, (Y, X)
        Labels 1..N, numbered in the order of the (first) input instance each comes from. Pixels where a
        cycle of pairwise decisions among three or more instances leaves no owner become background.

    Examples
    --------
    >>> a = np.zeros((4, 8), bool); a[:, :5] = True
    >>> b = np.zeros((4, 8), bool); b[:, 3:] = True   # overlap = 2 columns = 40% of each: split
    >>> resolve_overlaps([a, b], small_frac=0)[0]
    array([1, 1, 1, 1, 2, 2, 2, 2], dtype=int32)
    """
    if not 0 <= give_frac <= merge_frac <= 1:
        raise ValueError(f"need 0 <= give_frac <= merge_frac <= 1, got {give_frac}, {merge_frac}")
    if not 0 <= small_frac < 1:
        raise ValueError(f"small_frac must be in [0, 1), got {small_frac}")
    inst, shape = _ov_instances(masks, shape)
    labels = np.zeros(shape, np.int32)
    if not inst:
        return labels
    if small_frac > 0:
        areas = np.array([np.count_nonzero(m[4]) for m in inst], dtype=np.float64)
        keep = areas >= small_frac * areas.mean()
        inst = [m for m, k in zip(inst, keep) if k]
    inst = _ov_merge(inst, merge_frac)
    keep_masks, cut = _ov_give_or_split(inst, give_frac)
    for k, (m, own) in enumerate(zip(inst, keep_masks), start=1):
        region = labels[m[0]:m[2], m[1]:m[3]]
        region[own] = k
    if small_frac > 0:
        labels = _ov_remove_small(labels, inst, cut, small_frac)
    return relabel(labels)


