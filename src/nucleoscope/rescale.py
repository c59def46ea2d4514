"""Resizing for segmentation: bring nuclei to the scale a model was trained at, and the labels back.

The STORM paper's downscale-segment-upscale, and the shapes a network accepts. Images are ``(Y, X)`` and
come back as float32; labels are ``(Y, X)`` int32 with 0 = background. Every function is pure.

- :func:`rescale_image` resizes an image, averaging when it shrinks; :func:`resize_labels` resizes a label
  image by nearest neighbour (ids kept, outlines optionally smoothed when enlarging);
- :func:`estimate_diameter` measures the typical nucleus size in a coarse mask or labels, and
  :func:`rescale_for_diameter` turns it into the factor that brings nuclei to a model's size;
- :func:`segment_rescaled` rescales, segments and maps the labels back to the original grid;
- :func:`pad_to_multiple` pads to sizes a 4-level U-Net accepts (multiples of 16);
- ``_block_mean`` is the cheap block-average downsampling that :mod:`nucleoscope.background` and
  :mod:`nucleoscope.segment.sizing` fit and measure on.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Literal

import numpy as np
from scipy import ndimage as ndi

from ._errors import InputError
from .preprocess import _as_float, _check_2d

__all__ = [
    "rescale_image",
    "resize_labels",
    "pad_to_multiple",
    "estimate_diameter",
    "rescale_for_diameter",
    "segment_rescaled",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Resizing images and labels
# --------------------------------------------------------------------------------------------------

def _scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return tuple(max(1, int(round(s * factor))) for s in shape[-2:])  # type: ignore[return-value]


def rescale_image(image: np.ndarray, factor: float, *, order: int = 1,
                  anti_aliasing: bool = True) -> np.ndarray:
    """Resize ``image`` by ``factor`` (``< 1`` shrinks), averaging when it shrinks.

    This is the STORM paper's "bilinear interpolation with averaging": before a downscale the image is
    low-pass filtered (Gaussian, sigma = (1/factor - 1)/2 px, scikit-image's rule) so every output pixel
    is an average over the input pixels it covers rather than a sample of one of them.

    Parameters
    ----------
    image : ndarray, (Y, X)
    factor : float
        Scale factor, > 0. The output shape is ``round(Y * factor), round(X * factor)`` (at least 1).
    order : int
        Spline order of the interpolation (0 nearest, 1 bilinear, 3 cubic).
    anti_aliasing : bool
        Low-pass filter before shrinking (ignored when ``factor >= 1``).

    Returns
    -------
    ndarray, float32, shape ``(round(Y * factor), round(X * factor))``
        Intensities keep their range (no rescaling to [0, 1]).
    """
    from skimage.transform import resize  # skimage.transform is slow to import; only load when used

    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"factor must be a positive finite number, got {factor}")
    arr = _as_float(image)
    _check_2d(arr)
    shape = _scaled_shape(arr.shape, factor)
    if shape == arr.shape:
        return arr.copy()
    out = resize(arr, shape, order=order, mode="reflect", anti_aliasing=bool(anti_aliasing and factor < 1),
                 preserve_range=True)
    return out.astype(np.float32, copy=False)


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Index of the input pixel whose area contains each output pixel's centre (pixel-area convention)."""
    idx = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.clip(idx, 0, n_in - 1)


def resize_labels(labels: np.ndarray, shape: tuple[int, int], *, smooth: bool = False) -> np.ndarray:
    """Resize a label image to ``shape`` by nearest neighbour; ids are kept, never blended.

    Parameters
    ----------
    labels : ndarray of int, (Y, X)
        0 = background.
    shape : (int, int)
        Output shape.
    smooth : bool
        When enlarging, replace the staircase outlines of nearest-neighbour upsizing by smooth ones:
        each pixel takes the id whose bilinearly interpolated mask is largest there (background
        included), which smooths borders between touching objects too. Ignored when shrinking.

    Returns
    -------
    ndarray, int32, ``shape``

    Notes
    -----
    Nearest-neighbour upsizing (output ≥ input along both axes) hits every input pixel, so no object
    can vanish; with ``smooth=True`` an object that the smoothing would erase (a lone pixel upsized by
    a factor close to 1) is put back from the plain nearest-neighbour result, so no id vanishes either.
    When shrinking, objects smaller than the new pixel size can vanish: their number is logged at
    INFO level, never silently.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise InputError(f"labels must be 2-D (Y, X), got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        if lab.dtype == bool:
            lab = lab.astype(np.int32)
        else:
            raise InputError(f"labels must be integers, got dtype {lab.dtype}")
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    lab = lab.astype(np.int32, copy=False)
    if shape == lab.shape:
        return lab.copy()
    rows = _nearest_index(lab.shape[0], shape[0])
    cols = _nearest_index(lab.shape[1], shape[1])
    out = np.take(np.take(lab, rows, axis=0), cols, axis=1)  # faster than lab[rows][:, cols]
    enlarging = shape[0] >= lab.shape[0] and shape[1] >= lab.shape[1]
    if enlarging and smooth:
        out = _smooth_upsized(lab, out)
    if not enlarging and lab.size:
        n_in = np.count_nonzero(np.bincount(lab.ravel().clip(0))[1:])
        n_out = np.count_nonzero(np.bincount(out.ravel().clip(0), minlength=1)[1:])
        if n_out < n_in:
            log.info("resize_labels: %d of %d objects vanished when shrinking %s -> %s",
                     n_in - n_out, n_in, lab.shape, shape)
    return out


def _cell_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: index k of its bilinear cell (input pixels clip(k-1) and clip(k), k in 0..n_in)
    and the weight of the second of the two (pixel-area convention, edges clamped)."""
    q = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(q)
    return (lo + 1).astype(np.intp), q - lo


def _smooth_upsized(small: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Smooth outlines for nearest-upsized labels (see :func:`resize_labels`).

    Each output pixel takes the id with the largest total bilinear weight among the four input pixels
    around it (background counts as an id): the arg-max of bilinearly interpolated one-hot masks, i.e.
    the interpolated mask of every object thresholded where it beats the others. Only pixels whose four
    neighbours disagree can differ from nearest neighbour, so only those (the outlines) are computed.
    """
    ny, nx = small.shape
    my, mx = nearest.shape
    ky, fy = _cell_index(ny, my)
    kx, fx = _cell_index(nx, mx)
    r0 = np.clip(np.arange(ny + 1) - 1, 0, ny - 1)
    r1 = np.clip(np.arange(ny + 1), 0, ny - 1)
    c0 = np.clip(np.arange(nx + 1) - 1, 0, nx - 1)
    c1 = np.clip(np.arange(nx + 1), 0, nx - 1)
    l00 = small[np.ix_(r0, c0)]
    l01 = small[np.ix_(r0, c1)]
    l10 = small[np.ix_(r1, c0)]
    l11 = small[np.ix_(r1, c1)]
    mixed = (l00 != l01) | (l00 != l10) | (l00 != l11)  # per cell
    work = np.take(np.take(mixed, ky, axis=0), kx, axis=1)
    ys, xs = np.nonzero(work)
    out = nearest  # the caller's fresh array: modified in place
    if ys.size:
        cy, cx = ky[ys], kx[xs]
        wy, wx = fy[ys].astype(np.float32), fx[xs].astype(np.float32)
        labs = np.stack([l00[cy, cx], l01[cy, cx], l10[cy, cx], l11[cy, cx]])
        wts = np.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx])
        # score of each corner's id = total weight of the corners holding that id (6 comparisons)
        score = wts.copy()
        for a in range(4):
            for b in range(a + 1, 4):
                eq = labs[a] == labs[b]
                score[a] += wts[b] * eq
                score[b] += wts[a] * eq
        best = np.argmax(score, axis=0)
        out[ys, xs] = np.take_along_axis(labs, best[None], axis=0)[0]
    # Put back any object the smoothing erased (a lone pixel enlarged by a factor close to 1).
    n = int(small.max(initial=0))
    if n and ys.size:
        # nearest neighbour hits every input pixel when enlarging, so every id was present before
        before = np.bincount(small.ravel(), minlength=n + 1)
        after = np.bincount(out.ravel(), minlength=n + 1)
        lost = np.flatnonzero((before > 0) & (after == 0))
        if lost.size:
            rows = _nearest_index(ny, my)
            cols = _nearest_index(nx, mx)
            restore = np.isin(np.take(np.take(small, rows, axis=0), cols, axis=1), lost)
            out[restore] = np.take(np.take(small, rows, axis=0), cols, axis=1)[restore]
    return out


def pad_to_multiple(image: np.ndarray, multiple: int = 16, *,
                    mode: str = "reflect") -> tuple[np.ndarray, tuple[slice, slice]]:
    """Pad the last two axes of ``image`` at the bottom/right up to multiples of ``multiple``.

    Parameters
    ----------
    image : ndarray, (..., Y, X)
    multiple : int
        16 for a 4-level U-Net (four 2x poolings).
    mode : str
        :func:`numpy.pad` mode; ``"reflect"`` avoids an artificial edge at the border.

    Returns
    -------
    padded : ndarray, (..., Y', X'), same dtype
        ``Y'`` and ``X'`` are the smallest multiples of ``multiple`` that are >= ``Y`` and ``X``.
    window : (slice, slice)
        ``padded[..., window[0], window[1]]`` is the original image; use it to crop a prediction back.

    Examples
    --------
    >>> padded, (sy, sx) = pad_to_multiple(np.zeros((30, 33)), 16)
    >>> padded.shape, padded[sy, sx].shape
    ((32, 48), (30, 33))
    """
    if int(multiple) < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    arr = np.asarray(image)
    if arr.ndim < 2 or arr.shape[-1] == 0 or arr.shape[-2] == 0:
        raise InputError(f"image must have non-empty last two axes (Y, X), got shape {arr.shape}")
    ny, nx = arr.shape[-2:]
    py = (-ny) % int(multiple)
    px = (-nx) % int(multiple)
    window = (slice(0, ny), slice(0, nx))
    if py == 0 and px == 0:
        return arr.copy(), window
    pad = [(0, 0)] * (arr.ndim - 2) + [(0, py), (0, px)]
    return np.pad(arr, pad, mode=mode), window


def _block_mean(arr: np.ndarray, step: int) -> np.ndarray:
    """Mean over ``step x step`` blocks (the ragged bottom/right edge is dropped); float32."""
    if step == 1:
        return _as_float(arr)
    h, w = arr.shape[0] // step * step, arr.shape[1] // step * step
    out = np.zeros((h // step, w), np.float32)
    for i in range(step):  # row by row: no full-size float copy of a huge image
        out += arr[i:h:step, :w]
    return out.reshape(h // step, w // step, step).mean(axis=2) / np.float32(step)


# --------------------------------------------------------------------------------------------------
# Nucleus size and automatic rescaling
# --------------------------------------------------------------------------------------------------

def _object_sizes(labels: np.ndarray, ids: np.ndarray, kind: str, split: bool) -> list[float]:
    """Size of each object ``ids`` of ``labels`` (clumps split into their nuclei when ``split``).

    A component is a clump candidate when its area exceeds 1.6 x the disc of its largest inscribed
    circle (a round or moderately elongated single nucleus never does). A candidate is cut by a
    watershed on its distance transform, seeded at the distance maxima that rise at least a quarter of
    the inscribed radius above the saddle to their neighbours (h-maxima) and are at least half as deep
    as the deepest: touching nuclei are joined by a neck, which is such a saddle; the ridge of one
    elongated nucleus has only pixel-level bumps, which are not.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    slices = ndi.find_objects(labels)
    sizes: list[float] = []

    def size_of(own: np.ndarray) -> float:
        if kind == "equivalent":
            return math.sqrt(4.0 * float(np.count_nonzero(own)) / math.pi)
        rows = np.flatnonzero(own.any(axis=1))
        cols = np.flatnonzero(own.any(axis=0))
        return float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))

    for i in ids:
        sl = slices[i - 1]
        own = np.pad(labels[sl] == i, 1)  # the pad gives the distance map a background border
        if split:
            d = ndi.distance_transform_edt(own)
            r = float(d.max())
            if np.count_nonzero(own) > 1.6 * math.pi * r * r:
                peaks = h_maxima(d, max(1.0, 0.25 * r)).astype(bool) & (d >= 0.5 * r)
                markers, n_peaks = ndi.label(peaks, structure=np.ones((3, 3), bool))
                if n_peaks > 1:
                    parts = watershed(-d, markers, mask=own)
                    sizes.extend(size_of(parts == k) for k in range(1, n_peaks + 1)
                                 if np.any(parts == k))
                    continue
        sizes.append(size_of(own))
    return sizes


