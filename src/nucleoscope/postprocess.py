"""Clean-up of instance label images: small-object removal, hole filling, relabelling, seeded watershed,
and merging of convex touching pairs. Overlapping instance masks are resolved in :mod:`nucleoscope.overlaps`.

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
