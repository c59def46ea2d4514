"""Nucleus sizing heuristics beyond :func:`nucleoscope.rescale.estimate_diameter`: the inscribed-circle
estimate of a coarse mask, and the detection and sizing of sparse localisation (STORM/PALM) renderings,
whose Otsu mask is speckle rather than nuclei. Used by NuSeT's scale estimate
(:mod:`nucleoscope.segment.nuset.scale`); torch-free.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .._errors import InputError
from ..preprocess import _as_float, _otsu_fg
from ..rescale import _block_mean, estimate_diameter

__all__ = ["SPARSE_RENDERING_THRESHOLD", "estimate_diameter_sparse", "sparse_rendering_fraction"]

#: :func:`sparse_rendering_fraction` above this marks a localisation rendering. Measured (sigma 4 px on
#: the <= 512 px subsample, foreground eroded by 4 px): 0 on all 207 shared wide-field images
#: (bbbc039, kromp2020_sbsst265, koyuncu_hepg2_huh7_hoechst, stardist_pkg_dsb2018_sample; max 1e-4) and
#: the 3 bundled ones; 0.024 / 0.29 / 0.18 on the real STORM images Cell1 / Cell2 / Tissue1 (Cell1 is
#: dense: only 8 % of its truth-mask pixels are 0); >= 0.04 on default-density ``storm_field`` renderings.
SPARSE_RENDERING_THRESHOLD = 0.01

_SPARSE_SIDE = 512  # side (px) of the subsample / downsampled copy the sparse functions work on
_SPARSE_FG_SIGMA = 4.0  # blur (subsample px) that fills a nucleus's point cloud into one foreground blob
# blur series for the diameter (copy px): 2^(n/3) from 2 to 16; finer than doubling because the right
# blur spans a factor of ~1.5 only
_SPARSE_SIGMAS = tuple(2.0 ** (n / 3.0) for n in range(3, 13))
_SPARSE_K = 6.0  # blobs at least this many blur sigmas across are nuclei, not blurred speckle


def sparse_rendering_fraction(image: np.ndarray) -> float:
    """Fraction of foreground pixels that sit exactly at the image minimum (0 for wide-field images).

    A localisation (STORM/PALM) rendering is a histogram of points: even inside a nucleus many pixels
    hold no localisation and are exactly at the minimum (0), whereas a wide-field image's nuclei sit
    well above its background. Compare with :data:`SPARSE_RENDERING_THRESHOLD`.

    Parameters
    ----------
    image : ndarray, (Y, X)
        Any real dtype.

    Returns
    -------
    float
        In [0, 1]. 0 for a constant image or an empty foreground.

    Notes
    -----
    Computed on a strided subsample (every ``ceil(max(Y, X) / 512)``-th pixel; no interpolation, which
    would lift the exact minima), so it costs a few milliseconds even on a 10240 x 10240 image; the
    minimum is that of the subsample. Foreground = Otsu mask of the subsample blurred with sigma 4 px,
    eroded by 4 px so that a blur spilling over a nucleus's edge into a background clipped at 0 (some
    wide-field sets) is not counted.
    """
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"image must be 2-D (Y, X) and non-empty, got shape {arr.shape}")
    step = max(1, -(-max(arr.shape) // _SPARSE_SIDE))
    sub = _as_float(arr[::step, ::step])
    fg = _otsu_fg(ndi.gaussian_filter(sub, _SPARSE_FG_SIGMA, mode="reflect"))
    fg = ndi.distance_transform_edt(fg) > _SPARSE_FG_SIGMA
    if not fg.any():
        return 0.0
    return float(np.count_nonzero(sub[fg] == sub.min()) / np.count_nonzero(fg))


def _inscribed_diameter(mask: np.ndarray) -> float:
    """2 x median largest inscribed radius over components (radius >= 1.5 px) x 1.15; NaN if none.

    The same estimate as the NuSeT coarse pass: the inscribed circle of a clump is still one nucleus,
    and 1.15 turns the minor-axis diameter of a typical elongated nucleus into an area-equivalent one.
    """
    lab, n = ndi.label(mask)
    if n == 0:
        return float("nan")
    r = np.asarray(ndi.maximum(ndi.distance_transform_edt(mask), lab, index=np.arange(1, n + 1)))
    r = r[r >= 1.5]
    return float(2 * np.median(r) * 1.15) if r.size else float("nan")


def estimate_diameter_sparse(image: np.ndarray) -> float:
    """Typical nucleus diameter (px of ``image``) in a sparse localisation rendering.

    The Otsu mask of a point-cloud rendering is speckle (clusters of localisations), so the usual
    estimate reports the speckle size. Blurring first turns each nucleus's cloud into a blob, but the
    blur must fit the image: too little leaves speckle, too much merges neighbours.

    Parameters
    ----------
    image : ndarray, (Y, X)
        A rendering for which :func:`sparse_rendering_fraction` exceeds
        :data:`SPARSE_RENDERING_THRESHOLD` (on a wide-field image use the ordinary estimate).

    Returns
    -------
    float
        Equivalent diameter (px of the input), median over nuclei; NaN when nothing stands out.

    Notes
    -----
    Works on a block-mean copy of <= 512 px (area averaging keeps the localisation density). For each
    blur sigma in 2, 2.5, 3.2, ..., 16 copy px (steps of 2^(1/3)) the Otsu mask of the blurred copy gives
    a diameter d(sigma), the geometric mean of the median inscribed-circle diameter (x 1.15) and
    :func:`estimate_diameter` (equivalent diameter, clumps split). Thresholded blurred speckle is ~4-5
    sigma across, so d ~ 4-5 sigma while the blur is too small; once the clouds fuse into nuclei, d
    jumps to the nucleus size D and stays there while sigma grows, so d / sigma falls as D / sigma.
    The rule: take the **largest sigma with d >= 6 sigma**, the widest blur that still leaves the blobs
    much larger than the blur (the end of the nucleus plateau, where the masks are the most solid), and
    return :func:`estimate_diameter` of that mask. If no sigma qualifies, the sigma with the largest
    d / sigma is used. Tuned on ``storm_field`` renderings (D 30-150 px, sparse to dense, fragmented,
    with noise regions): within 25 % of the truth on 24 of 28, median error 7 %.
    Nuclei below ~12 px in the copy (e.g. 100 px nuclei in a 5000 px frame) are beyond its range.
    """
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"image must be 2-D (Y, X) and non-empty, got shape {arr.shape}")
    step = max(1, -(-max(arr.shape) // _SPARSE_SIDE))
    small = _block_mean(arr, step)
    best, best_ratio = float("nan"), -1.0
    for sigma in reversed(_SPARSE_SIGMAS):  # largest first: stop at the first that qualifies
        mask = _otsu_fg(ndi.gaussian_filter(small, sigma, mode="reflect"))
        if not mask.any() or mask.all():
            continue
        d_eq = estimate_diameter(mask)
        d_sel = math.sqrt(_inscribed_diameter(mask) * d_eq)
        if not np.isfinite(d_sel):
            continue
        if d_sel >= _SPARSE_K * sigma:
            return float(d_eq * step)
        if d_sel / sigma > best_ratio:
            best, best_ratio = float(d_eq * step), d_sel / sigma
    return best
