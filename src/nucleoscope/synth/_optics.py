"""Shared rendering steps: random draws, illumination, PSF, camera noise and quantisation."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from .._errors import InputError

__all__ = ["as_rng", "full_scale", "illumination", "psf_blur", "camera", "uniform", "DType"]

DType = Literal["uint8", "uint16", "float32"]


def as_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """``numpy.random.Generator`` from a seed, a generator (returned as is) or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def uniform(rng: np.random.Generator, value, low: float, high: float, *, log: bool = False) -> float:
    """``value`` when given, else a draw from U(low, high) (log-uniform when ``log``)."""
    if value is not None:
        return float(value)
    if log:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def full_scale(dtype: str, bit_depth: int = 12) -> float:
    """The value of a saturated pixel: 255 (uint8), 2**bit_depth - 1 (uint16), 1.0 (float32)."""
    if dtype == "uint8":
        return 255.0
    if dtype == "uint16":
        if not 8 <= bit_depth <= 16:
            raise InputError(f"bit_depth must be 8..16 for uint16 output, got {bit_depth}")
        return float(2**bit_depth - 1)
    if dtype == "float32":
        return 1.0
    raise InputError(f"dtype must be 'uint8', 'uint16' or 'float32', got {dtype!r}")


def illumination(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative illumination field (Y, X), mean about 1.

    A linear ramp in a random direction plus a radial vignette centred near the middle; ``strength`` is the
    relative intensity change across the field (0 = flat).
    """
    h, w = shape
    yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    if strength <= 0:
        return np.ones(shape, np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    share = rng.uniform(0, 1)  # how much of the change is ramp vs vignette
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy) * 0.5
    cy, cx = rng.uniform(-0.3, 0.3, 2)
    vignette = -((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0
    field = 1.0 + strength * (share * ramp + (1 - share) * (vignette + 0.33))
    return np.clip(field, 0.2, None).astype(np.float32)


def psf_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian PSF (``sigma`` in px); a Gaussian is the usual wide-field approximation of the Airy core."""
    if sigma <= 0:
        return image
    return ndi.gaussian_filter(image, sigma, mode="nearest", truncate=3.0)


def camera(
    clean: np.ndarray,
    rng: np.random.Generator,
    *,
    dtype: str,
    fs: float,
    photons_full_scale: float,
    read_noise: float,
) -> np.ndarray:
    """Poisson shot noise + Gaussian read noise, then clipping to [0, fs] and quantisation to ``dtype``.

    Parameters
    ----------
    clean : ndarray of float32
        Noise-free image in output units (0..fs).
    photons_full_scale : float
        Photo-electrons that make a full-scale pixel; fewer means noisier.
    read_noise : float
        Standard deviation of the Gaussian read noise, in output units.
    """
    gain = fs / photons_full_scale  # output units per photo-electron
    counts = rng.poisson(np.maximum(clean, 0) / gain).astype(np.float32)
    noisy = counts * np.float32(gain)
    if read_noise > 0:
        noisy += rng.normal(0.0, read_noise, size=clean.shape).astype(np.float32)
    np.clip(noisy, 0, fs, out=noisy)
    if dtype == "float32":
        return noisy.astype(np.float32)
    return np.rint(noisy).astype(dtype)
