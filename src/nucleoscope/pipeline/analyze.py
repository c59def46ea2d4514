"""The main job's pure core: one image array -> labels, QC flags and measurements.

Units are settled here, once, for every segmenter: a diameter given in µm becomes px through the pixel
size, and ``scale`` (segment a resized copy) rescales both the diameter and the pixel size the segmenter
sees. Images larger than ``tile_size`` are segmented in overlapping tiles
(:func:`nucleoscope.segment.tiled.segment_large`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import InputError
from ..qc import QC_COLUMNS, QCConfig, drop_flagged, qc_flags

__all__ = ["AnalysisResult", "MAX_UPSCALE_PIXELS", "analyze", "check_sizes", "diameter_px", "measure_labels"]


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Result of :func:`analyze` for one image.

    Attributes
    ----------
    labels : (Y, X) int32
    table : pandas.DataFrame
        One row per nucleus: ``ObjectNumber``, measurements, QC flags.
    details : SegmentDetails
        The segmenter's details dataclass (:class:`nucleoscope.segment.SegmentDetails`).
    """

    labels: np.ndarray
    table: pd.DataFrame
    details: Any


def diameter_px(diameter: float | None, diameter_um: float | None, spacing: float | None) -> float | None:
    """The nucleus diameter in px of the image: ``diameter`` (px) as given, else ``diameter_um / spacing``.

    Raises
    ------
    InputError
        ``diameter_um`` without a pixel size, or a diameter that is not a finite number > 0.
    """
    if diameter is not None:
        d = float(diameter)
    elif diameter_um is not None:
        if not spacing:
            raise InputError("a nucleus diameter in µm needs the pixel size (--pixel-size or the file's metadata)")
        d = float(diameter_um) / float(spacing)
    else:
        return None
    if not (np.isfinite(d) and d > 0):
        raise InputError(f"the nucleus diameter must be a finite number > 0 px, got {d}")
    return d


#: The resized copy ``scale`` asks for may hold at most this many times the image's pixels (and 2**31
#: in all): ``--scale 1000`` on a 128 px image asked for 16 Gpx and ended in an out-of-memory message.
MAX_UPSCALE_PIXELS = 64.0


def check_sizes(shape: tuple[int, ...], scale: float, diameter: float | None) -> None:
    """Refuse a ``scale`` or a nucleus ``diameter`` (px) that cannot fit the image of ``shape``.

    Raises
    ------
    InputError
        Naming the value, the image size and the limit.
    """
    h, w = int(shape[-2]), int(shape[-1])
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    if sh * sw > MAX_UPSCALE_PIXELS * h * w or sh * sw >= 2**31:
        raise InputError(f"--scale {scale:g} would segment a {sh} x {sw} px copy of this {h} x {w} px image; "
                         f"at most {MAX_UPSCALE_PIXELS:g}x its pixels (--scale <= {MAX_UPSCALE_PIXELS ** 0.5:g})")
    if min(sh, sw) < 8:
        raise InputError(f"--scale {scale:g} shrinks this {h} x {w} px image to {sh} x {sw} px: nothing to segment")
    if diameter is not None:
        d = diameter * scale
        if d > max(sh, sw):
            raise InputError(f"a nucleus diameter of {diameter:g} px is larger than this {h} x {w} px image")
        if d < 2:
            raise InputError(f"a nucleus diameter of {d:g} px (after --scale) is too small to segment "
                             f"(at least 2 px)")


def _segment(image: np.ndarray, method: str, spacing: float | None, diameter: float | None,
             options: dict, tile_size: int | None, on_tile: Callable[[int, int], None] | None = None):
    from ..segment import segment
    from ..segment.tiled import needs_tiling, segment_large

    if tile_size and needs_tiling(image.shape, tile_size):
        return segment_large(image, method=method, spacing=spacing, diameter=diameter, tile_size=tile_size,
                             on_tile=on_tile, **options)
    return segment(image, method=method, spacing=spacing, diameter=diameter, **options)


