"""TIFF and OME-TIFF reading: the stored array with its axes, and the pixel size from the metadata.

``tifffile`` names the axes; a broken chain of pages, which tifffile only logs, is raised as a corrupt or
truncated file; big uncompressed stacks are memory-mapped so that taking one plane reads one plane. The
pixel size comes from OME ``PhysicalSizeX``, ImageJ metadata or the TIFF resolution tags (in that order),
in µm per pixel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError

logger = logging.getLogger(__name__)

# Uncompressed contiguous stacks larger than this are memory-mapped rather than read whole.
_MEMMAP_BYTES = 256 * 2**20

# µm per unit, for OME PhysicalSize units and ImageJ/TIFF resolution units.
_UM_PER_UNIT = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "nanometer": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0,
    "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
    "centimeter": 1e4, "m": 1e6, "meter": 1e6, "inch": 25400.0, "in": 25400.0,
}


# tifffile logs (not raises) when the chain of pages is broken, e.g. a multi-page file cut short: it then
# returns the pages before the break as if the file ended there. These messages mean "truncated/corrupt".
_TIFFFILE_CORRUPT = ("invalid page offset", "invalid offset", "corrupted tag", "invalid next page",
                     "missing data offset", "bytecounts tag", "truncated")


class _Capture(logging.Handler):
    """Collect tifffile's log records from this thread only (reads may run in parallel threads)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append(record)


@contextlib.contextmanager
def _tifffile_log(path: Path):
    tlog = logging.getLogger("tifffile")
    handler = _Capture()
    tlog.addHandler(handler)
    try:
        yield
    finally:
        tlog.removeHandler(handler)
        bad = None
        for rec in handler.records:
            msg = rec.getMessage()
            if rec.levelno >= logging.ERROR and any(k in msg.lower() for k in _TIFFFILE_CORRUPT):
                bad = bad or msg.split("> ", 1)[-1]
            else:
                logger.warning("%s: tifffile: %s", path, msg)
    if bad is not None:
        raise InputError(f"cannot read TIFF: the file is corrupt or truncated (tifffile: {bad})", path=path)


def _read_tiff(path: Path) -> tuple[np.ndarray, str, float | None]:
    import tifffile

    with _tifffile_log(path), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError("cannot read TIFF: the file holds no image data", path=path)
        series = tif.series[0]
        axes = series.axes
        # Several same-shaped 2D series (pages appended one by one) form a stack of planes.
        if len(tif.series) > 1:
            same = all(s.shape == series.shape and s.dtype == series.dtype for s in tif.series)
            if same and axes == "YX":
                data = np.stack([s.asarray() for s in tif.series])
                axes = "I" + axes
            else:
                logger.warning("%s: %d image series (e.g. positions), reading the first", path, len(tif.series))
                data = series.asarray()
        elif (series.dataoffset is not None and axes.endswith("YX") and len(axes) > 2
              and math.prod(series.shape) * series.dtype.itemsize > _MEMMAP_BYTES):
            # A big uncompressed stack: map it, so that taking one plane reads one plane, not gigabytes.
            dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
            data = np.memmap(path, dtype=dtype, mode="r", offset=series.dataoffset, shape=series.shape)
        else:
            data = series.asarray()
        spacing = _tiff_spacing(tif, path)
    if data.ndim != len(axes):  # should not happen; refuse rather than guess
        raise InputError(f"cannot read TIFF: axes {axes!r} do not match shape {data.shape}", path=path)
    return data, axes, spacing


def _to_um(value: float, unit: str | None) -> float | None:
    if unit is None:
        return value  # OME's default unit is µm
    factor = _UM_PER_UNIT.get(unit.strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ"))
    if factor is None:
        factor = _UM_PER_UNIT.get(unit.strip().lower())
    return None if factor is None else value * factor


def _positive(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _tiff_spacing(tif: Any, path: Path) -> float | None:
    """Pixel size in µm from OME, ImageJ, or plain TIFF resolution tags (in that order), else None."""
    if tif.is_ome and tif.ome_metadata:
        try:
            root = ET.fromstring(tif.ome_metadata)
            pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
            if pixels is not None and pixels.get("PhysicalSizeX"):
                um = _to_um(float(pixels.get("PhysicalSizeX")), pixels.get("PhysicalSizeXUnit"))
                if um is None:
                    logger.warning("%s: unknown OME unit %r; pixel size ignored", path,
                                   pixels.get("PhysicalSizeXUnit"))
                sy = pixels.get("PhysicalSizeY")
                if um and sy and abs(float(sy) / float(pixels.get("PhysicalSizeX")) - 1) > 0.01:
                    logger.warning("%s: anisotropic pixels (X %s, Y %s); using X", path,
                                   pixels.get("PhysicalSizeX"), sy)
                return _positive(um)
        except (ET.ParseError, ValueError) as exc:
            logger.warning("%s: unreadable OME metadata (%s); pixel size ignored", path, exc)
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    if tif.is_imagej:
        unit = (tif.imagej_metadata or {}).get("unit")
        if not unit or unit in ("pixel", "pixels"):
            return None
        um = _to_um(1.0 / per_unit, str(unit))
        if um is None:
            logger.warning("%s: unknown ImageJ unit %r; pixel size ignored", path, unit)
        return _positive(um)
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default is inch
    if unit == 2:
        um = 25400.0 / per_unit
    elif unit == 3:
        um = 10000.0 / per_unit
    else:
        return None  # unit NONE: an aspect ratio, not a size
    # Software writes 72/96/300 dpi by default; no microscope image has pixels of 10 µm or more.
    if not 1e-4 <= um < 10.0:
        logger.info("%s: resolution %.4g µm/px looks like a display default; pixel size ignored", path, um)
        return None
    return um