def estimate_diameter(mask_or_labels: np.ndarray, *, kind: Literal["equivalent", "bbox"] = "equivalent",
                      split: bool | None = None, min_area: int = 10, max_objects: int = 400) -> float:
    """Typical nucleus diameter (px) in a coarse foreground mask or a label image.

    Parameters
    ----------
    mask_or_labels : ndarray, (Y, X)
        A boolean foreground mask (e.g. the coarse pass of a segmenter, or an Otsu threshold) or an
        integer label image (each id one nucleus).
    kind : {"equivalent", "bbox"}
        Per-object size: ``"equivalent"`` = diameter of the disc of the same area, ``sqrt(4 A / pi)``;
        ``"bbox"`` = max(bounding-box height, width), the size NuSeT bases its anchors on. The default is
        the equivalent diameter because it does not depend on orientation (a rotated ellipse has a larger
        box) and is not inflated by a stray pixel on the outline, so a rescale factor from it is stable.
    split : bool, optional
        Split clumps of touching nuclei before measuring, at the peaks of the distance transform (see
        Notes). Default: True for a boolean mask, False for labels.
    min_area : int
        Objects smaller than this (px) are debris/noise and are ignored.
    max_objects : int
        With ``split``, at most this many components (evenly spread over the label order, i.e. over the
        image from top to bottom) are measured; a median needs no more, and it bounds the time on huge
        images (the split costs a distance transform per measured component).

    Returns
    -------
    float
        Median over objects of the chosen size; NaN when there is no object.

    Notes
    -----
    A coarse mask merges touching nuclei, and a median over connected components would then report the
    size of clumps. With ``split``, a component whose area exceeds 1.6 x the disc of its largest
    inscribed circle is cut by a watershed on its distance transform, seeded at the distance maxima that
    rise at least a quarter of the inscribed radius above the neck to their neighbours (h-maxima) and are
    at least half as deep as the deepest; the median over the pieces is then the nucleus size even when
    most nuclei touch. The median (not the mean) keeps debris and leftover clumps from moving the
    estimate.
    """
    arr = np.asarray(mask_or_labels)
    if arr.ndim != 2:
        raise InputError(f"mask or labels must be 2-D (Y, X), got shape {arr.shape}")
    if kind not in ("equivalent", "bbox"):
        raise ValueError(f"kind must be 'equivalent' or 'bbox', got {kind!r}")
    if arr.dtype == bool:
        labels, _ = ndi.label(arr, structure=np.ones((3, 3), bool))
        labels = labels.astype(np.int32, copy=False)
        if split is None:
            split = True
    elif np.issubdtype(arr.dtype, np.integer):
        labels = arr.astype(np.int32, copy=False)
        if split is None:
            split = False
    else:
        raise InputError(f"expected a boolean mask or integer labels, got dtype {arr.dtype}")
    n = int(labels.max(initial=0))
    if n == 0:
        return float("nan")
    area = np.bincount(labels.ravel().clip(0), minlength=n + 1)[1:]
    ids = np.flatnonzero(area >= max(1, int(min_area))) + 1
    if ids.size == 0:
        return float("nan")
    if not split and kind == "equivalent":
        # vectorized: no per-object work needed
        return float(np.median(np.sqrt(4.0 * area[ids - 1] / np.pi)))
    if split and ids.size > max_objects:
        ids = ids[np.linspace(0, ids.size - 1, int(max_objects)).round().astype(np.intp)]
    return float(np.median(_object_sizes(labels, ids, kind, bool(split))))


