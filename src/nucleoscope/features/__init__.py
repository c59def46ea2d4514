"""Per-nucleus measurements: shape, intensity, texture (LBP, PFTAS, Zernike, Haralick, run length,
Gabor) and chromatin condensation (HC/EC), as one tidy table per image.

The entry point is :func:`measure_nuclei` (image + label image -> one row per nucleus). The group
functions work on one nucleus (a crop of the image and its mask) and are public for reuse, e.g. on
patches. Column definitions: docs/features.md.
"""

from __future__ import annotations

from ._chromatin import CHROMATIN_COLUMNS, DEFAULT_HC_K, chromatin_features
from ._crops import (
    CROP_SIZE,
    PATCH_MIN_INSIDE,
    PATCH_SIZE,
    PATCH_STRIDE,
    PATCHNET_SIZES,
    Crops,
    nucleus_crops,
    nucleus_patches,
)
from ._intensity import INTENSITY_COLUMNS, background_level, intensity_features
from ._shape import SHAPE_COLUMNS, feret_diameters, shape_features
from ._table import (
    GROUPS,
    PATCH_TEXTURE_COLUMNS,
    SCENMED_COLUMNS,
    FeatureConfig,
    FeatureSet,
    feature_columns,
    measure_nuclei,
    measure_patches,
)
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
    quantize,
    runlength_features,
    zernike_features,
)

__all__ = [
    "measure_nuclei",
    "measure_patches",
    "PATCH_TEXTURE_COLUMNS",
    "feature_columns",
    "FeatureConfig",
    "FeatureSet",
    "GROUPS",
    "SCENMED_COLUMNS",
    "SHAPE_COLUMNS",
    "INTENSITY_COLUMNS",
    "LBP_COLUMNS",
    "PFTAS_COLUMNS",
    "ZERNIKE_COLUMNS",
    "HARALICK_COLUMNS",
    "RUNLENGTH_COLUMNS",
    "GABOR_COLUMNS",
    "CHROMATIN_COLUMNS",
    "DEFAULT_HC_K",
    "shape_features",
    "feret_diameters",
    "intensity_features",
    "background_level",
    "lbp_features",
    "pftas_features",
    "zernike_features",
    "haralick_features",
    "quantize",
    "runlength_features",
    "gabor_features",
    "chromatin_features",
    "Crops",
    "nucleus_crops",
    "nucleus_patches",
    "CROP_SIZE",
    "PATCH_SIZE",
    "PATCH_STRIDE",
    "PATCH_MIN_INSIDE",
    "PATCHNET_SIZES",
]
