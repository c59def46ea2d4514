"""Foreground (cell) mask by a graph cut: the whole-cell paper's MRF (SPEC §5).

Each pixel's normalised intensity ``x`` in [0, 1] is read as a foreground probability; the unary costs
are ``-log(alpha x)`` (foreground) and ``-log((1 - alpha)(1 - x))`` (background), ``alpha`` the
foreground prior, and every pair of 4-neighbours with different labels costs the constant ``kappa``.
The minimum cut (PyMaxflow's Boykov-Kolmogorov max-flow) gives the exact MAP labelling.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_ALPHA", "DEFAULT_KAPPA", "graph_cut_foreground", "normalize_unit"]

#: foreground prior and cut penalty, chosen on aits_u2os_wholecell/val (bench/cells.py)
DEFAULT_ALPHA = 0.6
DEFAULT_KAPPA = 1.0

_EPS = 1e-4  # keeps log() finite where x is exactly 0 or 1


def normalize_unit(image: np.ndarray, low: float = 1.0, high: float = 99.5, sigma: float = 2.0) -> np.ndarray:
    """The cell channel as a foreground probability: smoothed, log-compressed, Otsu threshold at 0.5.

    Cytoplasm stains are dim next to a few bright cells, so the Otsu threshold of the raw intensities
    lies far above most cytoplasm; on ``log1p`` of the Gaussian-smoothed (``sigma`` px) image it
    separates cells from background. The ``low`` percentile maps to 0, that threshold to 0.5 and the
    ``high`` percentile to 1 (piecewise linear, clipped), so the graph cut's ``alpha`` moves the
    decision around the Otsu level.

    Returns
    -------
    (Y, X) float32 in [0, 1]; all zeros for a constant image.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu

    img = np.asarray(image, dtype=np.float32)
    if sigma > 0:
        img = gaussian_filter(img, sigma)
    img = np.log1p(np.maximum(img - float(img.min(initial=0)), 0))
    lo, hi = np.percentile(img, [low, high]) if img.size else (0.0, 0.0)
    if not hi > lo:
        return np.zeros(img.shape, np.float32)
    t = float(np.clip(threshold_otsu(np.clip(img, lo, hi)), lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo)))
    x = np.where(img < t, 0.5 * (img - lo) / (t - lo), 0.5 + 0.5 * (img - t) / (hi - t))
    return np.clip(x, 0, 1).astype(np.float32)


def graph_cut_foreground(prob: np.ndarray, *, alpha: float = DEFAULT_ALPHA, kappa: float = DEFAULT_KAPPA) -> np.ndarray:
    """Minimum-cut foreground mask of a foreground-probability image.

    Parameters
    ----------
    prob : (Y, X) float array in [0, 1]
        Per-pixel foreground probability (a normalised cell-channel image, or a pixel classifier's
        output).
    alpha : float in (0, 1)
        Foreground prior: larger values label more pixels foreground.
    kappa : float >= 0
        Cost of each pair of 4-connected neighbours labelled differently (smoothness); 0 gives the
        pixelwise decision ``alpha x > (1 - alpha)(1 - x)``.

    Returns
    -------
    (Y, X) bool, True = foreground.
    """
    import maxflow

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    x = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1 - _EPS)
    cost_fg = -np.log(alpha * x)
    cost_bg = -np.log((1 - alpha) * (1 - x))
    g = maxflow.Graph[float]()
    nodes = g.add_grid_nodes(x.shape)
    if kappa > 0:
        g.add_grid_edges(nodes, kappa, symmetric=True)  # default structure: 4-neighbourhood
    # a node left on the source side (foreground) cuts its sink edge: sink capacity = foreground cost
    g.add_grid_tedges(nodes, cost_bg, cost_fg)
    g.maxflow()
    return ~g.get_grid_segments(nodes)
