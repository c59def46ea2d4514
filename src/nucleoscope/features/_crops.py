"""Fixed-size nucleus crops and sliding-window patches, the inputs of SCENMED's CNN and PatchNet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import InputError
from ._objects import object_slices

__all__ = [
    "CROP_SIZE",
    "PATCH_SIZE",
    "PATCH_STRIDE",
    "PATCH_MIN_INSIDE",
    "PATCHNET_SIZES",
    "OVEREXPOSED_LEVEL",
    "OVEREXPOSED_FRACTION",
    "Crops",
    "nucleus_crops",
    "nucleus_patches",
]

CROP_SIZE = 128  # SCENMED: each nucleus in a 128 x 128 crop
PATCH_SIZE = 32  # SCENMED: 32 x 32 patches ...
PATCH_STRIDE = 16  # ... with stride 16 ...
PATCH_MIN_INSIDE = 0.85  # ... kept when >= 85 % nucleus
PATCHNET_SIZES = (11, 17)  # SCENMED's PatchNet: 11 x 11 (NIH/3T3 vs BJ), 17 x 17 (BJ vs MCF10A)
# SCENMED (and SPEC §6, nucleoscope.qc): overexposed when >= 25 % of the pixels are above 3700 on a
# 12-bit camera, i.e. above 3700 / 4095 of the detector's full scale; patches are filtered the same way.
OVEREXPOSED_LEVEL = 3700 / 4095
OVEREXPOSED_FRACTION = 0.25


@dataclass(frozen=True, eq=False)
class Crops:
    """Square windows cut from one image, one per crop or patch.

    Attributes
    ----------
    images : (N, S, S) float32 ndarray
        Intensities as in the image; outside the image: ``fill``.
    masks : (N, S, S) bool ndarray
        Pixels of the nucleus the window belongs to.
    object_numbers : (N,) int32 ndarray
        Label of that nucleus.
    origins : (N, 2) int64 ndarray
        Image (row, col) of each window's top-left pixel (may be negative for crops at the border).
    fits : (N,) bool ndarray
        Crops: the whole nucleus lies inside the window. Patches: always True.
    inside_image : (N,) bool ndarray
        The window lies entirely inside the image (no ``fill`` pixels).
    inside_fraction : (N,) float64 ndarray
        Fraction of the window covered by its nucleus.
    """

    images: np.ndarray
    masks: np.ndarray
    object_numbers: np.ndarray
    origins: np.ndarray
    fits: np.ndarray
    inside_image: np.ndarray
    inside_fraction: np.ndarray

    def __len__(self) -> int:
        return int(self.object_numbers.size)

    @property
    def size(self) -> int:
        """Window side length in pixels."""
        return int(self.images.shape[1])


def _check(image: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2 or labels.shape != image.shape:
        raise InputError(f"need a 2-D image and labels of the same shape, got {image.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be an integer array, got {labels.dtype}")
    if int(size) < 1:
        raise InputError(f"window size must be >= 1 pixel, got {size}")
    return image.astype(np.float32, copy=False), labels


def _window(arr: np.ndarray, y0: int, x0: int, size: int, fill) -> np.ndarray:
    """``arr[y0:y0+size, x0:x0+size]`` with ``fill`` where the window leaves the array."""
    out = np.full((size, size), fill, dtype=arr.dtype)
    h, w = arr.shape
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + size, h), min(x0 + size, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def _empty(size: int) -> Crops:
    return Crops(
        images=np.zeros((0, size, size), np.float32),
        masks=np.zeros((0, size, size), bool),
        object_numbers=np.zeros(0, np.int32),
        origins=np.zeros((0, 2), np.int64),
        fits=np.zeros(0, bool),
        inside_image=np.zeros(0, bool),
        inside_fraction=np.zeros(0, np.float64),
    )


def _objects(labels: np.ndarray):
    """(label, rows, cols, bounding box, mask in the box) per object, ascending."""
    ids, seq, slices = object_slices(labels)
    for k, sl in enumerate(slices):
        m = seq[sl] == k + 1
        rows, cols = np.nonzero(m)
        yield int(ids[k]), rows + sl[0].start, cols + sl[1].start


def nucleus_crops(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    size: int = CROP_SIZE,
    isolate: bool = False,
    fill: float = 0.0,
) -> Crops:
    """One ``size x size`` window per nucleus, centred on its centroid, in ascending label order.

    Parameters
    ----------
    image : (Y, X) ndarray
    labels : (Y, X) integer ndarray, 0 = background
    size : int
        Window side (SCENMED: 128).
    isolate : bool
        Set every pixel outside the nucleus (background and neighbours) to ``fill``.
    fill : float
        Value outside the image (and outside the nucleus with ``isolate``).

    Returns
    -------
    Crops
        ``fits`` is False for nuclei larger than the window (SPEC §6 "too large": they are cut);
        ``inside_image`` is False for windows that cross the image border (padded with ``fill``).
        The centroid's pixel sits at ``(size // 2, size // 2)``.
    """
    image, labels = _check(image, labels, size)
    objs = list(_objects(labels))
    if not objs:
        return _empty(size)
    n = len(objs)
    images = np.empty((n, size, size), np.float32)
    masks = np.empty((n, size, size), bool)
    nums = np.empty(n, np.int32)
    origins = np.empty((n, 2), np.int64)
    fits = np.empty(n, bool)
    inside = np.empty(n, bool)
    h, w = labels.shape
    for k, (i, rows, cols) in enumerate(objs):
        y0 = int(round(rows.mean())) - size // 2
        x0 = int(round(cols.mean())) - size // 2
        m = _window(labels, y0, x0, size, 0) == i
        img = _window(image, y0, x0, size, fill)
        if isolate:
            img[~m] = fill
        images[k], masks[k], nums[k], origins[k] = img, m, i, (y0, x0)
        fits[k] = rows.min() >= y0 and rows.max() < y0 + size and cols.min() >= x0 and cols.max() < x0 + size
        inside[k] = y0 >= 0 and x0 >= 0 and y0 + size <= h and x0 + size <= w
    return Crops(images, masks, nums, origins, fits, inside, masks.reshape(n, -1).mean(axis=1))


def nucleus_patches(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    size: int = PATCH_SIZE,
    stride: int = PATCH_STRIDE,
    min_inside: float = PATCH_MIN_INSIDE,
    saturation: float | None = None,
    overexposed_level: float = OVEREXPOSED_LEVEL,
    overexposed_fraction: float = OVEREXPOSED_FRACTION,
) -> Crops:
    """Sliding-window patches inside each nucleus (SCENMED: 32 x 32, stride 16, >= 85 % nucleus).

    For each nucleus, windows on a grid with step ``stride`` starting at the nucleus's bounding-box
    corner (windows start inside the box and must lie inside the image) are kept when at least ``min_inside`` of their pixels belong to that nucleus and, with
    ``saturation`` given, are not overexposed (SCENMED's nucleus rule applied to the patch: fewer than
    ``overexposed_fraction`` of its pixels above ``overexposed_level * saturation``). PatchNet's patches are the same with ``size`` 11 or 17 (:data:`PATCHNET_SIZES`),
    e.g. ``stride=size // 2``.

    Parameters
    ----------
    image : (Y, X) ndarray
    labels : (Y, X) integer ndarray, 0 = background
    size, stride : int
        Window side and step, pixels.
    min_inside : float
        Minimum fraction of the window inside the nucleus, in (0, 1].
    saturation : float, optional
        Detector full scale (e.g. ``Image.saturation``: 4095 for 12-bit); no overexposure test without it.
    overexposed_level : float
        Fraction of full scale above which a pixel is overexposed (3700 / 4095, SCENMED).
    overexposed_fraction : float
        A patch with this fraction or more of overexposed pixels is dropped (0.25, SCENMED).

    Returns
    -------
    Crops
        Ordered by label, then row, then column. ``fits`` and ``inside_image`` are all True.
    """
    image, labels = _check(image, labels, size)
    if int(stride) < 1:
        raise InputError(f"stride must be >= 1 pixel, got {stride}")
    if not 0 < min_inside <= 1:
        raise InputError(f"min_inside must be in (0, 1], got {min_inside}")
    need = int(np.ceil(min_inside * size * size - 1e-9))
    kept_img, kept_mask, nums, origins, fracs = [], [], [], [], []
    for i, rows, cols in _objects(labels):
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        # Windows start inside the bounding box but may reach past it (into background), as far as
        # the image goes; the 85 % rule decides.
        h, w = labels.shape
        m = labels[r0 : min(r1 + size - 1, h), c0 : min(c1 + size - 1, w)] == i
        if m.shape[0] < size or m.shape[1] < size:
            continue  # no window fits in the image here
        # Nucleus pixels per window for every start position at once (summed-area table).
        counts = _window_sums(m.astype(np.int64), size)
        for yy in range(0, min(r1 - r0, counts.shape[0]), stride):
            for xx in range(0, min(c1 - c0, counts.shape[1]), stride):
                c = counts[yy, xx]
                if c < need:
                    continue
                y0, x0 = r0 + yy, c0 + xx
                patch = image[y0 : y0 + size, x0 : x0 + size]
                if saturation is not None and (
                    (patch > overexposed_level * saturation).mean() >= overexposed_fraction
                ):
                    continue
                kept_img.append(patch)
                kept_mask.append(m[yy : yy + size, xx : xx + size])
                nums.append(i)
                origins.append((y0, x0))
                fracs.append(c / (size * size))
    if not nums:
        return _empty(size)
    n = len(nums)
    return Crops(
        images=np.stack(kept_img).astype(np.float32),
        masks=np.stack(kept_mask),
        object_numbers=np.asarray(nums, np.int32),
        origins=np.asarray(origins, np.int64),
        fits=np.ones(n, bool),
        inside_image=np.ones(n, bool),
        inside_fraction=np.asarray(fracs, np.float64),
    )


def _window_sums(a: np.ndarray, size: int) -> np.ndarray:
    """Sum of ``a`` over every ``size x size`` window, indexed by the window's top-left corner."""
    s = np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table, exact for 0/1 counts
    return s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
