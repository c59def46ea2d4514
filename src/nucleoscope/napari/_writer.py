"""Writers: a Labels layer as a TIFF (:func:`nucleoscope.io.write_labels`) or, with its image, an
OME-Zarr store (:func:`nucleoscope.io.write_ome_zarr`); a Labels layer's table (its features) as CSV or
Parquet (:func:`nucleoscope.io.write_table`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import InputError

log = logging.getLogger(__name__)

__all__ = ["write_labels", "write_table"]


def _spacing(attributes: dict) -> float | None:
    s = (attributes.get("metadata") or {}).get("spacing_um")
    return float(s) if s else None


def _zarr_path(path: str) -> Path:
    p = Path(path)
    return p if p.name.lower().endswith(".zarr") else p.with_name(p.name + ".ome.zarr")


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer of one Labels layer: int32 TIFF (``.tif``), or an OME-Zarr store whose image is the
    labels' source image when it is open, else the labels themselves (``.ome.zarr``).

    Returns
    -------
    list of str
        The path written.
    """
    from .. import io

    labels = np.asarray(data[0] if isinstance(data, list) else data)
    if labels.ndim not in (2, 3):
        raise InputError(f"labels to write must be (Y, X) or (Z, Y, X), got shape {labels.shape}", path=path)
    if Path(path).name.lower().endswith(".zarr"):
        image = _source_image(attributes, labels.shape)
        out = io.write_ome_zarr(_zarr_path(path), labels if image is None else image, labels.astype(np.int32),
                                spacing=_spacing(attributes))
        return [str(out)]
    p = Path(path) if Path(path).suffix.lower() in (".tif", ".tiff") else Path(path + ".tif")
    io.write_labels(p, labels.astype(np.int32), spacing=_spacing(attributes))
    return [str(p)]


def _source_image(attributes: dict, shape: tuple[int, ...]) -> np.ndarray | None:
    """The image the labels were made from, when a viewer has it open under ``metadata["source_image"]``."""
    name = (attributes.get("metadata") or {}).get("source_image")
    if not name:
        return None
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except ImportError:  # pragma: no cover - napari is installed with this package's extra
        return None
    if viewer is None or name not in viewer.layers:
        return None
    data = np.asarray(viewer.layers[name].data)
    return data if data.shape == shape else None


def write_table(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 writer of a Labels layer's table (its ``features``, one row per nucleus) as ``.csv`` or ``.parquet``.

    Raises
    ------
    InputError
        The layer has no table (segment or measure it first).
    """
    from .. import io

    table = attributes.get("features")
    if table is None or len(pd.DataFrame(table).columns) == 0:
        raise InputError("this Labels layer has no table: segment or measure it first", path=path)
    out = io.write_table(pd.DataFrame(table), path)
    return [str(out)]
