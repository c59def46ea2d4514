"""Which columns of a nuclei table a classifier learns from, and their feature groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._errors import InputError
from ..features import GROUPS

__all__ = ["feature_columns_of", "feature_group", "feature_matrix"]

_PREFIXES = ("AreaShape_", "Intensity_", "Texture_", "Chromatin_")
# Not properties of the nucleus itself: where it lies, how it is turned, and µm copies of px columns
# (the same number times a constant when the pixel size is shared; kept out so no feature counts twice).
_SKIP = ("Location_", "AreaShape_BoundingBox", "AreaShape_Orientation")
_GROUP_OF = {c: g for g, cols in GROUPS.items() for c in cols}


def feature_group(column: str) -> str:
    """The feature group of a column (``shape``, ``intensity``, ``lbp``, ... as :data:`features.GROUPS`).

    Columns of no known group fall back to their prefix (``Texture_X_...`` -> ``x``).
    """
    if column in _GROUP_OF:
        return _GROUP_OF[column]
    if column.endswith("_um") or column.endswith("_um2"):
        return feature_group(column.rsplit("_", 1)[0])
    parts = column.split("_")
    return (parts[1] if parts[0] == "Texture" and len(parts) > 1 else parts[0]).lower()


def feature_columns_of(table: pd.DataFrame) -> list[str]:
    """The measurement columns of a nuclei table a classifier should see, in table order.

    Numeric ``AreaShape_``, ``Intensity_``, ``Texture_`` and ``Chromatin_`` columns, without location,
    bounding box, orientation and µm duplicates of pixel columns.
    """
    cols = []
    for c in table.columns:
        if not c.startswith(_PREFIXES) or c.startswith(_SKIP):
            continue
        if (c.endswith("_um") or c.endswith("_um2")) and c.rsplit("_", 1)[0] in table.columns:
            continue
        if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c]):
            cols.append(c)
    return cols


def feature_matrix(table: pd.DataFrame, columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The (N, F) float64 feature matrix of a nuclei table.

    Non-finite values (a texture undefined on a tiny nucleus) become NaN; classifiers impute them with
    the training median.

    Parameters
    ----------
    table : pandas.DataFrame
    columns : sequence of str, optional
        Default: :func:`feature_columns_of`.

    Raises
    ------
    InputError
        A requested column is missing (named), or no feature column exists.
    """
    columns = list(feature_columns_of(table) if columns is None else columns)
    if not columns:
        raise InputError("the nuclei table has no measurement columns to learn from")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{len(missing)} feature column(s) missing from the nuclei table: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                         "(measure with the same --features as the model was trained on)")
    X = np.array(table[columns].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64, copy=True)
    X[~np.isfinite(X)] = np.nan
    return X, columns
