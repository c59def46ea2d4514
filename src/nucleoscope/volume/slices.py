"""3D nuclei from any 2D segmenter: segment every z-slice, link the slices (:mod:`.link`).

The image-level decisions a 2D segmenter makes per image are made once for the whole stack, as the
tiler does for tiles (:mod:`nucleoscope.segment.tiled`): the nucleus diameter (given, or the
segmenter's own estimate on the maximum-intensity projection) and, for the classic methods, the
auto-threshold (Otsu's over all smoothed slices), so that a slice above or below every nucleus is cut at
the stack's level rather than splitting its noise at its own. The relative-area filter is off in the
slices (a nucleus's top slice is small by nature).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..segment.details import SegmentDetails
from .link import link_slices

__all__ = ["VolumeDetails", "segment_by_slices"]

_CLASSIC = ("otsu", "classic", "tissue")


@dataclass
class VolumeDetails(SegmentDetails):
    """What :func:`segment_by_slices` did (``diameter_px``: the lateral diameter every slice got).

    Attributes
    ----------
    method : str
    n_slices : int
    objects_2d : int
        2D objects over all slices, before linking.
    threshold : float
        The threshold every slice was cut at (classic methods; NaN otherwise).
    """

    method: str = ""
    n_slices: int = 0
    objects_2d: int = 0
    threshold: float = math.nan


def _stack_config(stack: np.ndarray, method: str, options: dict) -> tuple[dict, float]:
    from skimage.filters import gaussian

    from ..segment.classic import ClassicConfig, tiled_config

    cfg = options.get("config") or ClassicConfig()
    n_z, h, w = stack.shape

    def parts(img: np.ndarray, sigma: float):  # ``img`` is the stack as (Z*Y, X): smooth each slice
        for s in img.reshape(n_z, h, w):
            yield gaussian(s, sigma=sigma, preserve_range=True)

    cfg = tiled_config(stack.reshape(n_z * h, w), method, cfg, parts)
    return {**options, "config": cfg}, float(cfg.threshold) if cfg.threshold is not None else math.nan


def segment_by_slices(stack: np.ndarray, *, method: str = "otsu", spacing: float | None = None,
                      diameter: float | None = None, min_iou: float = 0.2, neck_ratio: float | None = 0.5,
                      min_slices: int = 2, **options: Any) -> tuple[np.ndarray, VolumeDetails]:
    """Segment a (Z, Y, X) stack slice by slice with a 2D segmenter and link the slices into 3D nuclei.

    Parameters
    ----------
    stack : (Z, Y, X) float
    method : str
        A registered 2D segmenter (:data:`nucleoscope.segment.METHODS`).
    spacing : float, optional
        Lateral pixel size in µm.
    diameter : float, optional
        Typical lateral nucleus diameter in px; default: estimated once on the max projection.
    min_iou, neck_ratio, min_slices
        Linking (:func:`nucleoscope.volume.link_slices`).
    **options
        The segmenter's own options.

    Returns
    -------
    labels : (Z, Y, X) int32
    details : VolumeDetails
    """
    from ..segment import segment

    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) stack, got shape {stack.shape}")
    t0 = time.perf_counter()
    if diameter is None:
        _, det = segment(stack.max(axis=0), method=method, spacing=spacing, **options)
        d = float(getattr(det, "diameter_px", math.nan))
        diameter = d if np.isfinite(d) and d > 0 else None
    threshold = math.nan
    if method in _CLASSIC:
        options, threshold = _stack_config(stack, method, options)
    t1 = time.perf_counter()
    slices = np.zeros(stack.shape, dtype=np.int32)
    warnings: list[str] = []
    for z in range(stack.shape[0]):
        slices[z], det = segment(stack[z], method=method, spacing=spacing, diameter=diameter, **options)
        warnings += [w for w in getattr(det, "warnings", None) or [] if w not in warnings]
    t2 = time.perf_counter()
    n2d = int(sum(np.unique(s[s > 0]).size for s in slices))
    labels = link_slices(slices, min_iou=min_iou, neck_ratio=neck_ratio, min_slices=min_slices)
    t3 = time.perf_counter()
    return labels, VolumeDetails(
        method=method, n_slices=int(stack.shape[0]), objects_2d=n2d, threshold=threshold,
        diameter_px=float(diameter) if diameter else math.nan, warnings=warnings,
        timings={"plan": t1 - t0, "segment": t2 - t1, "link": t3 - t2})
