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


def intensity_batched(
    values: np.ndarray,
    lab: np.ndarray,
    n: int,
    *,
    background: float = float("nan"),
    saturation: float | None = None,
) -> np.ndarray:
    """:func:`intensity_features` of every nucleus, (N, 16) float64 in ``INTENSITY_COLUMNS`` order.

    One sort of all pixels by (nucleus, value) serves every nucleus's min, max and percentiles (the same
    linear rule and arithmetic as the per-nucleus function), a second the MAD's median; sums by
    ``np.add.reduceat`` (equal to rounding). Every nucleus must have at least one pixel.

    Parameters
    ----------
    values : (P,) float64 ndarray
        Pixel intensities.
    lab : (P,) intp ndarray
        Nucleus 0..n-1 of each pixel.
    n : int
    background, saturation : see :func:`intensity_features`
    """
    order = np.lexsort((values, lab))
    v, ls = values[order], lab[order]
    m = np.bincount(lab, minlength=n)
    start = np.concatenate([[0], np.cumsum(m)[:-1]])
    q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])[None, :] * (m - 1)[:, None]
    lo = np.floor(q).astype(np.intp)
    w = q - lo
    hi = np.minimum(lo + 1, (m - 1)[:, None])
    p = v[start[:, None] + lo] * (1 - w) + v[start[:, None] + hi] * w  # (N, 5): p05 p25 p50 p75 p95
    total = np.add.reduceat(v, start)
    mean = total / m
    dev = v - mean[ls]
    sd = np.sqrt(np.add.reduceat(dev * dev, start) / m)
    d = np.abs(v - p[ls, 2])
    ds = d[np.lexsort((d, ls))]
    mid = start + m // 2
    mad = np.where(m % 2 == 1, ds[mid], (ds[np.maximum(mid - 1, start)] + ds[mid]) / 2)
    out = np.empty((n, len(INTENSITY_COLUMNS)))
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = total, mean, sd, mad
    out[:, 4], out[:, 5] = v[start], v[start + m - 1]
    out[:, 6], out[:, 7], out[:, 8], out[:, 9], out[:, 10] = p[:, 2], p[:, 1], p[:, 3], p[:, 0], p[:, 4]
    out[:, 11] = background
    out[:, 12] = mean - background
    out[:, 13] = total - background * m
    out[:, 14] = mean / background if background != 0 else np.nan
    if saturation is None:
        out[:, 15] = np.nan
    else:
        out[:, 15] = np.bincount(lab, weights=values >= saturation, minlength=n) / m
    return out
