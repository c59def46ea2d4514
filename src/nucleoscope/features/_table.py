"""One tidy table per image: every nucleus of a label image, every feature group, fixed schema."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from .._errors import InputError
from ._batched import (
    NucleusPixels,
    haralick_batched,
    lbp_batched,
    nucleus_pixels,
    pftas_batched,
    zernike_batched,
)
from ._chromatin import CHROMATIN_COLUMNS, chromatin_batched, chromatin_features
from ._crops import Crops
from ._intensity import (
    INTENSITY_COLUMNS,
    background_level,
    intensity_batched,
    intensity_features,
)
from ._objects import object_slices
from ._shape import SHAPE_COLUMNS, shape_features
from ._texture import (
    GABOR_COLUMNS,
    HARALICK_COLUMNS,
    LBP_COLUMNS,
    PFTAS_COLUMNS,
    RUNLENGTH_COLUMNS,
    ZERNIKE_COLUMNS,
    gabor_features,
    haralick_features,
    lbp_features,
    pftas_features,
    runlength_features,
    zernike_features,
)

__all__ = [
    "FeatureSet",
    "FeatureConfig",
    "GROUPS",
    "feature_columns",
    "measure_nuclei",
    "measure_patches",
    "SCENMED_COLUMNS",
    "PATCH_TEXTURE_COLUMNS",
]

FeatureSet = Literal["shape", "default", "all"]


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the feature groups (defaults documented in docs/features.md).

    Attributes
    ----------
    haralick_levels : int
        Gray levels the nucleus is quantised to (per-nucleus min-max) before the co-occurrence matrix.
    hc_k : float
        Heterochromatin threshold = mean + hc_k * SD of the nucleus pixels.
    hc_refine : bool
        Refine each nucleus by Otsu's threshold within its bounding box before HC/EC (SPEC §7).
    """

    haralick_levels: int = 32
    hc_k: float = 1.0
    hc_refine: bool = True

    def __post_init__(self) -> None:
        if int(self.haralick_levels) != self.haralick_levels or not 2 <= self.haralick_levels <= 4096:
            raise InputError(f"haralick_levels must be an integer in [2, 4096], got {self.haralick_levels}")
        if not np.isfinite(self.hc_k):
            raise InputError(f"hc_k must be a finite number, got {self.hc_k}")


# group name -> columns, in table order
GROUPS: dict[str, list[str]] = {
    "shape": SHAPE_COLUMNS,
    "intensity": INTENSITY_COLUMNS,
    "lbp": LBP_COLUMNS,
    "pftas": PFTAS_COLUMNS,
    "zernike": ZERNIKE_COLUMNS,
    "haralick": HARALICK_COLUMNS,
    "chromatin": CHROMATIN_COLUMNS,
    "runlength": RUNLENGTH_COLUMNS,
    "gabor": GABOR_COLUMNS,
}
_SETS: dict[str, list[str]] = {
    "shape": ["shape", "intensity"],
    "default": ["shape", "intensity", "lbp", "pftas", "zernike", "haralick", "chromatin"],
    "all": ["shape", "intensity", "lbp", "pftas", "zernike", "haralick", "chromatin", "runlength", "gabor"],
}

# SCENMED's 104 per-nucleus features (5 shape + 99 texture; the paper gives no breakdown, this is ours:
# LBP riu2 r1-3 (30) + PFTAS (54) + Zernike |A_nm|, n <= 6 without the constant A_00 (15)).
SCENMED_COLUMNS: list[str] = [
    "AreaShape_Area",
    "AreaShape_Eccentricity",
    "AreaShape_MajorAxisLength",
    "AreaShape_MinorAxisLength",
    "AreaShape_Roundness",
    *LBP_COLUMNS,
    *PFTAS_COLUMNS,
    *ZERNIKE_COLUMNS,
]

# Groups measured for all nuclei at once (_batched); the others go nucleus by nucleus.
_BATCHED = frozenset({"intensity", "lbp", "pftas", "zernike", "haralick", "chromatin"})


def _batched_group(
    g: str,
    image: np.ndarray,
    seq: np.ndarray,
    px: NucleusPixels,
    origins: np.ndarray,
    boxes: list[tuple[slice, slice]],
    background: float,
    saturation: float | None,
    cfg: FeatureConfig,
) -> np.ndarray:
    """(N, len(GROUPS[g])) values of a group in :data:`_BATCHED` for every nucleus."""
    if g == "intensity":
        return intensity_batched(px.values, px.lab, px.n, background=background, saturation=saturation)
    if g == "lbp":
        return lbp_batched(image, px, origins)
    if g == "pftas":
        return pftas_batched(px)
    if g == "zernike":
        return zernike_batched(px, origins)
    if g == "haralick":
        return haralick_batched(px, levels=cfg.haralick_levels)
    return chromatin_batched(image, seq, px, boxes, k=cfg.hc_k, refine=cfg.hc_refine)


