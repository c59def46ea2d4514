"""Clean-up of instance label images: small-object removal, hole filling, relabelling, seeded watershed,
and overlapping instance masks resolved into one label image (the STORM paper's merge / give / split rules).

All functions take and return ``(Y, X)`` int32 label images with 0 = background and never modify their
input in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

__all__ = [
    "PostprocessConfig",
    "fill_holes",
    "object_areas",
    "postprocess",
    "relabel",
    "remove_small",
    "remove_small_relative",
    "resolve_overlaps",
    "seeded_watershed",
]


def object_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every label id ``0..labels.max()`` (index = id; entry 0 is the background).

    Counted in chunks of ~16 M pixels: ``np.bincount`` converts its input to 64-bit integers, a
    2 GiB temporary for a 16k x 16k int32 label image.
    """
    flat = np.asarray(labels).reshape(-1)
    n = int(flat.max()) + 1 if flat.size else 1
    if flat.size <= _AREA_CHUNK:
        return np.bincount(flat, minlength=n)
    out = np.zeros(n, np.int64)
    for i in range(0, flat.size, _AREA_CHUNK):
        out += np.bincount(flat[i:i + _AREA_CHUNK], minlength=n)
    return out


_AREA_CHUNK = 1 << 24


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber the objects to ``1..N`` keeping their relative order (int32 out)."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() <= 0:
        return np.zeros(labels.shape, dtype=np.int32)
    out, _, _ = relabel_sequential(labels.astype(np.int32, copy=False))
    return out.astype(np.int32, copy=False)


def remove_small(labels: np.ndarray, min_size: float) -> np.ndarray:
    """Set objects with fewer than ``min_size`` pixels to background (ids are kept, not renumbered)."""
    areas = object_areas(labels)
    small = areas < min_size
    small[0] = False
    out = labels.astype(np.int32, copy=True)
    out[small[labels]] = 0
    return out