def rescale_for_diameter(diameter: float, target: float, *, min_factor: float = 0.1,
                         max_factor: float = 4.0, tolerance: float = 0.1) -> float:
    """Scale factor that brings nuclei of ``diameter`` px to the model's ``target`` px.

    Parameters
    ----------
    diameter : float
        Estimated nucleus diameter in the image (px), e.g. from :func:`estimate_diameter`.
    target : float
        Nucleus diameter the model was trained at (px), measured the same way.
    min_factor, max_factor : float
        Clamp: factors outside are cut back (and logged). ``max_factor`` bounds the cost of enlarging
        images of tiny nuclei (the pixel count grows with the factor squared).
    tolerance : float
        Relative dead band: a factor within ``1 +- tolerance`` returns exactly 1.0, so images already at
        the model's scale are never resampled.

    Returns
    -------
    float
        ``target / diameter`` clamped to [min_factor, max_factor]; 1.0 when ``diameter`` is NaN,
        non-positive or infinite (no nuclei to measure: leave the image alone).
    """
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"target must be a positive finite diameter, got {target}")
    if not (0 < min_factor <= 1 <= max_factor):
        raise ValueError(f"need 0 < min_factor <= 1 <= max_factor, got {min_factor}, {max_factor}")
    if diameter is None or not math.isfinite(diameter) or diameter <= 0:
        return 1.0
    factor = target / float(diameter)
    if abs(factor - 1.0) <= tolerance:
        return 1.0
    clamped = min(max(factor, min_factor), max_factor)
    if clamped != factor:
        log.info("rescale_for_diameter: factor %.3g clamped to %.3g", factor, clamped)
    return float(clamped)


