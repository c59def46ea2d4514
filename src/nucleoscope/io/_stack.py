"""Reading z-stacks and time series as (N, Y, X) float32, with the z step from the metadata."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import InputError
from ._read import _check_file, _read_raw, image_name
from ._tiff import _to_um

__all__ = ["Stack", "read_stack"]


@dataclass(frozen=True, eq=False)
class Stack:
    """A (N, Y, X) float32 stack (z-slices or time frames) and its spacing.

    Attributes
    ----------
    data : (N, Y, X) float32
    name, source : str
    spacing : float or None
        Lateral µm per pixel.
    spacing_z : float or None
        µm between slices (ImageJ ``spacing`` or OME ``PhysicalSizeZ``).
    axes : str
        The stacked axis as stored (``Z``, ``T``, ``I`` ...).
    """

    data: np.ndarray
    name: str
    source: str
    spacing: float | None
    spacing_z: float | None
    axes: str


def _z_step(path: Path) -> float | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("spacing"):
                v = float(tif.imagej_metadata["spacing"])
                return v if math.isfinite(v) and v > 0 else None
            if tif.is_ome and tif.ome_metadata:
                root = ET.fromstring(tif.ome_metadata)
                px = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
                if px is not None and px.get("PhysicalSizeZ"):
                    v = _to_um(float(px.get("PhysicalSizeZ")), px.get("PhysicalSizeZUnit"))
                    return v if v and math.isfinite(v) and v > 0 else None
    except (OSError, ValueError, ET.ParseError, tifffile.TiffFileError):
        return None
    return None


def read_stack(path: str | os.PathLike, *, channel: int | None = None, pixel_size: float | None = None,
               spacing_z: float | None = None) -> Stack:
    """Read a z-stack or time series (TIFF/OME-TIFF) as (N, Y, X) float32.

    Parameters
    ----------
    path : str or os.PathLike
    channel : int, optional
        Channel to take along axis ``C``.
    pixel_size, spacing_z : float, optional
        Lateral and z spacing in µm; override the file's metadata.

    Raises
    ------
    InputError
        Unreadable file, a ``channel`` out of range, or data that is not one stack of 2D planes
        (naming the file and the axes found).
    """
    p = Path(path)
    raw, axes, meta_spacing = _read_raw(p, _check_file(p))
    data = np.asarray(raw)
    if channel is not None and "C" in axes:
        ax = axes.index("C")
        if not 0 <= channel < data.shape[ax]:
            raise InputError(f"channel {channel} out of range: the file has {data.shape[ax]} channels", path=p)
        data = np.take(data, channel, axis=ax)
        axes = axes.replace("C", "")
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if data.ndim == 2:
        data, axes = data[None], "Z" + axes
    if data.ndim != 3 or not axes.endswith("YX"):
        raise InputError(f"expected one stack of 2D planes (Z, Y, X) or (T, Y, X), found axes {axes!r} "
                         f"shape {data.shape}; choose a channel with --channel", path=p)
    out = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputError("the stack contains NaN or Inf values", path=p)
    return Stack(data=out, name=image_name(p), source=os.fspath(path),
                 spacing=float(pixel_size) if pixel_size else meta_spacing,
                 spacing_z=float(spacing_z) if spacing_z else _z_step(p), axes=axes[0])
