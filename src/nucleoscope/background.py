"""Smooth background under the nuclei: a polynomial surface fitted to the non-nucleus pixels.

Uneven illumination (a ramp across a wide-field image, vignetting, a stitched tile's shading) lifts the
background on one side above the nuclei on the other, so a single threshold fails there and the
background's spread overstates the noise. :func:`estimate_background` fits the surface and returns it at
full resolution; :func:`fit_background` (on a reduced copy with known pixel centres) and
:func:`evaluate_background` are its two halves, used by NuSeT's unevenness check
(:mod:`nucleoscope.segment.nuset.scale`). Torch-free.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .preprocess import _as_float, _check_2d, _otsu_fg
from .rescale import _block_mean

__all__ = ["BackgroundFit", "estimate_background", "evaluate_background", "fit_background"]


def _unit_coords(n: int, centres: np.ndarray | None = None) -> np.ndarray:
    """Pixel coordinates (or the given pixel ``centres``) along an axis of ``n`` px, scaled to [-1, 1]."""
    c = np.arange(n, dtype=np.float64) if centres is None else np.asarray(centres, np.float64)
    return c * (2.0 / (n - 1)) - 1.0 if n > 1 else np.zeros_like(c)


def _poly_terms(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of the monomials ``y**i * x**j`` with ``i + j <= order``."""
    return [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]


class BackgroundFit(NamedTuple):
    """Result of :func:`fit_background`."""

    coef: np.ndarray      #: (n_terms,) float64, one per monomial ``y**i * x**j`` (``i + j <= order``)
    mask: np.ndarray      #: (h, w) bool, the last round's foreground (Otsu split of the residual)
    residual: np.ndarray  #: (h, w) float32, the image minus the surface


def fit_background(small: np.ndarray, y: np.ndarray, x: np.ndarray, *, order: int = 2,
                   iterations: int = 3) -> BackgroundFit:
    """Polynomial background of a (small) image: alternate an Otsu split of the residual with a
    least-squares fit to the background pixels, ``iterations`` rounds.

    Parameters
    ----------
    small : ndarray, (h, w)
        Usually a reduced copy of the image (noise averaged, nuclei still resolved).
    y, x : ndarray, (h,) and (w,)
        The copy's row and column centres in the full image's coordinates scaled to [-1, 1] (see
        :func:`evaluate_background`), so the surface can be evaluated on the full grid.
    order, iterations : int
        See :func:`estimate_background`.

    Returns
    -------
    BackgroundFit
    """
    terms = _poly_terms(order)
    basis = np.stack([np.outer(y ** i, x ** j).ravel() for i, j in terms], axis=1)  # (h*w, n_terms)
    values = np.asarray(small, np.float64).ravel()
    coef = np.zeros(len(terms))
    for _ in range(max(1, iterations)):
        resid = values - basis @ coef
        mask = _otsu_fg(resid.reshape(small.shape).astype(np.float32))
        # a 1 px margin: the rims of nuclei (and blocks that average nucleus and background) are not background
        bg = np.flatnonzero(~ndi.binary_dilation(mask).ravel())
        if bg.size < 10 * len(terms):  # too little background to fit: keep the last surface
            break
        # Otsu of a residual also leaves debris and the dim rims of nuclei in the background: fit to its
        # central 96% so those few bright pixels do not lift the surface
        r = resid[bg]
        lo, hi = np.percentile(r, [2, 98])
        keep = bg[(r >= lo) & (r <= hi)]
        a = basis[keep]
        # normal equations: a 6x6 solve, 10x faster than an SVD-based lstsq here, and well conditioned
        # because the coordinates are scaled to [-1, 1]
        try:
            coef = np.linalg.solve(a.T @ a, a.T @ values[keep])
        except np.linalg.LinAlgError:  # degenerate grid (a single row or column): minimum-norm solution
            coef = np.linalg.lstsq(a, values[keep], rcond=None)[0]
    resid = (values - basis @ coef).reshape(small.shape).astype(np.float32)
    return BackgroundFit(coef, _otsu_fg(resid), resid)


def evaluate_background(coef: np.ndarray, shape: tuple[int, int], *, order: int = 2) -> np.ndarray:
    """The polynomial surface of :func:`fit_background` on the full ``shape`` grid; (Y, X) float32."""
    y, x = _unit_coords(shape[0]), _unit_coords(shape[1])
    out = np.zeros(shape, np.float32)
    for c, (i, j) in zip(coef, _poly_terms(order)):
        if c != 0:  # one rank-1 term at a time: no (terms, Y, X) stack for a huge image
            out += np.outer(c * y ** i, x ** j).astype(np.float32)
    return out


def estimate_background(image: np.ndarray, *, order: int = 2, side: int = 256,
                        iterations: int = 3) -> np.ndarray:
    """Smooth background under the nuclei: a polynomial surface fitted to the non-nucleus pixels.

    Uneven illumination (a ramp across a wide-field image, vignetting, a stitched tile's shading) lifts
    the background on one side above the nuclei on the other, so a single threshold fails there and
    the background's spread overstates the noise. Subtracting this surface flattens the image.

    Parameters
    ----------
    image : ndarray, (Y, X)
    order : int
        Polynomial degree (2: ramps and centred or off-centre vignetting). A surface this smooth cannot
        follow nuclei, so none are subtracted away.
    side : int
        The fit runs on block means of the image at most ~this many px on the long side (noise averaged,
        nuclei still resolved); the surface is then evaluated at full resolution.
    iterations : int
        Rounds of (Otsu split of the residual, least-squares fit to the background pixels).

    Returns
    -------
    ndarray, (Y, X) float32
        The background, in the image's units: ``image - estimate_background(image)`` has a flat
        background around 0.

    Notes
    -----
    Unlike a rolling ball or a large median filter this needs no radius (no nucleus size) and cannot
    hollow out a dense clump of nuclei; it follows only illumination that varies slowly across the
    whole field.

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :96]
    >>> img = (100 + 2.0 * xx + 500.0 * (np.hypot(yy - 32, xx - 48) < 8)).astype(np.float32)
    >>> bg = estimate_background(img)
    >>> bool(np.abs(bg - (100 + 2.0 * xx)).max() < 1.0)
    True
    """
    arr = _as_float(image)
    _check_2d(arr)
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    step = max(1, int(round(max(arr.shape) / side)))
    if min(arr.shape) < 2 * step:
        step = 1
    small = _block_mean(arr, step)
    # block i covers rows i*step .. i*step + step - 1: its centre in full-image pixels
    y = _unit_coords(arr.shape[0], np.arange(small.shape[0]) * step + (step - 1) / 2)
    x = _unit_coords(arr.shape[1], np.arange(small.shape[1]) * step + (step - 1) / 2)
    fit = fit_background(small, y, x, order=order, iterations=iterations)
    return evaluate_background(fit.coef, arr.shape, order=order)
