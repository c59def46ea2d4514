"""Overlay images: outlines of the nuclei drawn on the contrast-stretched image."""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_OVERLAY_SIDE", "overlay_rgb"]

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
    lo, hi = np.percentile(image, [1.0, 99.8]) if image.size else (0.0, 1.0)
    g = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)
    edge = find_boundaries(labels, mode="inner")
    bad = np.zeros(int(labels.max()) + 1, bool)
    if flagged.size:
        bad[flagged] = True
    is_bad = bad[labels] & edge
    rgb[edge & ~is_bad] = (0, 230, 255)
    rgb[is_bad] = (255, 140, 0)
    return rgb
