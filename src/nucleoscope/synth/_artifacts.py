"""Non-cellular artifacts that a segmenter must learn to ignore (never part of the labels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import disk, polygon

__all__ = ["render_artifacts"]


def _polygon(out, mask, rng, size, level):
    h, w = out.shape
    k = int(rng.integers(3, 9))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = size * rng.uniform(0.4, 1.0, k)
    rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=out.shape)
    if rr.size == 0:
        return
    # slightly uneven fill: debris is rarely flat
    out[rr, cc] += level * rng.uniform(0.8, 1.2)
    mask[rr, cc] = True


def _fibre(out, mask, rng, length, width, level):
    h, w = out.shape
    n = max(2, int(length))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.04, n))  # gently curving
    y = rng.uniform(0, h) + np.cumsum(np.sin(heading))
    x = rng.uniform(0, w) + np.cumsum(np.cos(heading))
    keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    if not keep.any():
        return
    line = np.zeros(out.shape, bool)
    line[y[keep].astype(int), x[keep].astype(int)] = True
    if width > 1:
        line = ndi.binary_dilation(line, iterations=int(width // 2))
    out[line] += level
    mask |= line


def _debris(out, mask, rng, radius, level):
    h, w = out.shape
    rr, cc = disk((rng.uniform(0, h), rng.uniform(0, w)), radius, shape=out.shape)
    out[rr, cc] += level
    mask[rr, cc] = True


def _blob(out, mask, rng, radius, level):
    """An out-of-focus nucleus: a disc blurred far beyond the PSF."""
    h, w = out.shape
    sigma = radius * rng.uniform(0.35, 0.8)
    r = int(radius + 3 * sigma) + 1
    cy, cx = int(rng.uniform(0, h)), int(rng.uniform(0, w))
    y0, y1, x0, x1 = max(0, cy - r), min(h, cy + r + 1), max(0, cx - r), min(w, cx + r + 1)
    box = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    rr, cc = disk((r, r), radius, shape=box.shape)
    box[rr, cc] = 1.0
    box = ndi.gaussian_filter(box, sigma, truncate=3.0)
    box *= level / max(float(box.max()), 1e-6)
    sub = box[y0 - (cy - r) : y1 - (cy - r), x0 - (cx - r) : x1 - (cx - r)]
    out[y0:y1, x0:x1] += sub
    mask[y0:y1, x0:x1] |= sub > 0.2 * level


def render_artifacts(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    diameter: float,
    brightness: float,
    counts: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Draw artifacts into a float32 image (noise-free, before illumination and PSF) and their mask.

    Parameters
    ----------
    diameter : float
        Typical nucleus diameter (px): artifact sizes scale with it.
    brightness : float
        Typical nucleus brightness: artifact levels are drawn relative to it (debris is brighter).
    counts : dict
        How many ``polygons``, ``fibres``, ``debris`` and ``blobs`` to draw.
    """
    out = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    for _ in range(counts.get("polygons", 0)):
        _polygon(out, mask, rng, diameter * rng.uniform(0.4, 2.0), brightness * rng.uniform(0.2, 1.5))
    for _ in range(counts.get("fibres", 0)):
        _fibre(
            out, mask, rng, max(shape) * rng.uniform(0.1, 0.8), rng.choice([1, 2, 3, 4]),
            brightness * rng.uniform(0.3, 1.5),
        )
    for _ in range(counts.get("debris", 0)):
        _debris(out, mask, rng, max(1.0, diameter * rng.uniform(0.03, 0.12)), brightness * rng.uniform(1.5, 5.0))
    for _ in range(counts.get("blobs", 0)):
        _blob(out, mask, rng, diameter / 2 * rng.uniform(0.6, 1.3), brightness * rng.uniform(0.15, 0.6))
    return out, mask
