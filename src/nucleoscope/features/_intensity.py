"""Intensity statistics of one nucleus's pixels, absolute and relative to the image background."""

from __future__ import annotations

import numpy as np

__all__ = ["INTENSITY_COLUMNS", "intensity_features", "background_level"]

INTENSITY_COLUMNS: list[str] = [
    "Intensity_IntegratedIntensity",
    "Intensity_MeanIntensity",
    "Intensity_StdIntensity",
    "Intensity_MADIntensity",
    "Intensity_MinIntensity",
    "Intensity_MaxIntensity",
    "Intensity_MedianIntensity",
    "Intensity_LowerQuartileIntensity",
    "Intensity_UpperQuartileIntensity",
    "Intensity_Percentile05Intensity",
    "Intensity_Percentile95Intensity",
    "Intensity_Background",
    "Intensity_MeanIntensity_MinusBackground",
    "Intensity_IntegratedIntensity_MinusBackground",
    "Intensity_MeanIntensity_RelBackground",
    "Intensity_SaturatedFraction",
]


def background_level(image: np.ndarray, labels: np.ndarray) -> float:
    """Median of the background (label 0) pixels; NaN when every pixel belongs to a nucleus.

    Parameters
    ----------
    image : (Y, X) float ndarray
    labels : (Y, X) int ndarray, 0 = background
    """
    bg = image[labels == 0]
    return float(np.median(bg)) if bg.size else float("nan")


def intensity_features(
    values: np.ndarray, *, background: float = float("nan"), saturation: float | None = None
) -> dict[str, float]:
    """Intensity statistics of one nucleus.

    Parameters
    ----------
    values : (N,) float ndarray
        The nucleus's pixel values (image units, no rescaling).
    background : float
        Background level (see :func:`background_level`); NaN leaves the relative columns NaN.
    saturation : float, optional
        Pixels ``>= saturation`` count as saturated; without it ``Intensity_SaturatedFraction`` is NaN.

    Returns
    -------
    dict
        ``INTENSITY_COLUMNS`` -> value: integrated (sum), mean, population standard deviation, median
        absolute deviation from the median, min, max, median, 25th/75th/5th/95th percentiles (linear
        interpolation, numpy's default), the background level, mean and integrated intensity minus
        the background (integrated: sum of ``value - background``), mean / background, and the
        fraction of pixels at or above ``saturation``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    out = dict.fromkeys(INTENSITY_COLUMNS, float("nan"))
    out["Intensity_Background"] = float(background)
    if v.size == 0:
        return out
    # One sort serves min, max and every percentile (numpy's "linear" rule, without its overhead).
    v = np.sort(v)
    q = np.array([0.05, 0.25, 0.5, 0.75, 0.95]) * (v.size - 1)
    lo = np.floor(q).astype(np.intp)
    w = q - lo
    p05, p25, p50, p75, p95 = v[lo] * (1 - w) + v[np.minimum(lo + 1, v.size - 1)] * w
    total, mean = float(v.sum()), float(v.mean())
    out.update(
        {
            "Intensity_IntegratedIntensity": total,
            "Intensity_MeanIntensity": mean,
            "Intensity_StdIntensity": float(v.std()),
            "Intensity_MADIntensity": float(np.median(np.abs(v - p50))),
            "Intensity_MinIntensity": float(v[0]),
            "Intensity_MaxIntensity": float(v[-1]),
            "Intensity_MedianIntensity": float(p50),
            "Intensity_LowerQuartileIntensity": float(p25),
            "Intensity_UpperQuartileIntensity": float(p75),
            "Intensity_Percentile05Intensity": float(p05),
            "Intensity_Percentile95Intensity": float(p95),
            "Intensity_MeanIntensity_MinusBackground": mean - background,
            "Intensity_IntegratedIntensity_MinusBackground": total - background * v.size,
            "Intensity_MeanIntensity_RelBackground": mean / background if background != 0 else float("nan"),
        }
    )
    if saturation is not None:
        out["Intensity_SaturatedFraction"] = float((v >= saturation).mean())
    return out
