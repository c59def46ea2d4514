"""NuSeT's first look at an image: nucleus size, signal-to-noise ratio and background unevenness.

All from an Otsu mask of a small copy (:func:`_initial_diameter`), before the network runs; pass 1 then
refines the size from its proposal boxes (:func:`_proposal_diameter`). The general pieces are shared:
the background fit is :mod:`nucleoscope.background`, the inscribed-circle and sparse-rendering sizing
:mod:`nucleoscope.segment.sizing`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import median_abs_deviation

from ...background import _unit_coords, evaluate_background, fit_background
from ...preprocess import _otsu_fg as _otsu_mask
from ..sizing import SPARSE_RENDERING_THRESHOLD, estimate_diameter_sparse, sparse_rendering_fraction
from ..sizing import _inscribed_diameter  # the same estimate as the sparse-rendering sizing
from .predict import resize_image

__all__ = ["EMPTY_SNR", "FLAT_MAX_DIAMETER", "SPARSE_CHECK_BELOW", "UNEVEN_BACKGROUND", "estimated_diameter",
           "flatten_uneven"]

log = logging.getLogger(__name__)

#: Images whose Otsu foreground is less than this many noise SDs above the background hold no nuclei.
EMPTY_SNR = 3.5
#: Images whose fitted background (a quadratic surface, :func:`nucleoscope.background.fit_background`)
#: varies across the field by more than this fraction of the nuclei's contrast are flattened first:
#: the surface is subtracted. Below it the image is left as it is: the labelled images of the shared
#: data sets read a median of 0.07-0.2 (one of 210 reads 0.51); a ramp of 1x the contrast reads ~1.
UNEVEN_BACKGROUND = 0.5
#: ... provided the flattened image then holds objects, not leftover shading: foreground above
#: :data:`EMPTY_SNR` whose typical inscribed diameter is at most this fraction of the image's short side.
#: Two empty BBBC039 fields with faint shading flatten into one blob 0.4-0.7 of the field across.
FLAT_MAX_DIAMETER = 0.25
#: A first estimate below this (px) may be the speckle of a localisation rendering (STORM reads ~4.6 px);
#: only then is the image tested for sparsity, which keeps the test off the common path.
SPARSE_CHECK_BELOW = 12.0


@dataclass
class _Coarse:
    """First look at an image, on a small copy (:func:`_initial_diameter`)."""

    diameter: float       #: px of the input; NaN when nothing stands out
    snr: float            #: (median foreground - median background) / background noise
    diameter_small: float  #: px of the copy
    uneven: float = 0.0   #: range of the fitted background across the field / contrast of the nuclei
    background: np.ndarray | None = None  #: its coefficients (:func:`nucleoscope.background.fit_background`)


def _initial_diameter(image: np.ndarray) -> _Coarse:
    """Cheap first diameter estimate (px), signal-to-noise ratio and background unevenness, from a
    small copy.

    The copy is <= 256 px on its long side, or <= 512 px when nuclei come out smaller than 8 px there.
    When they are still smaller than that (or nothing stands out) on a larger image, a central crop of
    <= 512 px at full resolution is looked at too, and wins if the copy showed nothing above the noise
    and the crop does: a
    dense field of 5 px nuclei blurs into an even grey on any small copy of a large image, which read
    as "no foreground above the noise" from 1500 px on (0 nuclei), where a 512 px crop finds them all.
    """
    c, small = _coarse_estimate(image, 256)
    if max(image.shape) > 256 and not (c.diameter_small >= 8):
        c, small = _coarse_estimate(image, 512)
        if max(image.shape) > 512 and not (c.diameter_small >= 8):
            h, w = image.shape
            y0, x0 = max(0, (h - 512) // 2), max(0, (w - 512) // 2)
            # only where the copy saw nothing: a copy that sees nuclei (even small ones) keeps its
            # estimate, as before this fallback existed (a 2048² BBBC039 field's labels are unchanged)
            if not (c.snr >= EMPTY_SNR and np.isfinite(c.diameter)):
                crop, _ = _coarse_estimate(image[y0:y0 + 512, x0:x0 + 512], 512)
                if crop.snr >= EMPTY_SNR and np.isfinite(crop.diameter):
                    c = crop
    if np.isfinite(c.diameter):
        c.uneven, c.background = _unevenness(small, image.shape)
    return c


def _coarse_estimate(image: np.ndarray, side: int) -> tuple[_Coarse, np.ndarray]:
    """Diameter and SNR from the Otsu mask of a <= ``side`` copy; returns the copy too.

    Diameter: twice the median over components of their largest inscribed radius (the
    distance-transform maximum), x 1.15 to turn the inscribed (minor-axis) diameter of a typical
    elongated nucleus into an area-equivalent one. The inscribed circle of a clump of touching nuclei
    is still one nucleus, so clumps do not inflate it. Only a starting point: pass 1 refines it.

    SNR: (median foreground - median background) / background noise (1.4826 x MAD). Otsu splits pure
    noise too, at an SNR of ~2.3; every labelled image of the shared data sets has >= 5.8.
    """
    f = min(1.0, side / max(image.shape))
    small = resize_image(image, (max(1, round(image.shape[0] * f)), max(1, round(image.shape[1] * f))))
    mask = _otsu_mask(small)
    if not mask.any() or mask.all():
        return _Coarse(float("nan"), 0.0, float("nan")), small
    bg, fg = small[~mask], small[mask]
    noise = float(median_abs_deviation(bg, scale="normal"))
    snr = (float(np.median(fg)) - float(np.median(bg))) / max(noise, 1e-6 * max(1.0, float(np.abs(small).max())))
    d = _inscribed_diameter(mask)  # specks of noise (inscribed radius < 1.5 px) are ignored
    return _Coarse(d / f, snr, d), small


def _unevenness(small: np.ndarray, shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Range of a quadratic background fitted under the nuclei (:func:`nucleoscope.background.fit_background`)
    across the field, over the nuclei's contrast above it; and the fit's coefficients (input coordinates).

    The fit uses every ``s``-th pixel of the copy (<= 128 per side: a few ms; the surface is smooth, and
    unlike block means the nuclei keep their resolution for the Otsu split).
    """
    h, w = small.shape
    s = max(1, -(-max(h, w) // 128))
    # the sampled pixels' centres in the input's coordinates (resize_image: align_corners=False)
    y = _unit_coords(shape[0], (np.arange(0, h, s) + 0.5) * (shape[0] / h) - 0.5)
    x = _unit_coords(shape[1], (np.arange(0, w, s) + 0.5) * (shape[1] / w) - 0.5)
    sample = small[::s, ::s]
    fit = fit_background(sample, y, x)
    if not fit.mask.any() or fit.mask.all():
        return 0.0, fit.coef
    contrast = float(np.median(fit.residual[fit.mask])) - float(np.median(fit.residual[~fit.mask]))
    if not contrast > 0:
        return 0.0, fit.coef
    surface = sample - fit.residual
    return float(surface.max() - surface.min()) / contrast, fit.coef


def _proposal_diameter(boxes: np.ndarray) -> float:
    """Median nucleus diameter (px) from proposal boxes (sqrt(h * w)); NaN for fewer than 3 boxes."""
    if len(boxes) < 3:
        return float("nan")
    hw = np.clip(boxes[:, 2:] - boxes[:, :2], 1e-3, None)
    # a box is a little larger than the area-equivalent disc of an elongated or tilted nucleus: the
    # 1.05 was measured on the validation images (box median / truth's equivalent diameter: 0.99-1.08)
    return float(np.median(np.sqrt(hw[:, 0] * hw[:, 1])) / 1.05)


def flatten_uneven(image: np.ndarray) -> tuple[np.ndarray, _Coarse, bool]:
    """First look at ``image`` (:func:`_initial_diameter`), flattening an uneven background.

    Returns ``(image, coarse, flattened)``: when the fitted background varies by more than
    :data:`UNEVEN_BACKGROUND` x the nuclei's contrast and the flattened image holds objects (SNR >=
    :data:`EMPTY_SNR`, diameter <= :data:`FLAT_MAX_DIAMETER` x its short side), the flattened image
    (``image`` minus the surface, float32, (Y, X)) and its first look; else ``image`` itself.
    """
    coarse = _initial_diameter(image)
    if coarse.uneven > UNEVEN_BACKGROUND:
        # uneven illumination: the background on the bright side can outshine nuclei on the dark side,
        # which misleads the Otsu masks (SNR, sizing, normalization); subtract it and look again
        flat = image - evaluate_background(coarse.background, image.shape)
        c2 = _initial_diameter(flat)
        if c2.snr >= EMPTY_SNR and c2.diameter <= FLAT_MAX_DIAMETER * min(image.shape):
            log.info("uneven background (%.2f x the nuclei's contrast across the field): flattened", coarse.uneven)
            return flat, c2, True
    return image, coarse, False


def estimated_diameter(image: np.ndarray, d0: float, *, default: float) -> tuple[float, str]:
    """Nucleus diameter (px of ``image``) to start pass 1 from, and its source.

    ``d0`` is the first look's estimate; below :data:`SPARSE_CHECK_BELOW` a sparse localisation
    rendering is sized on blurred copies instead; ``default`` (the model's diameter) when nothing could
    be measured. Sources: ``"estimated"``, ``"estimated (sparse rendering)"``, ``"default"``.
    """
    d_src, src = d0, "estimated"
    if not (d0 >= SPARSE_CHECK_BELOW) and sparse_rendering_fraction(image) > SPARSE_RENDERING_THRESHOLD:
        # a super-resolution (STORM) rendering: its Otsu mask is localisation speckle, so size the
        # nuclei on blurred copies instead (nucleoscope.segment.sizing.estimate_diameter_sparse)
        d_sparse = estimate_diameter_sparse(image)
        if np.isfinite(d_sparse):
            d_src, src = d_sparse, "estimated (sparse rendering)"
    if not np.isfinite(d_src):
        d_src, src = default, "default"
    return d_src, src