def analyze(image: np.ndarray, *, spacing: float | None = None, saturation: float | None = None,
            method: str = "otsu", feature_set: str = "default", qc: QCConfig = QCConfig(),
            drop_flagged_nuclei: bool = False, diameter: float | None = None, diameter_um: float | None = None,
            segment_options: dict | None = None, scale: float = 1.0,
            tile_size: int | None = None,
            on_progress: Callable[[int, int, str], None] | None = None) -> AnalysisResult:
    """Segment, quality-check and measure the nuclei of one image.

    Parameters
    ----------
    image : (Y, X) float array
        Nuclear stain, values as acquired.
    spacing : float, optional
        Pixel size in µm; physical columns are NaN without it.
    saturation : float, optional
        Detector full scale for the overexposure flag; default: the image maximum.
    method : str
        Segmenter name, or ``"auto"`` (see :func:`nucleoscope.segment.resolve_method`).
    feature_set : {"shape", "default", "all"}
    qc : QCConfig
    drop_flagged_nuclei : bool
        Remove QC-flagged nuclei before measuring.
    diameter : float, optional
        Typical nucleus diameter in px of ``image``; default: each segmenter estimates it.
    diameter_um : float, optional
        The same in µm (needs ``spacing``); ``diameter`` wins when both are given.
    segment_options : dict, optional
        The method's own keyword arguments (e.g. ``config=ClassicConfig(...)``, ``model=...``).
    scale : float
        Segment the image resized by this factor (bilinear, anti-aliased when shrinking) and map the
        labels back to the full grid (:func:`nucleoscope.rescale.segment_rescaled`); the segmenter
        gets the pixel size and the diameter of the resized image, and QC and measurements use the full
        image. Shrinking (e.g. 0.25) turns the point clouds of STORM renderings and nuclei over ~100 px
        into compact blobs the model-free segmenters handle, and saves time on large images.
    tile_size : int, optional
        Segment images with a side over this many px (of the image the segmenter sees) in overlapping
        tiles (:func:`nucleoscope.segment.tiled.segment_large`); ``None`` never tiles.
    on_progress : callable, optional
        ``on_progress(done, total, step)`` as the work goes: the steps are segmenting (one per tile
        when tiled), quality control and measuring, so ``done / total`` is the fraction of steps done.
        An exception it raises stops the analysis there and propagates (a cancel between tiles or steps).

    Returns
    -------
    AnalysisResult
    """
    from ..segment import resolve_method

    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite factor > 0, got {scale}")
    image = np.asarray(image, dtype=np.float32)
    method = resolve_method(method)
    options = dict(segment_options or {})
    d = diameter_px(diameter, diameter_um, spacing)
    check_sizes(image.shape, scale, d)
    if saturation is None:
        saturation = float(image.max()) if image.size else 1.0

    def report(done: int, total: int, step: str) -> None:
        if on_progress is not None:
            on_progress(done, total, step)

    def on_tile(done: int, total: int) -> None:  # tiles, then QC and measuring
        report(done, total + 2, f"segmenting: tile {done} of {total}")

    tile_hook = on_tile if on_progress is not None else None
    report(0, 3, "segmenting")
    if scale == 1.0:
        labels, details = _segment(image, method, spacing, d, options, tile_size, tile_hook)
    else:
        from ..postprocess import relabel
        from ..rescale import segment_rescaled

        found: list = []

        def _segment_small(small: np.ndarray) -> np.ndarray:
            lab, det = _segment(small, method, spacing / scale if spacing else None,
                                d * scale if d is not None else None, options, tile_size, tile_hook)
            found.append(det)
            return lab

        labels = relabel(segment_rescaled(image, _segment_small, scale))
        details = found[0]
    n = max(int(getattr(details, "n_tiles", 0) or 0), 1)  # segmenting steps done
    report(n, n + 2, "quality control")
    flags = qc_flags(image, labels, saturation=saturation, config=qc)
    if drop_flagged_nuclei and len(flags):
        labels = drop_flagged(labels, flags)
        flags = flags[~flags["QC_Flagged"]].reset_index(drop=True)
    report(n + 1, n + 2, "measuring")
    table = _measure(image, labels, flags, spacing, feature_set, saturation)
    report(n + 2, n + 2, "done")
    return AnalysisResult(labels=labels, table=table, details=details)


def _measure(image: np.ndarray, labels: np.ndarray, flags: pd.DataFrame, spacing: float | None,
             feature_set: str, saturation: float) -> pd.DataFrame:
    from ..features import measure_nuclei

    table = measure_nuclei(image, labels, spacing=spacing, feature_set=feature_set, saturation=saturation)
    table = table.merge(flags, on="ObjectNumber", how="left", validate="one_to_one")
    for c in QC_COLUMNS:
        table[c] = table[c].fillna(False).astype(bool)
    return table


def measure_labels(image: np.ndarray, labels: np.ndarray, *, spacing: float | None = None,
                   saturation: float | None = None, feature_set: str = "default",
                   qc: QCConfig = QCConfig()) -> pd.DataFrame:
    """The table :func:`analyze` makes, for labels made elsewhere (corrected by hand, another tool's):
    the measurements and the QC flags of every nucleus of ``labels``.

    Parameters
    ----------
    image : (Y, X) float array
        Nuclear stain, values as acquired.
    labels : (Y, X) int array
        0 = background.
    spacing, saturation, feature_set, qc
        As for :func:`analyze`.

    Returns
    -------
    pandas.DataFrame
        One row per nucleus: ``ObjectNumber``, measurements, QC flags.
    """
    image = np.asarray(image, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise InputError(f"labels of shape {labels.shape} do not fit the image's {image.shape}")
    labels = labels.astype(np.int32, copy=False)
    if saturation is None:
        saturation = float(image.max()) if image.size else 1.0
    flags = qc_flags(image, labels, saturation=saturation, config=qc)
    return _measure(image, labels, flags, spacing, feature_set, saturation)
