"""Model-free nucleus segmentation: three marker-watershed pipelines.

* :func:`segment_scenmed` — SCENMED's pipeline (SPEC §4): morphological reconstruction, Sobel edges,
  markers from the edges (foreground) and the lowest 1% of pixel values (background), marker watershed
  on the edge map; touching nuclei are then split by distance-transform markers.
* :func:`segment_otsu` — Otsu threshold + distance-transform peaks + watershed, the baseline of NuSeT.
* :func:`segment_tissue` — SCENMED's tissue variant: Shanbhag auto-threshold, Gaussian blur of the
  binary mask, re-binarisation and distance watershed (as ImageJ's binary "Watershed").

All take an image ``(Y, X)`` (any real dtype, no prior normalisation needed) and return
``(labels, ClassicDetails)`` with ``labels`` int32, 0 = background, 1..N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, sobel, threshold_li, threshold_otsu
from skimage.morphology import disk, reconstruction

from ..postprocess import PostprocessConfig, postprocess, seeded_watershed
from .details import SegmentDetails

__all__ = [
    "ClassicConfig",
    "ClassicDetails",
    "estimate_object_diameter",
    "otsu_of_parts",
    "tiled_config",
    "segment_otsu",
    "segment_scenmed",
    "segment_tissue",
    "split_touching",
    "threshold_shanbhag",
]

# A typical mammalian nucleus is 8–15 µm across; 10 µm sizes the splitting step when the pixel size is
# known and no diameter is given.
TYPICAL_NUCLEUS_UM = 10.0


@dataclass(frozen=True)
class ClassicConfig:
    """Parameters of the classic pipelines (defaults work on 10x–60x wide-field nuclei).

    Attributes
    ----------
    smooth_sigma : float
        Gaussian pre-smoothing, in px (0 disables).
    diameter : float or None
        Typical nucleus diameter in px. ``None``: ``diameter_um / spacing`` when the pixel size is
        known, else estimated from the foreground mask (:func:`estimate_object_diameter`).
    diameter_um : float or None
        Typical nucleus diameter in µm, used with a known pixel size when ``diameter`` is None.
    split : bool
        Split touching nuclei by distance-transform markers.
    peak_min_distance : float
        Minimum distance between two nucleus centres, as a fraction of the diameter (0.35: two nuclei
        may overlap by a third before they merge into one marker).
    background_percentile : float
        SCENMED: the lowest ``background_percentile`` % of pixel values are background markers.
    min_area_um2 : float or None
        Absolute minimum nucleus area in µm² (needs a pixel size); overrides ``postprocess.min_size``.
    tissue_threshold : {"shanbhag", "li", "otsu"}
        Auto-threshold of the tissue pipeline. SCENMED used ImageJ's Shanbhag; on wide-field images with
        a small, bright foreground Shanbhag lands high in the nuclei (it balances fuzzy entropies, not
        class variances) and cuts them down, so the default is Li's minimum cross-entropy, which sits
        lower; "shanbhag" reproduces the paper.
    postprocess : PostprocessConfig
        Hole filling and small-object removal (default: < 10 px, and < 1/5 of the mean area as NuSeT).
    threshold : float or None
        Foreground threshold of the smoothed image, in the image's units; ``None`` (default): the
        method's auto-threshold of this image. The tiles of a large image get the whole image's
        (:func:`tiled_config`), so every tile cuts at the same level.
    """

    smooth_sigma: float = 1.0
    diameter: float | None = None
    diameter_um: float | None = TYPICAL_NUCLEUS_UM
    split: bool = True
    peak_min_distance: float = 0.35
    background_percentile: float = 1.0
    min_area_um2: float | None = None
    tissue_threshold: str = "li"
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
        if self.diameter is not None and self.diameter <= 0:
            raise ValueError(f"diameter must be > 0 px, got {self.diameter}")
        if not 0 < self.peak_min_distance <= 1:
            raise ValueError(f"peak_min_distance must be in (0, 1], got {self.peak_min_distance}")
        if self.tissue_threshold not in ("shanbhag", "li", "otsu"):
            raise ValueError(f"tissue_threshold must be 'shanbhag', 'li' or 'otsu', got {self.tissue_threshold!r}")
        if not 0 < self.background_percentile < 50:
            raise ValueError(f"background_percentile must be in (0, 50), got {self.background_percentile}")


@dataclass
class ClassicDetails(SegmentDetails):
    """What a classic pipeline decided for one image (and :class:`SegmentDetails`' shared fields)."""

    method: str
    threshold: float
    n_objects: int


# Float32 values beyond ~1e18 overflow when squared (Otsu's between-class variance, Sobel magnitude) and
# values below ~1e-19 underflow; the pipelines are scale-invariant, so such images are rescaled first.
_SAFE_MAGNITUDE = (1e-6, 1e12)


def _as_float(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image as float32 and the factor it was divided by (1.0 unless its magnitude is extreme)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D image (Y, X), got shape {image.shape}")
    img = image.astype(np.float64 if image.dtype == np.float64 else np.float32, copy=False)
    # the larger magnitude of the two extremes, without np.abs's full-size temporary
    peak = max(abs(float(img.max())), abs(float(img.min()))) if img.size else 0.0
    if np.isfinite(peak) and peak > 0 and not _SAFE_MAGNITUDE[0] <= peak <= _SAFE_MAGNITUDE[1]:
        return (img / peak).astype(np.float32), peak
    return img.astype(np.float32, copy=False), 1.0


def _config(config: ClassicConfig | None, diameter: float | None) -> ClassicConfig:
    config = config or ClassicConfig()
    return config if diameter is None else replace(config, diameter=float(diameter))


def _threshold(smoothed: np.ndarray, config: ClassicConfig, scale: float, auto) -> float:
    """``config.threshold`` (image units) on the copy divided by ``scale`` (:func:`_as_float`), else ``auto``."""
    if config.threshold is not None:
        return float(config.threshold) / scale
    return float(auto(smoothed))


def _is_flat(image: np.ndarray) -> bool:
    """A constant (or numerically constant) image holds no nuclei."""
    lo, hi = float(image.min()), float(image.max())
    return not hi - lo > 1e-6 * max(1.0, abs(hi))


def estimate_object_diameter(mask: np.ndarray) -> float:
    """Typical object diameter in px from a foreground mask; NaN when the mask is empty.

    Clumps of touching nuclei inflate a plain median of component sizes, so the estimate uses the
    compact (solidity ≥ 0.9, i.e. most likely single) components when there are enough of them.
    """
    lab, n = ndi.label(mask)
    if n == 0:
        return float("nan")
    areas = np.bincount(lab.ravel())[1:].astype(float)
    keep = areas >= 9
    if not keep.any():
        return float(2 * math.sqrt(areas.max() / math.pi))
    # solidity via convex hull is expensive; the filled-bbox ratio is a cheap proxy for compactness
    slices = ndi.find_objects(lab)
    extent = np.array([a / ((s[0].stop - s[0].start) * (s[1].stop - s[1].start)) for a, s in zip(areas, slices)])
    single = keep & (extent >= 0.6)
    use = areas[single] if single.sum() >= 3 else areas[keep]
    return float(2 * math.sqrt(np.median(use) / math.pi))


def _diameter(config: ClassicConfig, spacing: float | None, mask: np.ndarray) -> float:
    if config.diameter is not None:
        return float(config.diameter)
    if spacing and config.diameter_um:
        return float(config.diameter_um / spacing)
    d = estimate_object_diameter(mask)
    return d if np.isfinite(d) else 20.0


def split_touching(mask: np.ndarray, diameter: float, *, min_distance_frac: float = 0.35,
                   surface: np.ndarray | None = None) -> np.ndarray:
    """Cut a binary mask into nuclei with distance-transform markers and a watershed.

    Parameters
    ----------
    mask : (Y, X) bool array
        Foreground.
    diameter : float
        Typical nucleus diameter in px; sets the smoothing of the distance map and the minimum
        distance between two centres (``min_distance_frac * diameter``).
    surface : (Y, X) float array, optional
        Relief to flood instead of the negated distance map (e.g. an edge map).

    Returns
    -------
    labels : (Y, X) int32
    """
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    dist = ndi.distance_transform_edt(mask)
    # smoothing merges the shallow double peaks an elongated nucleus produces
    dist_s = ndi.gaussian_filter(dist, sigma=max(diameter / 10.0, 0.5))
    min_dist = max(int(round(min_distance_frac * diameter)), 1)
    comp, _ = ndi.label(mask)
    peaks = peak_local_max(dist_s, min_distance=min_dist, labels=comp, exclude_border=False)
    seeds = np.zeros(mask.shape, dtype=np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # every component gets at least one seed, so none is lost
    unseeded = np.setdiff1d(np.unique(comp[mask]), np.unique(comp[seeds > 0]))
    if unseeded.size:
        centres = ndi.maximum_position(dist_s, comp, unseeded)
        start = len(peaks) + 1
        for k, (y, x) in enumerate(centres):
            seeds[int(y), int(x)] = start + k
    relief = -dist_s if surface is None else surface
    return seeded_watershed(relief, seeds, mask)


def _finish(labels: np.ndarray, config: ClassicConfig, spacing: float | None) -> np.ndarray:
    pp = config.postprocess
    if config.min_area_um2 is not None and spacing:
        pp = PostprocessConfig(min_size=config.min_area_um2 / spacing**2, min_relative_area=pp.min_relative_area,
                               fill_holes=pp.fill_holes)
    return postprocess(labels, pp)


def _smooth(img: np.ndarray, config: ClassicConfig) -> np.ndarray:
    return gaussian(img, sigma=config.smooth_sigma, preserve_range=True) if config.smooth_sigma else img


def _instances(mask: np.ndarray, diameter: float, config: ClassicConfig, spacing: float | None) -> np.ndarray:
    """Foreground mask -> cleaned instance labels (split touching nuclei if configured)."""
    if config.split:
        labels = split_touching(mask, diameter, min_distance_frac=config.peak_min_distance)
    else:
        labels = ndi.label(mask)[0].astype(np.int32)
    return _finish(labels, config, spacing)


def _empty(image: np.ndarray, method: str) -> tuple[np.ndarray, ClassicDetails]:
    return np.zeros(image.shape, dtype=np.int32), ClassicDetails(method, float("nan"), 0)


def segment_otsu(image: np.ndarray, *, spacing: float | None = None, diameter: float | None = None,
                 config: ClassicConfig | None = None) -> tuple[np.ndarray, ClassicDetails]:
    """Otsu threshold, distance-transform peaks and watershed.

    Parameters
    ----------
    image : (Y, X) array
        Nuclear stain, bright nuclei on a dark background.
    spacing : float, optional
        Pixel size in µm; sizes the splitting step (``config.diameter_um``) when given.
    diameter : float, optional
        Typical nucleus diameter in px; overrides ``config.diameter`` (the segmenter contract's
        ``diameter``, see :func:`nucleoscope.segment.segment`).
    config : ClassicConfig, optional

    Returns
    -------
    labels : (Y, X) int32
    details : ClassicDetails
    """
    config = _config(config, diameter)
    img, scale = _as_float(image)
    if _is_flat(img):
        return _empty(img, "otsu")
    sm = _smooth(img, config)
    t = _threshold(sm, config, scale, threshold_otsu)
    mask = ndi.binary_fill_holes(sm > t)
    diameter = _diameter(config, spacing, mask)
    labels = _instances(mask, diameter, config, spacing)
    return labels, ClassicDetails("otsu", t * scale, int(labels.max()), diameter_px=diameter)


def segment_scenmed(image: np.ndarray, *, spacing: float | None = None, diameter: float | None = None,
                    config: ClassicConfig | None = None) -> tuple[np.ndarray, ClassicDetails]:
    """SCENMED's marker-controlled watershed (SPEC §4), with touching nuclei split afterwards.

    1. Morphological reconstruction: opening then closing by reconstruction with a disc of ~1/4 nucleus
       diameter removes speckle and fills dark pits without moving object borders.
    2. Sobel edge magnitude of the reconstructed image is the relief to flood.
    3. Markers: foreground = the detected edges (edge magnitude above its Otsu level) and the pixels
       enclosed by them that are brighter than the Otsu level of the image — SCENMED marks the edges
       as foreground; background = the lowest ``background_percentile`` % of pixel values.
    4. Marker watershed on the edge relief gives the nucleus mask, its borders on the edge crests.
    5. Distance-transform markers split touching nuclei (``config.split``).

    Parameters and returns as :func:`segment_otsu`.
    """
    config = _config(config, diameter)
    img, scale = _as_float(image)
    if _is_flat(img):
        return _empty(img, "classic")
    sm = _smooth(img, config)
    t = _threshold(sm, config, scale, threshold_otsu)
    coarse = sm > t
    diameter = _diameter(config, spacing, coarse)
    radius = int(np.clip(round(diameter / 8), 1, 15))
    fp = disk(radius)
    # opening by reconstruction, then closing by reconstruction
    rec = reconstruction(ndi.grey_erosion(sm, footprint=fp), sm, method="dilation")
    rec = reconstruction(ndi.grey_dilation(rec, footprint=fp), rec, method="erosion").astype(np.float32)
    edges = sobel(rec)
    e_t = float(threshold_otsu(edges))
    markers = np.zeros(img.shape, dtype=np.int32)
    low = np.percentile(rec, config.background_percentile)
    markers[rec <= low] = 1
    fg = ((edges > e_t) & (rec > 0.5 * (low + t))) | (rec > t)
    markers[fg & (markers == 0)] = 2
    binary = seeded_watershed(edges, markers, np.ones(img.shape, bool)) == 2
    binary = ndi.binary_fill_holes(ndi.binary_opening(binary, structure=np.ones((3, 3), bool)))
    labels = _instances(binary, diameter, config, spacing)
    return labels, ClassicDetails("classic", t * scale, int(labels.max()), diameter_px=diameter)


def threshold_shanbhag(image: np.ndarray, *, nbins: int = 256) -> float:
    """Shanbhag's fuzzy-entropy threshold (Shanbhag 1994), as ImageJ's "Shanbhag" auto-threshold.

    scikit-image has no Shanbhag method, so it is written here from the paper's definition: for each
    candidate level the pixels on each side get a fuzzy membership that falls linearly with their
    distance from the level (weighted by cumulative probability), and the level minimising the absolute
    difference of the two classes' fuzzy entropies is chosen.
    """
    img = np.asarray(image, dtype=np.float64)
    # a few saturated or dead pixels stretch a 256-bin histogram until all signal sits in a handful of
    # bins; the robust 0.5–99.5 percentile range keeps the levels where the decision is made
    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi > lo:
        img = np.clip(img, lo, hi)
    hist, edges = np.histogram(img, bins=nbins)
    p = hist / hist.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    P1 = np.cumsum(p)
    P2 = 1.0 - P1
    best, best_t = np.inf, nbins // 2
    for it in range(nbins - 1):
        if P1[it] <= 0 or P2[it] <= 1e-12:
            continue
        # fuzzy membership falls linearly with cumulative distance from the level, on both sides
        t1 = 0.5 / P1[it]
        lo = np.arange(1, it + 1)
        ent_lo = -t1 * np.sum(p[lo] * np.log(np.clip(1.0 - t1 * P1[lo - 1], 1e-12, None)))
        t2 = 0.5 / P2[it]
        hi = np.arange(it + 1, nbins)
        ent_hi = -t2 * np.sum(p[hi] * np.log(np.clip(1.0 - t2 * P2[hi], 1e-12, None)))
        d = abs(ent_lo - ent_hi)
        if d < best:
            best, best_t = d, it
    return float(centres[best_t])


_TISSUE_THRESHOLDS = {"shanbhag": threshold_shanbhag, "li": threshold_li, "otsu": threshold_otsu}


def segment_tissue(image: np.ndarray, *, spacing: float | None = None, diameter: float | None = None,
                   config: ClassicConfig | None = None) -> tuple[np.ndarray, ClassicDetails]:
    """SCENMED's tissue-section pipeline: auto-threshold, Gaussian blur of the mask, watershed.

    The threshold is ``config.tissue_threshold`` (default Li; "shanbhag" as in the paper).

    The blur (sigma = 1/8 nucleus diameter) of the binary selection rounds off the ragged borders of
    tissue nuclei before the distance watershed separates them.

    Parameters and returns as :func:`segment_otsu`.
    """
    config = _config(config, diameter)
    img, scale = _as_float(image)
    if _is_flat(img):
        return _empty(img, "tissue")
    sm = _smooth(img, config)
    t = _threshold(sm, config, scale, _TISSUE_THRESHOLDS[config.tissue_threshold])
    sel = sm > t
    diameter = _diameter(config, spacing, sel)
    blurred = ndi.gaussian_filter(sel.astype(np.float32), sigma=max(diameter / 8.0, 1.0))
    mask = ndi.binary_fill_holes(blurred > 0.5)
    labels = _instances(mask, diameter, config, spacing)
    return labels, ClassicDetails("tissue", t * scale, int(labels.max()), diameter_px=diameter)


def otsu_of_parts(parts) -> float:
    """Otsu's threshold of an image given as a re-iterable of its parts (any shapes, every pixel once).

    Exactly ``skimage.filters.threshold_otsu`` of the whole image: its 256-bin histogram spans the
    image's minimum to maximum, and ``numpy.histogram`` bins each value on its own, so counts summed
    over the parts are the whole image's. Two passes (range, then counts); no copy of the image, where
    ``threshold_otsu`` flattens one (1 GiB at 16k x 16k).

    Parameters
    ----------
    parts : callable
        ``parts()`` yields the parts (float32 arrays) afresh at each call.
    """
    lo = hi = None
    for a in parts():
        if a.size:
            lo = a.min() if lo is None else min(lo, a.min())
            hi = a.max() if hi is None else max(hi, a.max())
    if lo is None or lo == hi:
        return float("nan") if lo is None else float(lo)
    counts = None
    for a in parts():
        c, edges = np.histogram(a, bins=256, range=(lo, hi))
        counts = c if counts is None else counts + c
    centres = (edges[:-1] + edges[1:]) / 2.0
    return float(threshold_otsu(hist=(counts, centres)))


def tiled_config(image: np.ndarray, method: str, config: ClassicConfig | None, smoothed_parts) -> ClassicConfig:
    """The config for every tile of a large image: the whole image's threshold, no relative-area filter.

    The auto-thresholds and the filter of objects below a fraction of the mean area are the two global
    decisions of these pipelines; the rest (smoothing, distance transform, watershed) is local at the
    scale of a nucleus. Made once here, they make tiled segmentation equal the untiled one for nuclei
    smaller than the tiles' overlap; the caller applies ``config.postprocess.min_relative_area`` to the
    stitched labels.

    Parameters
    ----------
    image : (Y, X) array, or a lazily read image (:class:`nucleoscope.segment.tiled.LazyImage`)
    method : {"otsu", "classic", "tissue"}
    config : ClassicConfig or None
    smoothed_parts : callable
        ``smoothed_parts(image, sigma)`` yields the smoothed image in parts that cover every pixel once
        (e.g. the cores of tiles): Otsu's threshold (:func:`otsu_of_parts`) never holds the whole
        smoothed image; Li's and Shanbhag's (``tissue``) gather it.
    """
    config = config or ClassicConfig()
    if config.threshold is None:
        if isinstance(image, np.ndarray):
            img, scale = _as_float(image)
            flat = _is_flat(img)
        else:  # read lazily (segment.tiled.LazyImage): _as_float's range and scaling from its tiles
            lo, hi = image.value_range()
            peak = max(abs(lo), abs(hi))
            img, scale = image, 1.0
            if np.isfinite(peak) and peak > 0 and not _SAFE_MAGNITUDE[0] <= peak <= _SAFE_MAGNITUDE[1]:
                img, scale = image.divided(peak), peak
                lo, hi = lo / peak, hi / peak
            flat = not hi - lo > 1e-6 * max(1.0, abs(hi))
        if not flat:
            def parts():
                return smoothed_parts(img, config.smooth_sigma) if config.smooth_sigma else iter([img])

            if method == "tissue" and config.tissue_threshold != "otsu":
                sm = np.concatenate([p.ravel() for p in parts()])
                t = float(_TISSUE_THRESHOLDS[config.tissue_threshold](sm))
                del sm
            else:
                t = otsu_of_parts(parts)
            config = replace(config, threshold=t * scale)
    pp = replace(config.postprocess, min_relative_area=0.0)
    return replace(config, postprocess=pp)
