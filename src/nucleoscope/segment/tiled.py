"""Any segmenter on an image of any size: overlapping tiles, image-level decisions made once.

A segmenter run tile by tile (:func:`nucleoscope.tiling.segment_tiled` stitches the labels) would make
its image-level decisions per tile: the nucleus size it estimates, its auto-threshold, the filter of
objects below a fraction of the mean area. :func:`segment_large` makes them once for the whole image
and gives every tile the same:

- **diameter**: given, or the median of the segmenter's own estimate on up to five full-resolution
  crops (the centre and the four quadrants' centres; downsampling the whole image would shrink small
  nuclei below what the segmenters can size);
- **threshold** (``otsu``, ``classic``, ``tissue``): the auto-threshold of the whole smoothed image, the
  smoothing done tile by tile (exact: a Gaussian is local) and Otsu's histogram summed over the tiles
  (:func:`nucleoscope.segment.classic.otsu_of_parts`);
- **relative-area filter** (classic methods): off in the tiles, applied once to the stitched labels.

With these, ``otsu`` and ``tissue`` give the labels of the untiled segmentation (up to numbering) for
nuclei smaller than the overlap, with one exception: their hole filling of the whole foreground also
fills a background pocket enclosed by a ring of touching nuclei (one giant object), and a ring cut by a
tile stays open there, its nuclei split as usual. ``classic`` (morphological reconstruction propagates across the image)
and ``nuset`` (each tile is normalized by its own foreground) come close but not bit-exact.
Memory: the image, the labels and one tile's working set (``tissue`` with Li's or Shanbhag's threshold
also gathers one float32 copy of the smoothed image while the threshold is planned). A lazily read image
(a zarr array, a memmap: :class:`LazyImage`) is read a crop or a tile at a time, and with a sink that
writes to disk (``sink=``, :class:`nucleoscope.io.ZarrLabelSink`) the labels are not held either: then
one tile's working set and a band of label rows as wide as the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tiling import LabelSink, TilingConfig, iter_tiles, segment_tiled
from .details import SegmentDetails

__all__ = ["LazyImage", "TiledDetails", "as_tile_source", "fitted_tile", "needs_tiling", "plan_overlap",
           "segment_large"]

_CLASSIC = ("otsu", "classic", "tissue")
#: crops (px per side, at most) the diameter is estimated on when it is not given
_PLAN_CROP = 1024


class LazyImage:
    """A (Y, X) image read tile by tile: any sliceable array (zarr, memory-mapped TIFF) seen as float32.

    Slicing returns a float32 ndarray of that part only, divided by ``divisor``; nothing else is read.

    Parameters
    ----------
    array : array-like, (Y, X)
        Supports numpy slicing with two slices; ``shape`` and ``dtype`` attributes.
    divisor : float
        Every value read is divided by this (1.0: values as stored).
    """

    def __init__(self, array: Any, divisor: float = 1.0) -> None:
        if len(array.shape) != 2:
            raise ValueError(f"a lazy image must be (Y, X), got shape {tuple(array.shape)}")
        self.array = array
        self.divisor = float(divisor)
        self.shape = (int(array.shape[0]), int(array.shape[1]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple) and key and key[0] is Ellipsis:
            key = key[1:]
        part = np.asarray(self.array[key], dtype=np.float32)
        return part / np.float32(self.divisor) if self.divisor != 1.0 else part

    def divided(self, factor: float) -> "LazyImage":
        """The same image with every value divided by ``factor`` as well."""
        return LazyImage(self.array, self.divisor * float(factor))

    def value_range(self, tile: int = 4096) -> tuple[float, float]:
        """(min, max) of the values read, tile by tile."""
        lo, hi = math.inf, -math.inf
        for y in range(0, self.shape[0], tile):
            for x in range(0, self.shape[1], tile):
                part = self[y:y + tile, x:x + tile]
                lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
        return lo, hi


def as_tile_source(image: Any) -> np.ndarray | LazyImage:
    """An in-memory image as a float32 ndarray (as before); a lazy one (a memmap, a zarr array, anything
    sliceable that is not an ndarray) as a :class:`LazyImage`, never read whole."""
    if isinstance(image, LazyImage):
        return image
    if isinstance(image, np.ndarray) and not isinstance(image, np.memmap):
        return np.asarray(image, dtype=np.float32)
    return LazyImage(image)


@dataclass
class TiledDetails(SegmentDetails):
    """What :func:`segment_large` did (``diameter_px``: the diameter every tile was given).

    Attributes
    ----------
    method : str
    tile_size, overlap : int
        Tile side (:func:`fitted_tile`, at most the requested one) and minimum overlap of neighbouring
        tiles (px).
    n_tiles : int
    diameter_source : str
        ``"given"`` or ``"estimated on N crops"``.
    threshold : float
        The threshold every tile cut at (classic methods; NaN otherwise).
    """

    method: str
    tile_size: int
    overlap: int
    n_tiles: int
    diameter_source: str
    threshold: float = math.nan


def needs_tiling(shape: tuple[int, ...], tile_size: int) -> bool:
    """Whether an image of ``shape`` (..., Y, X) is larger than one tile."""
    return max(int(shape[-2]), int(shape[-1])) > int(tile_size)


def plan_overlap(diameter: float, tile_size: int) -> int:
    """Tile overlap (px) for nuclei of ``diameter`` px: each tile's core keeps ``overlap // 2`` >= twice
    the typical diameter from a cut, so even a nucleus twice the typical size lies whole in its tile;
    at least 64 px, at most half a tile."""
    return int(min(max(64, math.ceil(4 * diameter)), tile_size // 2))


def fitted_tile(shape: tuple[int, ...], tile_size: int, overlap: int) -> int:
    """The smallest tile side (<= ``tile_size``) that covers ``shape`` with as few tiles as ``tile_size``.

    Tiles of exactly ``tile_size`` spread over an axis barely longer than one or two tiles overlap by
    half a tile: 8192 px in 4096 px tiles needs 3 of them (24% more pixels than the image, twice the
    overlap's share). Shrinking the tiles to ``ceil((size + (n - 1) * overlap) / n)`` keeps the count
    ``n`` and the minimum overlap, and segments ~2% more pixels than the image instead.
    """
    side, fits = 0, 0
    for size in (int(shape[-2]), int(shape[-1])):
        if size <= tile_size:  # one tile along this axis: it must stay one (tiles are square)
            fits = max(fits, size)
            continue
        n = math.ceil((size - overlap) / (tile_size - overlap))
        side = max(side, math.ceil((size + (n - 1) * overlap) / n))
    return max(side, fits, overlap + 1) if side else int(tile_size)


def _crop_windows(shape: tuple[int, int], side: int) -> list[tuple[slice, slice]]:
    h, w = shape
    sy, sx = min(side, h), min(side, w)
    centres = [(h / 2, w / 2), (h / 4, w / 4), (h / 4, 3 * w / 4), (3 * h / 4, w / 4), (3 * h / 4, 3 * w / 4)]
    out = []
    for cy, cx in centres:
        y0 = int(np.clip(round(cy - sy / 2), 0, h - sy))
        x0 = int(np.clip(round(cx - sx / 2), 0, w - sx))
        win = (slice(y0, y0 + sy), slice(x0, x0 + sx))
        if win not in out:
            out.append(win)
    return out


def _plan_diameter(image: np.ndarray, method: str, spacing: float | None, options: dict) -> tuple[float, int]:
    """Median of the segmenter's diameter on up to five crops; (NaN, 0) when none sized any nucleus."""
    from . import segment

    found = []
    for win in _crop_windows(image.shape, _PLAN_CROP):
        _, det = segment(np.ascontiguousarray(image[win]), method=method, spacing=spacing, **options)
        d = float(getattr(det, "diameter_px", math.nan))
        if np.isfinite(d) and d > 0:
            found.append(d)
    return (float(np.median(found)), len(found)) if found else (math.nan, 0)


def segment_large(image: Any, *, method: str, spacing: float | None = None,
                  diameter: float | None = None, tile_size: int = 4096,
                  on_tile: Callable[[int, int], None] | None = None, sink: LabelSink | None = None,
                  **options: Any) -> tuple[Any, TiledDetails]:
    """Segment a (Y, X) image of any size in overlapping tiles with one segmenter of the contract.

    Parameters
    ----------
    image : (Y, X) array-like
        An ndarray, or an array read lazily (a zarr array, a memory-mapped TIFF, :class:`LazyImage`):
        then only crops and tiles of it are read, as float32, and never the whole image at once.
    method : str
        A registered segmenter (:data:`nucleoscope.segment.METHODS`).
    spacing : float, optional
        Pixel size in µm.
    diameter : float, optional
        Typical nucleus diameter in px; default: planned on crops (see the module docstring).
    tile_size : int
        Tile side in px.
    on_tile : callable, optional
        ``on_tile(done, total)`` after each tile is segmented (a progress bar); an exception it raises
        stops the segmentation there and propagates (a cancel).
    sink : LabelSink, optional
        Where the stitched labels go (:func:`nucleoscope.tiling.segment_tiled`); default in memory.
        With a lazy image and a sink that writes to disk (:class:`nucleoscope.io.ZarrLabelSink`) the
        memory is bounded by the tile size, not the image size.
    **options
        The method's own options, given to every tile.

    Returns
    -------
    labels : (Y, X) int32, or what ``sink.finish`` returns
        Numbered 1..N in raster order of each nucleus's first pixel.
    details : TiledDetails
    """
    import time

    from . import segment

    t0 = time.perf_counter()
    image = as_tile_source(image)
    timings: dict[str, float] = {}
    if diameter is not None:
        d, source = float(diameter), "given"
    else:
        d, n = _plan_diameter(image, method, spacing, options)
        source = f"estimated on {n} crops"
        if not np.isfinite(d):  # nothing to size anywhere: the segmenter's default on each tile
            d, source = 20.0, "default (no nucleus found on the crops)"
    overlap = plan_overlap(d, tile_size)
    tiling = TilingConfig(tile=fitted_tile(image.shape, int(tile_size), overlap), overlap=overlap)
    timings["plan_diameter"] = time.perf_counter() - t0
    tile_options = dict(options)
    relative = 0.0
    threshold = math.nan
    if method in _CLASSIC:
        from skimage.filters import gaussian

        from .classic import ClassicConfig, tiled_config

        cfg = options.get("config") or ClassicConfig()
        relative = cfg.postprocess.min_relative_area
        # the whole image smoothed tile by tile: a Gaussian (truncated at 4 sigma) is local, so each
        # tile's core is the untiled result exactly when the overlap covers it
        smooth_tiles = TilingConfig(tile=int(tile_size), overlap=max(16, 2 * math.ceil(4 * cfg.smooth_sigma) + 2))

        def smoothed_parts(img: np.ndarray, sigma: float):
            for t in iter_tiles(img.shape, smooth_tiles):
                window = np.ascontiguousarray(img[t.window])
                yield gaussian(window, sigma=sigma, preserve_range=True)[t.core_in_window]

        tile_options["config"] = tiled_config(image, method, cfg, smoothed_parts)
        threshold = float(tile_options["config"].threshold) if tile_options["config"].threshold is not None else math.nan
        timings["plan_threshold"] = time.perf_counter() - t0 - timings["plan_diameter"]
    flattened: list[bool] = []
    warnings: list[str] = []
    n_tiles = 0

    def run_tile(tile: np.ndarray) -> np.ndarray:
        nonlocal n_tiles
        labels, det = segment(tile, method=method, spacing=spacing, diameter=d, **tile_options)
        flattened.append(bool(getattr(det, "flattened", False)))
        for w in getattr(det, "warnings", None) or []:
            if w not in warnings:
                warnings.append(w)
        n_tiles += 1
        if on_tile is not None:
            on_tile(n_tiles, total)
        return labels

    total = sum(1 for _ in iter_tiles(image.shape, tiling)) if on_tile is not None else 0

    t = time.perf_counter()
    # the untiled pipelines drop objects below this fraction of the image's mean area: done once, on the
    # stitched labels, in the same renumbering pass
    labels = segment_tiled(image, run_tile, tiling, sink=sink, min_relative_area=relative)
    timings["tiles"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return labels, TiledDetails(method=method, tile_size=tiling.tile, overlap=overlap, n_tiles=n_tiles,
                                diameter_source=source, threshold=threshold, diameter_px=d,
                                flattened=any(flattened), timings=timings, warnings=warnings)