def segment_rescaled(image: np.ndarray, segment_fn: Callable[[np.ndarray], Any], factor: float, *,
                     smooth: bool = True) -> np.ndarray:
    """Rescale ``image`` by ``factor``, segment it, and map the labels back to the original grid.

    This is the downscale-segment-upscale route for images whose nuclei are larger than a model's
    training scale (``factor < 1``; STORM paper), and also works for ``factor > 1`` (tiny nuclei).

    Parameters
    ----------
    image : ndarray, (Y, X)
    segment_fn : callable
        ``segment_fn(rescaled_image) -> labels`` (or ``-> (labels, details)``, as the registered
        segmenters return; details are dropped). Labels must have the rescaled image's shape.
    factor : float
        Scale factor (> 0); 1 calls ``segment_fn`` on the image unchanged.
    smooth : bool
        Smooth outlines when enlarging the labels back (see :func:`resize_labels`).

    Returns
    -------
    ndarray, int32, (Y, X)
        Labels on the original grid, ids as ``segment_fn`` gave them.
    """
    arr = _as_float(image)
    _check_2d(arr)
    small = arr if factor == 1 else rescale_image(arr, factor)
    result = segment_fn(small)
    labels = result[0] if isinstance(result, tuple) else result
    labels = np.asarray(labels)
    if labels.shape != small.shape:
        raise ValueError(f"segment_fn returned labels of shape {labels.shape} for an image of shape {small.shape}")
    return resize_labels(labels, arr.shape, smooth=smooth)
