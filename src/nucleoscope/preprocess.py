"""Image preprocessing: normalization, blur, equalization.

Every function is pure: it takes a numpy array and returns a new one. Images are ``(Y, X)`` (most
functions also accept extra leading axes where that is natural) and come back as float32.

Normalization is always an explicit, named step (nothing here rescales intensities behind your back):

- :func:`normalize_percentile` and :func:`normalize_meanstd` are whole-image normalizations (SPEC §2);
- :func:`foreground_normalize` is NuSeT's foreground normalization, ``(x - median_fg) / std_fg``: at training
  time the mask is the ground truth, at inference time it is the coarse foreground of a first pass that used
  whole-image normalization (two-pass inference; ``_otsu_fg`` is that coarse foreground);
- :func:`gaussian_blur` and :func:`equalize` are the STORM paper's optional contrast steps.

Resizing to a model's nucleus scale and back (and padding to the sizes a U-Net accepts) lives in
:mod:`nucleoscope.rescale`, the background fit under uneven illumination in :mod:`nucleoscope.background`,
the sizing of sparse (STORM) renderings in :mod:`nucleoscope.segment.sizing`.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from ._errors import InputError

__all__ = [
    "normalize_percentile",
    "normalize_meanstd",
    "foreground_normalize",
    "gaussian_blur",
    "equalize",
]

log = logging.getLogger(__name__)

# Below this spread an image (or its foreground) is treated as constant: dividing by it would only
# amplify rounding noise.
_EPS = 1e-6


def _as_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    """float32 view/copy of ``image``; rejects empty and non-finite input."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{name} must be real, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def _check_2d(arr: np.ndarray, name: str = "image") -> None:
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (Y, X), got shape {arr.shape}")


# --------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------

def normalize_percentile(image: np.ndarray, *, low: float = 1.0, high: float = 99.8,
                         clip: bool = False) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of ``image`` to 0 and 1.

    Parameters
    ----------
    image : ndarray, any shape
        Intensities (any real dtype).
    low, high : float
        Percentiles in [0, 100], ``low < high``.
    clip : bool
        Clip the result to [0, 1].

    Returns
    -------
    ndarray, float32, same shape
        ``(image - p_low) / (p_high - p_low)``. A (near-)constant image, whose percentile range is
        zero, gives ``image - p_low`` (all zeros for a constant image) rather than dividing by zero.

    Examples
    --------
    >>> normalize_percentile(np.arange(101.0), low=0, high=100)[[0, 50, 100]]
    array([0. , 0.5, 1. ], dtype=float32)
    """
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    arr = _as_float(image)
    lo, hi = np.percentile(arr, [low, high]).astype(np.float64)
    out = arr - np.float32(lo)
    if hi - lo > _EPS:
        out *= np.float32(1.0 / (hi - lo))
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out.astype(np.float32, copy=False)


def normalize_meanstd(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation over the whole image.

    Parameters
    ----------
    image : ndarray, any shape

    Returns
    -------
    ndarray, float32, same shape
        ``(image - mean) / std``; a constant image gives all zeros.
    """
    arr = _as_float(image)
    mean = float(arr.mean(dtype=np.float64))
    std = float(arr.std(dtype=np.float64))
    out = arr - np.float32(mean)
    if std > _EPS:
        out *= np.float32(1.0 / std)
    return out


def foreground_normalize(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """NuSeT's foreground normalization: ``(image - median(fg)) / std(fg)``, fg = pixels under ``mask``.

    The definition (median for the centre, standard deviation for the spread) is the one in NuSeT's public
    code; the paper's text says "mean", the code uses the median, which is also less sensitive to the
    few bright debris pixels that a coarse mask lets in.

    Parameters
    ----------
    image : ndarray, (Y, X) (or any shape)
    mask : ndarray of bool, same shape as ``image``
        Foreground (nuclei): ground truth at training time, the coarse pass's foreground at inference.

    Returns
    -------
    ndarray, float32, same shape

    Notes
    -----
    Guards, so that a two-pass inference never fails on a bad coarse pass:

    - empty foreground (no nuclei found): falls back to the whole image's median and standard deviation;
    - constant foreground (std below 1e-6): keeps the foreground median as the centre and takes the whole
      image's standard deviation as the scale; if that is also zero, the scale is 1.
    """
    arr = _as_float(image)
    fg = np.asarray(mask)
    if fg.shape != arr.shape:
        raise InputError(f"mask shape {fg.shape} does not match image shape {arr.shape}")
    fg = fg.astype(bool, copy=False)
    values = arr[fg]
    if values.size == 0:
        log.debug("foreground_normalize: empty foreground, using the whole image")
        values = arr.ravel()
    centre = float(np.median(values))
    scale = float(values.std(dtype=np.float64))
    if scale <= _EPS:
        scale = float(arr.std(dtype=np.float64))
        if scale <= _EPS:
            scale = 1.0
        log.debug("foreground_normalize: constant foreground, scale from the whole image (%g)", scale)
    out = arr - np.float32(centre)
    out *= np.float32(1.0 / scale)
    return out


# --------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------

def gaussian_blur(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Gaussian blur of a (Y, X) image (STORM paper: sigma 2 px), reflecting at the border.

    Returns
    -------
    ndarray, float32, same shape
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    arr = _as_float(image)
    _check_2d(arr)
    if sigma == 0:
        return arr.copy()
    return ndi.gaussian_filter(arr, sigma=float(sigma), mode="reflect").astype(np.float32, copy=False)


def equalize(image: np.ndarray, *, nbins: int = 256, mask: np.ndarray | None = None) -> np.ndarray:
    """Histogram equalization with normalization to [0, 1] (STORM paper's contrast enhancement).

    Each pixel becomes the fraction of pixels (under ``mask`` if given) at or below its intensity
    (the empirical CDF, computed on ``nbins`` bins), so the output is uniformly spread over [0, 1]
    whatever the input's range or bit depth.

    Parameters
    ----------
    image : ndarray, (Y, X)
    nbins : int
        Histogram bins.
    mask : ndarray of bool, optional
        Pixels whose histogram defines the mapping (all pixels are mapped).

    Returns
    -------
    ndarray, float32, same shape, values in [0, 1]
    """
    from skimage.exposure import equalize_hist

    arr = _as_float(image)
    _check_2d(arr)
    if float(arr.max()) - float(arr.min()) <= _EPS:
        return np.zeros_like(arr)
    out = equalize_hist(arr, nbins=int(nbins), mask=mask)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# Coarse foreground (shared with nucleoscope.background, nucleoscope.segment.sizing and NuSeT inference)
# --------------------------------------------------------------------------------------------------

def _otsu_fg(x: np.ndarray) -> np.ndarray:
    """Otsu foreground of ``x`` (bool, same shape); all False for a constant image."""
    from skimage.filters import threshold_otsu

    if float(x.max()) <= float(x.min()):
        return np.zeros(x.shape, bool)
    return x > threshold_otsu(x)