# Texture needs a few pixels of context around the nucleus (LBP radius 3, Gabor kernels).
_PAD = 4


def feature_columns(feature_set: FeatureSet = "default") -> list[str]:
    """The table's columns for a feature set (``ObjectNumber`` first); never depends on the data."""
    if feature_set not in _SETS:
        raise InputError(f"unknown feature set {feature_set!r}; expected one of {sorted(_SETS)}")
    cols = ["ObjectNumber"]
    for g in _SETS[feature_set]:
        cols += GROUPS[g]
    return cols


def _empty(columns: list[str]) -> pd.DataFrame:
    data = {c: pd.Series([], dtype=np.int32 if c == "ObjectNumber" else np.float64) for c in columns}
    return pd.DataFrame(data, columns=columns)


def _check(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2:
        raise InputError(f"image must be 2-D (Y, X), got shape {image.shape}")
    if labels.shape != image.shape:
        raise InputError(f"labels shape {labels.shape} differs from image shape {image.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be an integer array, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError("labels must be >= 0 (0 = background)")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"image must be real-valued, got {image.dtype}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError("image contains NaN or infinite values")
    return image, labels


def measure_nuclei(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    spacing: float | None = None,
    feature_set: FeatureSet = "default",
    saturation: float | None = None,
    config: FeatureConfig | None = None,
) -> pd.DataFrame:
    """Measure every nucleus of a label image: one row per label, ascending, fixed columns.

    Parameters
    ----------
    image : (Y, X) ndarray
        Intensity image, any real dtype, used as is (no rescaling).
    labels : (Y, X) integer ndarray
        Instance labels, 0 = background; labels need not be consecutive.
    spacing : float, optional
        Pixel size in µm; fills the ``_um``/``_um2`` columns (NaN without it).
    feature_set : {"shape", "default", "all"}
        ``"shape"``: shape + intensity. ``"default"``: also LBP, PFTAS, Zernike, Haralick and
        chromatin (HC/EC); contains SCENMED's 104 (:data:`SCENMED_COLUMNS`). ``"all"``: also gray-level
        run length and Gabor.
    saturation : float, optional
        Intensity at or above which a pixel is saturated (``Intensity_SaturatedFraction``).
    config : FeatureConfig, optional
        Parameters of the feature groups.

    Returns
    -------
    pandas.DataFrame
        ``feature_columns(feature_set)``: ``ObjectNumber`` (int32, the label value) then float64
        features named CellProfiler-style; zero rows (same columns and dtypes) when there are no
        nuclei. Definitions: docs/features.md.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((32, 32), np.int32); labels[8:24, 8:24] = 7
    >>> t = measure_nuclei(labels.astype(np.float32), labels, feature_set="shape")
    >>> int(t.loc[0, "ObjectNumber"]), float(t.loc[0, "AreaShape_Area"])
    (7, 256.0)
    """
    cfg = config or FeatureConfig()
    columns = feature_columns(feature_set)
    image, labels = _check(image, labels)
    if spacing is not None and not (np.isfinite(spacing) and spacing > 0):
        raise InputError(f"spacing must be a positive number of µm per pixel, got {spacing}")
    return _measure(image, labels, columns, _SETS[feature_set], spacing, saturation, cfg)


def _measure(
    image: np.ndarray,
    labels: np.ndarray,
    columns: list[str],
    groups: list[str],
    spacing: float | None,
    saturation: float | None,
    cfg: FeatureConfig,
    timings: dict[str, float] | None = None,
    batched: bool = True,
) -> pd.DataFrame:
    """The loop behind :func:`measure_nuclei` (checked inputs); ``timings`` collects CPU seconds per
    group for bench/features.py. ``batched=False`` measures every group nucleus by nucleus with the
    per-nucleus functions (the reference the batched groups are tested and benchmarked against)."""
    ids, seq, slices = object_slices(labels)
    if ids.size == 0:
        return _empty(columns)
    background = background_level(image, labels)
    H, W = labels.shape
    rows = np.empty((ids.size, len(columns) - 1), dtype=np.float64)
    col_index = {c: k for k, c in enumerate(columns[1:])}
    done = set()
    # each nucleus's crop, _PAD px of context clipped to the image: cut once, used by both paths (the
    # batched LBP and Zernike work in crop coordinates, as the per-nucleus functions see them)
    boxes = [
        (slice(max(sy.start - _PAD, 0), min(sy.stop + _PAD, H)), slice(max(sx.start - _PAD, 0), min(sx.stop + _PAD, W)))
        for sy, sx in slices
    ]
    if batched and any(g in _BATCHED for g in groups):
        t0 = time.process_time()
        px = nucleus_pixels(image, seq, ids.size)
        origins = np.array([[sy.start, sx.start] for sy, sx in boxes])
        if timings is not None:  # shared by the batched groups, timed on its own
            timings["_pixels"] = timings.get("_pixels", 0.0) + time.process_time() - t0
        for g in groups:
            if g not in _BATCHED:
                continue
            t0 = time.process_time()
            block = _batched_group(g, image, seq, px, origins, boxes, background, saturation, cfg)
            cols = [col_index[c] for c in GROUPS[g]]
            rows[:, cols] = block
            if timings is not None:
                timings[g] = timings.get(g, 0.0) + time.process_time() - t0
            done.add(g)
    loop = [g for g in groups if g not in done]
    for i, box in enumerate(boxes if loop else []):
        y0, x0 = box[0].start, box[1].start
        crop_l = seq[box]
        mask = crop_l == i + 1
        # float64 per crop, not for the whole image: a 10240 x 10240 field would need 800 MB.
        crop = image[box].astype(np.float64)
        compute = {
            "shape": lambda: shape_features(mask, offset=(y0, x0), spacing=spacing),
            "intensity": lambda: intensity_features(crop[mask], background=background, saturation=saturation),
            "lbp": lambda: lbp_features(crop, mask),
            "pftas": lambda: pftas_features(crop, mask),
            "zernike": lambda: zernike_features(crop, mask),
            "haralick": lambda: haralick_features(crop, mask, levels=cfg.haralick_levels),
            "chromatin": lambda: chromatin_features(
                crop, mask, k=cfg.hc_k, refine_mask=(crop_l == 0) if cfg.hc_refine else None
            ),
            "runlength": lambda: runlength_features(crop, mask, levels=cfg.haralick_levels),
            "gabor": lambda: gabor_features(crop, mask),
        }
        feats: dict[str, float] = {}
        for g in loop:
            if timings is None:
                feats.update(compute[g]())
            else:
                t0 = time.process_time()
                feats.update(compute[g]())
                timings[g] = timings.get(g, 0.0) + time.process_time() - t0
        for c, v in feats.items():
            rows[i, col_index[c]] = v
    table = pd.DataFrame(rows, columns=columns[1:])
    table.insert(0, "ObjectNumber", ids.astype(np.int32))
    return table


# The 99 per-patch texture columns (SCENMED_COLUMNS without the five shape columns).
PATCH_TEXTURE_COLUMNS: list[str] = [*LBP_COLUMNS, *PFTAS_COLUMNS, *ZERNIKE_COLUMNS]
_PATCH_ID_COLUMNS = ["ObjectNumber", "Patch_Origin_Y", "Patch_Origin_X", "Patch_InsideFraction"]


def measure_patches(crops: Crops) -> pd.DataFrame:
    """SCENMED's 99 texture features for every window of a :class:`Crops` (patches or crops).

    Each window is measured over its own nucleus's pixels (``crops.masks``): LBP riu2 r1-3, PFTAS,
    Zernike (see :data:`SCENMED_COLUMNS`; shape is meaningless for a patch).

    Parameters
    ----------
    crops : Crops
        From :func:`nucleus_patches` or :func:`nucleus_crops`.

    Returns
    -------
    pandas.DataFrame
        ``ObjectNumber`` (int32), ``Patch_Origin_Y``/``_X`` (int64, top-left pixel in the image),
        ``Patch_InsideFraction`` (float64), then :data:`PATCH_TEXTURE_COLUMNS` (float64); one row per
        window in the order of ``crops``; zero rows with the same columns when there is none.
    """
    n = len(crops)
    data = np.empty((n, len(PATCH_TEXTURE_COLUMNS)), dtype=np.float64)
    for k in range(n):
        img = crops.images[k].astype(np.float64)
        m = crops.masks[k]
        feats = {**lbp_features(img, m), **pftas_features(img, m), **zernike_features(img, m)}
        data[k] = [feats[c] for c in PATCH_TEXTURE_COLUMNS]
    table = pd.DataFrame(data, columns=PATCH_TEXTURE_COLUMNS)
    table.insert(0, "Patch_InsideFraction", np.asarray(crops.inside_fraction, np.float64))
    table.insert(0, "Patch_Origin_X", np.asarray(crops.origins[:, 1], np.int64))
    table.insert(0, "Patch_Origin_Y", np.asarray(crops.origins[:, 0], np.int64))
    table.insert(0, "ObjectNumber", np.asarray(crops.object_numbers, np.int32))
    return table
