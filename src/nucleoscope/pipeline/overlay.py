"""Overlay images: outlines of the nuclei drawn on the contrast-stretched image."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_OVERLAY_SIDE", "overlay_cells_rgb", "overlay_rgb"]

#: Overlays of larger images are drawn on every k-th pixel so their long side stays at most this (px):
#: a full-resolution 16k x 16k overlay is 768 MiB of RGB in memory and a PNG no viewer opens comfortably.
MAX_OVERLAY_SIDE = 8192


def overlay_rgb(image: np.ndarray, labels: np.ndarray, flagged: np.ndarray, *,
                max_side: int = MAX_OVERLAY_SIDE) -> np.ndarray:
    """RGB uint8: contrast-stretched image with cyan outlines, orange for QC-flagged nuclei.

    Parameters
    ----------
    image : (Y, X) float array
    labels : (Y, X) int array, 0 = background
    flagged : (K,) int array
        Ids of the QC-flagged nuclei.
    max_side : int
        Images with a longer side are subsampled by the smallest integer step that brings it to at most
        this (outlines are then those of the subsampled labels).

    Returns
    -------
    (ceil(Y / k), ceil(X / k), 3) uint8, k = 1 unless the image is larger than ``max_side``.
    """
    from skimage.segmentation import find_boundaries

    step = -(-max(image.shape, default=0) // max_side) if max_side > 0 else 1
    if step > 1:
        image, labels = image[::step, ::step], labels[::step, ::step]
    lo, hi = _contrast_limits(image)
    scale = hi - lo if hi > lo else 1.0
    bad = np.zeros(int(labels.max(initial=0)) + 1, bool)
    if flagged.size:
        bad[flagged] = True
    h = image.shape[0]
    rgb = np.empty((*image.shape, 3), np.uint8)
    # in strips of rows (with one row of context for the outlines, which look one pixel around):
    # the same pixels as the whole image at once, with temporaries of one strip instead of ~5x the
    # image (1.2 GiB for an 8192² overlay)
    for r0 in range(0, h, _STRIP):
        r1 = min(h, r0 + _STRIP)
        a, b = max(0, r0 - 1), min(h, r1 + 1)
        edge = find_boundaries(labels[a:b], mode="inner")[r0 - a:r1 - a]
        g = np.clip((image[r0:r1] - lo) / scale, 0, 1)
        part = rgb[r0:r1]
        part[...] = (g * 255).astype(np.uint8)[..., None]
        is_bad = bad[labels[r0:r1]] & edge
        part[edge & ~is_bad] = (0, 230, 255)
        part[is_bad] = (255, 140, 0)
    return rgb


#: rows per strip of :func:`overlay_rgb`
_STRIP = 512
#: images with more pixels take their contrast limits from a regular subsample of about this many
_LIMIT_SAMPLE = 1 << 24


def _contrast_limits(image: np.ndarray) -> tuple[float, float]:
    """The 1st and 99.8th percentiles (of every pixel up to 16 MP; of a regular subsample above, since
    ``np.percentile`` sorts a copy of what it is given)."""
    if not image.size:
        return 0.0, 1.0
    k = int(np.ceil(np.sqrt(image.size / _LIMIT_SAMPLE)))
    sample = image[::k, ::k] if k > 1 else image
    lo, hi = np.percentile(sample, [1.0, 99.8])
    return float(lo), float(hi)


def overlay_cells_rgb(image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, *,
                      max_side: int = MAX_OVERLAY_SIDE) -> np.ndarray:
    """RGB uint8: the cell channel with cyan nucleus outlines and magenta cell outlines.

    Parameters
    ----------
    image : (Y, X) float array
        Cell channel.
    nuclei, cells : (Y, X) int arrays, 0 = background

    Returns
    -------
    As :func:`overlay_rgb`.
    """
    from skimage.segmentation import find_boundaries

    rgb = overlay_rgb(image, nuclei, np.zeros(0, np.int64), max_side=max_side)
    step = -(-max(image.shape, default=0) // max_side) if max_side > 0 else 1
    if step > 1:
        cells = cells[::step, ::step]
    rgb[find_boundaries(cells, mode="inner")] = (255, 0, 200)
    return rgb