def remove_small_relative(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Remove objects smaller than ``fraction`` x the image's mean object area.

    NuSeT removes objects below 1/5 of the mean area before scoring, the STORM paper below 25%.

    Parameters
    ----------
    labels : (Y, X) int array
    fraction : float
        0.2 for NuSeT's rule, 0.25 for the STORM paper's.
    """
    areas = object_areas(labels)[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return labels.astype(np.int32, copy=True)
    return remove_small(labels, fraction * float(areas.mean()))


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill holes inside each object (background pixels enclosed by one object go to that object).

    Background enclosed by several objects together (a pocket in a ring of touching nuclei) is not a
    hole of any of them and stays background.
    """
    labels = labels.astype(np.int32, copy=True)
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    # Each hole component takes the id that surrounds it: the most common id on its outer rim.
    hole_lab, n = ndi.label(holes)
    rim = ndi.binary_dilation(holes) & ~holes
    rim_hole = ndi.maximum_filter(hole_lab, size=3)[rim]
    rim_ids = labels[rim]
    ok = (rim_hole > 0) & (rim_ids > 0)
    best = np.zeros(n + 1, dtype=np.int32)
    if ok.any():
        pairs = np.stack([rim_hole[ok], rim_ids[ok]], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        # sort by count so the last write per hole is the most common surrounding id
        order = np.argsort(counts, kind="stable")
        best[uniq[order, 0]] = uniq[order, 1]
        # a hole whose rim meets more than one object lies between objects, not inside one
        best[np.bincount(uniq[:, 0], minlength=n + 1) > 1] = 0
    labels[holes] = best[hole_lab[holes]]
    return labels


def touching_pairs(labels: np.ndarray, values: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pairs of objects that share a 4-connected edge: ``(a, b, mean)`` with ``a < b``, each pair once.

    With ``values`` (H, W), ``mean`` is each pair's mean over its shared edge of ``max(values[p],
    values[q])`` for the neighbouring pixels ``p``, ``q`` across it (e.g. a border probability); else None.
    """
    labels = np.asarray(labels)
    a_list, b_list, v_list = [], [], []
    for sa, sb in (((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
                   ((slice(None), slice(1, None)), (slice(None), slice(None, -1)))):
        la, lb = labels[sa], labels[sb]
        k = (la != lb) & (la > 0) & (lb > 0)
        a_list.append(np.minimum(la[k], lb[k]).astype(np.int64))
        b_list.append(np.maximum(la[k], lb[k]).astype(np.int64))
        if values is not None:
            v_list.append(np.maximum(values[sa][k], values[sb][k]))
    a, b = np.concatenate(a_list), np.concatenate(b_list)
    if a.size == 0:
        return a, b, (np.zeros(0) if values is not None else None)
    n = int(labels.max()) + 1
    key, inv = np.unique(a * n + b, return_inverse=True)
    mean = None
    if values is not None:
        mean = np.bincount(inv, weights=np.concatenate(v_list)) / np.bincount(inv)
    return key // n, key % n, mean


def digital_hull_size(mask: np.ndarray) -> float:
    """Number of pixel centres inside (or on) the convex hull of a mask's pixel centres.

    ``mask.sum() / digital_hull_size(mask)`` is a solidity that does not depend on the object's size: a
    digitized disc scores ~1 at any radius, where the convex image of
    :func:`skimage.morphology.convex_hull_image` (regionprops' solidity) makes a disc 0.86 at radius 4
    px and 0.96 at 20 px. The hull's vertices are pixel centres, so Pick's theorem counts the centres in
    it exactly: area + boundary points / 2 + 1.
    """
    from math import gcd

    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask & ~ndi.binary_erosion(mask))  # the hull's vertices lie on the outline
    if len(pts) < 3:
        return float(mask.sum())
    try:
        hull = ConvexHull(pts)
    except QhullError:  # collinear: a line of pixels is convex
        return float(mask.sum())
    v = pts[hull.vertices]  # counter-clockwise
    w = np.roll(v, -1, axis=0)
    area = 0.5 * abs(float(np.sum(v[:, 0] * w[:, 1] - w[:, 0] * v[:, 1])))
    boundary = sum(gcd(int(abs(dy)), int(abs(dx))) for dy, dx in (w - v))
    return area + boundary / 2 + 1


def merge_convex_pairs(labels: np.ndarray, solidity: float, *, max_piece: float = 0.5,
                       max_union: float = 1.3, border: np.ndarray | None = None,
                       border_below: float = 1.0) -> np.ndarray:
    """Merge two touching objects into one when together they are convex and small enough to be one nucleus.

    A nucleus cut in two by a spurious seed leaves two pieces whose union is about as convex as a
    nucleus; two touching nuclei leave a neck (a concavity) where they meet. A pair is merged when the
    smaller piece is at most ``max_piece`` x the median object area, the union at most ``max_union`` x
    it, and the union's solidity (pixels / pixel centres in its convex hull, :func:`digital_hull_size`)
    at least ``solidity``. Pairs are taken from
    the most convex down; each object is merged at most once (so a clump is never chained into one).

    Parameters
    ----------
    labels : ndarray (H, W) int
    solidity : float
        Minimum solidity of the union, in (0, 1]; <= 0 returns the labels unchanged.
    max_piece, max_union : float
        Size limits, in units of the median object area.
    border : ndarray (H, W) float, optional
        Probability of a border between touching nuclei; with it a pair is merged only where the mean
        over its shared edge (:func:`touching_pairs`) is below ``border_below``.

    Returns
    -------
    ndarray (H, W) int32 (the merged pair keeps the smaller id; ids not renumbered)
    """
    labels = np.asarray(labels, np.int32)
    if solidity <= 0 or labels.max() < 2:
        return labels
    areas = np.bincount(labels.ravel())
    present = areas[1:][areas[1:] > 0]
    med = float(np.median(present))
    a, b, edge = touching_pairs(labels, border)
    small = np.minimum(areas[a], areas[b])
    keep = (small <= max_piece * med) & (areas[a] + areas[b] <= max_union * med)
    if edge is not None:
        keep &= edge < border_below
    a, b = a[keep], b[keep]
    if a.size == 0:
        return labels
    objs = ndi.find_objects(labels)
    cand = []
    for i, j in zip(a.tolist(), b.tolist()):
        si, sj = objs[i - 1], objs[j - 1]
        sl = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(si, sj))
        union = (labels[sl] == i) | (labels[sl] == j)
        sol = float(union.sum()) / max(digital_hull_size(union), 1.0)
        if sol >= solidity:
            cand.append((sol, i, j))
    lut = np.arange(int(labels.max()) + 1, dtype=np.int32)
    used: set[int] = set()
    for _, i, j in sorted(cand, reverse=True):
        if i in used or j in used:
            continue
        lut[j] = i
        used.update((i, j))
    return lut[labels]


def seeded_watershed(surface: np.ndarray, seeds: np.ndarray, mask: np.ndarray, *,
                     compactness: float = 0.0) -> np.ndarray:
    """Watershed of ``surface`` from ``seeds`` restricted to ``mask``; returns int32 labels.

    Parameters
    ----------
    surface : (Y, X) float array
        Relief to flood (low = object centre), e.g. the negated distance transform or an edge map.
    seeds : (Y, X) int array
        Marker image, 0 = no seed, one id per object.
    mask : (Y, X) bool array
        Foreground; pixels outside stay 0.
    compactness : float
        skimage's compact watershed parameter; 0 gives the classic watershed.
    """
    out = watershed(surface, markers=seeds.astype(np.int32, copy=False), mask=mask, compactness=compactness)
    return out.astype(np.int32, copy=False)


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up applied after every segmenter.

    Attributes
    ----------
    min_size : float
        Absolute minimum object area in px (objects below are removed). Default 10 px.
    min_relative_area : float
        Remove objects below this fraction of the image's mean object area (NuSeT: 0.2; STORM paper:
        0.25). 0 disables.
    fill_holes : bool
        Fill enclosed holes of each object.
    """

    min_size: float = 10.0
    min_relative_area: float = 0.2
    fill_holes: bool = True

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {self.min_size}")
        if not 0 <= self.min_relative_area < 1:
            raise ValueError(f"min_relative_area must be in [0, 1), got {self.min_relative_area}")


def postprocess(labels: np.ndarray, config: PostprocessConfig = PostprocessConfig()) -> np.ndarray:
    """Fill holes, drop small objects (absolute then relative), and relabel to ``1..N``."""
    out = labels.astype(np.int32, copy=True)
    if config.fill_holes:
        out = fill_holes(out)
    if config.min_size > 0:
        out = remove_small(out, config.min_size)
    if config.min_relative_area > 0:
        out = remove_small_relative(out, config.min_relative_area)
    return relabel(out)


# ---------------------------------------------------------------------------------------------------
# Overlapping instances (the STORM paper's rules)
# ---------------------------------------------------------------------------------------------------


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


