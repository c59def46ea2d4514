"""Clean-up of instance label images: small-object removal, hole filling, relabelling, seeded watershed.

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
    """Pixel count of every label id ``0..labels.max()`` (index = id; entry 0 is the background)."""
    return np.bincount(labels.ravel(), minlength=int(labels.max()) + 1 if labels.size else 1)


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
