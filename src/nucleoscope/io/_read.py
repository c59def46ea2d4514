"""Reading images and label images, with validation that names the file and the problem."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError

__all__ = ["SUPPORTED_SUFFIXES", "Image", "read_image", "read_labels", "image_name"]

logger = logging.getLogger(__name__)

#: File name endings read by :func:`read_image` (case-insensitive); longest first where they overlap.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg")
_TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")

# Axis letters as tifffile names them: C = channel, S = samples (RGB/RGBA) both count as channels;
# Z, T are planes; anything else (I = image sequence, Q = unknown, ...) can serve as either.
_CHANNEL_AXES = "CS"
# Uncompressed contiguous stacks larger than this are memory-mapped rather than read whole.
_MEMMAP_BYTES = 256 * 2**20
_PLANE_AXES = "ZT"

# µm per unit, for OME PhysicalSize units and ImageJ/TIFF resolution units.
_UM_PER_UNIT = {
    "pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "nanometer": 1e-3, "µm": 1.0, "μm": 1.0, "um": 1.0,
    "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
    "centimeter": 1e4, "m": 1e6, "meter": 1e6, "inch": 25400.0, "in": 25400.0,
}


@dataclass(frozen=True, eq=False)  # eq=False: compare by identity, never element-wise over arrays
class Image:
    """One 2D image as read from a file.

    Attributes
    ----------
    data : np.ndarray
        ``(Y, X)`` float32, the values as acquired (no rescaling).
    name : str
        The file stem without the image suffix (``"a.ome.tif"`` -> ``"a"``), also when a channel was taken.
    source : str
        The path as given.
    spacing : float or None
        Pixel size in µm per pixel: the ``pixel_size`` argument if given, else from the file's metadata
        (OME ``PhysicalSizeX``, ImageJ or TIFF resolution tags), else None.
    dtype : str
        The dtype of the stored data, e.g. ``"uint16"``.
    saturation : float
        Detector full scale, the level of an overexposed pixel: 255 for uint8; 4095 for uint16 data whose
        maximum is <= 4095 (12-bit cameras); 65535 for other uint16; 1.0 for float data within [0, 1];
        otherwise the data maximum.
    channel : int or None
        The channel taken from a multichannel image, if any.
    """

    data: np.ndarray
    name: str
    source: str
    spacing: float | None
    dtype: str
    saturation: float
    channel: int | None = None

    @property
    def megapixels(self) -> float:
        """Image size in megapixels (Y * X / 1e6)."""
        return float(self.data.shape[0] * self.data.shape[1]) / 1e6


def image_name(path: str | os.PathLike) -> str:
    """The file name without its image suffix: ``"dir/a.ome.tif"`` -> ``"a"``, ``"b.PNG"`` -> ``"b"``."""
    name = Path(path).name
    lower = name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _suffix_of(path: Path) -> str | None:
    lower = path.name.lower()
    return next((s for s in SUPPORTED_SUFFIXES if lower.endswith(s)), None)


def _check_file(path: Path) -> str:
    """Existence and format checks shared by the readers; returns the matched suffix."""
    if not path.exists():
        raise InputError("file not found", path=path)
    if path.is_dir():
        raise InputError("is a folder, not an image file", path=path)
    suffix = _suffix_of(path)
    if suffix is None:
        raise InputError(
            f"unsupported format {path.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(sorted(set(SUPPORTED_SUFFIXES)))}",
            path=path,
        )
    return suffix


# ----------------------------------------------------------------------------------------------------------
# Low-level reading: array + axes string + pixel size from metadata


def _read_raw(path: Path, suffix: str) -> tuple[np.ndarray, str, float | None]:
    """Read the stored array with its axes (tifffile letters, ``Y`` and ``X`` included) and pixel size."""
    try:
        if suffix in _TIFF_SUFFIXES:
            return _read_tiff(path)
        return _read_png_jpeg(path)
    except InputError:
        raise
    except MemoryError:
        raise
    except PermissionError as exc:
        raise InputError("permission denied: cannot open the file", path=path) from exc
    except OSError as exc:  # the disk or network share, not the format (short reads raise ValueError)
        raise InputError(f"cannot read the file: {exc.strerror or exc}", path=path) from exc
    except Exception as exc:  # noqa: BLE001 - every library error means the same thing to the user
        kind = "TIFF" if suffix in _TIFF_SUFFIXES else suffix.lstrip(".").upper()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # a corrupt file's bytes end up in the library's message: keep the message readable and short
        detail = "".join(c if " " <= c <= "~" else "?" for c in detail)
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise InputError(
            f"cannot read {kind}: the file is corrupt, truncated or not a {kind} ({detail})", path=path
        ) from exc


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


def _read_png_jpeg(path: Path) -> tuple[np.ndarray, str, float | None]:
    # imagecodecs is a declared dependency (tifffile's codecs) and decodes PNG and JPEG itself.
    import imagecodecs

    if path.name.lower().endswith((".jpg", ".jpeg")):
        raw = path.read_bytes()
        # libjpeg decodes a truncated JPEG without error, filling the missing part with grey. A complete
        # one has an end-of-image marker (FF D9) after its last start-of-scan (FF DA); entropy-coded data
        # byte-stuffs FF, so FF D9 cannot occur inside a scan.
        if raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda") or raw.rfind(b"\xff\xd9") < 0:
            raise InputError("cannot read JPEG: the file is truncated (no end-of-image marker)", path=path)
    data = np.asarray(imagecodecs.imread(os.fspath(path)))
    if data.ndim == 2:
        return data, "YX", None
    if data.ndim == 3:
        return data, "YXS", None
    raise InputError(f"cannot read image: unexpected decoded shape {data.shape}", path=path)


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


# ----------------------------------------------------------------------------------------------------------
# Picking one 2D plane


def _describe(axes: str, shape: tuple[int, ...]) -> str:
    return f"axes {axes} with shape {tuple(shape)}"


def _fix_yxc(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """tifffile names an unlabelled (Y, X, C) stack with C > 4 'QYX' with a tiny X; read it as (Y, X, C)."""
    if data.ndim == 3 and axes[0] not in _CHANNEL_AXES + _PLANE_AXES and axes.endswith("YX"):
        if data.shape[2] <= 8 and min(data.shape[0], data.shape[1]) >= 16:
            return data, "YXC"
    return data, axes


def _select_plane(
    data: np.ndarray, axes: str, path: Path, channel: int | None, plane: int | None
) -> tuple[np.ndarray, int | None]:
    """Reduce ``data`` to (Y, X) following ``channel`` and ``plane``; returns (data, channel taken)."""
    data, axes = _fix_yxc(data, axes)
    orig = _describe(axes, data.shape)
    ndim0 = data.ndim
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"no Y/X image axes found ({orig})", path=path)
    # Move Y, X last so every other axis is a leading one.
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    data = np.transpose(data, order)
    axes = "".join(axes[i] for i in order)
    # Singleton axes carry no choice.
    keep = [i for i, a in enumerate(axes[:-2]) if data.shape[i] > 1]
    data = data.reshape([data.shape[i] for i in keep] + list(data.shape[-2:]))
    extra = [axes[i] for i in keep]

    taken: int | None = None
    if channel is not None:
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise InputError(f"channel must be an integer, got {channel!r}", path=path)
        cands = [i for i, a in enumerate(extra) if a in _CHANNEL_AXES]
        if not cands:
            cands = [i for i, a in enumerate(extra) if a not in _PLANE_AXES]
        if len(cands) > 1:
            raise InputError(f"several axes could be the channel axis ({orig}); cannot pick --channel", path=path)
        n = data.shape[cands[0]] if cands else 1
        if not 0 <= channel < n:
            raise InputError(
                f"channel {channel} is out of range: the image has {n} channel{'s' * (n != 1)} "
                f"(valid: 0..{n - 1}; {orig})",
                path=path,
            )
        if cands:
            data = np.take(data, int(channel), axis=cands[0])
            del extra[cands[0]]
        taken = int(channel)
    elif "S" in extra:
        i = extra.index("S")
        n = data.shape[i]
        colour = np.take(data, range(min(n, 3)), axis=i) if n in (3, 4) else None
        second = np.take(data, 1, axis=i) if n == 2 else None
        if second is not None and second.min() == second.max():  # grey + opaque alpha
            data = np.take(data, 0, axis=i)
        elif second is not None:  # two stains stored as samples (Y, X, 2): never guess which one
            raise InputError(
                f"2-channel image ({orig}) where one channel is expected: pick the nuclear stain's channel "
                f"with --channel C (0..1)",
                path=path,
            )
        elif colour is not None and all(
            np.array_equal(np.take(colour, 0, axis=i), np.take(colour, k, axis=i)) for k in (1, 2)
        ):
            data = np.take(data, 0, axis=i)  # an RGB image that is really grayscale
        else:
            raise InputError(
                f"RGB{'A' if n == 4 else ''} colour image ({orig}) where one channel is expected: "
                f"pick the nuclear stain's channel with --channel C (0 = red, 1 = green, 2 = blue)",
                path=path,
            )
        del extra[i]

    if plane is not None:
        if isinstance(plane, bool) or not isinstance(plane, (int, np.integer)):
            raise InputError(f"plane must be an integer, got {plane!r}", path=path)
        cands = [i for i, a in enumerate(extra) if a not in _CHANNEL_AXES]
        if len(cands) > 1:
            found = ", ".join(f"{extra[i]}={data.shape[i]}" for i in cands)
            raise InputError(
                f"several plane axes ({found}; {orig}); --plane picks along one: save one Z or T series",
                path=path,
            )
        n = data.shape[cands[0]] if cands else 1
        if not 0 <= plane < n:
            raise InputError(f"plane {plane} is out of range: the image has {n} plane(s) ({orig})", path=path)
        if cands:
            data = np.take(data, int(plane), axis=cands[0])
            del extra[cands[0]]

    if extra:
        hints = []
        for i, a in enumerate(extra):
            n = data.shape[i]
            if a in _CHANNEL_AXES:
                hints.append(f"--channel C (0..{n - 1})")
            elif a in _PLANE_AXES:
                hints.append(f"--plane {a} (0..{n - 1})")
            else:
                hints.append(f"--channel C or --plane Z (0..{n - 1})")
        raise InputError(
            f"found {ndim0}D data ({orig}) but a 2D image "
            f"is expected: pick one with {' and '.join(dict.fromkeys(hints))}",
            path=path,
        )
    return data, taken


def _saturation(stored: np.dtype, data: np.ndarray) -> float:
    """Detector full scale (see :class:`Image`) for the stored dtype and the chosen plane ``data``."""
    if stored == np.uint8:
        return 255.0
    if stored == np.bool_:
        return 1.0
    top = float(data.max()) if data.size else 0.0
    if stored == np.uint16:
        return 4095.0 if top <= 4095 else 65535.0
    if np.issubdtype(stored, np.floating) and data.size and top <= 1.0 and float(data.min()) >= 0.0:
        return 1.0
    return top if top > 0 else 1.0


# ----------------------------------------------------------------------------------------------------------
# Public readers


def read_image(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    plane: int | None = None,
    pixel_size: float | None = None,
) -> Image:
    """Read one 2D grayscale image (TIFF, OME-TIFF, PNG, JPEG) as float32, values as acquired.

    Parameters
    ----------
    path : str or os.PathLike
        Image file; see :data:`SUPPORTED_SUFFIXES`.
    channel : int, optional
        Channel to take from a multichannel image: axis ``C`` (OME/ImageJ), the colour samples of an
        RGB(A) image, or the last axis of a ``(Y, X, C)`` array. ``0`` is accepted for single-channel images.
    plane : int, optional
        Z or T plane to take from a stack (multi-page TIFF, OME ``Z``/``T``).
    pixel_size : float, optional
        µm per pixel; overrides the file's metadata.

    Returns
    -------
    Image
        ``data`` is ``(Y, X)`` float32.

    Raises
    ------
    InputError
        Missing file, unsupported format, corrupt or truncated file, data that is not 2D after
        ``channel``/``plane``, a colour RGB image without ``channel``, ``channel``/``plane`` out of range,
        NaN or Inf values, invalid ``pixel_size``. The message names the file and the problem.

    Examples
    --------
    >>> img = read_image("nuclei.ome.tif", channel=0)  # doctest: +SKIP
    >>> img.data.shape, img.spacing  # doctest: +SKIP
    ((512, 512), 0.215)
    """
    p = Path(path)
    if pixel_size is not None:
        try:
            ok = math.isfinite(float(pixel_size)) and float(pixel_size) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"pixel size must be a positive number of µm, got {pixel_size!r}", path=p)
    suffix = _check_file(p)
    raw, axes, meta_spacing = _read_raw(p, suffix)
    plane_data, taken = _select_plane(raw, axes, p, channel, plane)
    if plane_data.size == 0:
        raise InputError(f"the image is empty (shape {plane_data.shape})", path=p)
    if np.iscomplexobj(plane_data):
        raise InputError(f"complex-valued data ({plane_data.dtype}) is not an intensity image", path=p)
    data = np.ascontiguousarray(plane_data, dtype=np.float32)
    if np.issubdtype(plane_data.dtype, np.floating):  # integers are always finite
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise InputError(
                f"the image contains non-finite values ({n_nan} NaN, {n_inf} Inf); "
                "replace them (e.g. with 0) before analysis",
                path=p,
            )
    spacing = float(pixel_size) if pixel_size is not None else meta_spacing
    stored = raw.dtype.newbyteorder("=")  # a memory-mapped big-endian file keeps its byte order
    return Image(
        data=data,
        name=image_name(p),
        source=os.fspath(path),
        spacing=spacing,
        dtype=str(stored),
        saturation=_saturation(stored, plane_data),
        channel=taken,
    )


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an instance label image (0 = background, 1..N).

    Parameters
    ----------
    path : str or os.PathLike
        TIFF or PNG label image, integer-valued (float files holding whole numbers are accepted).

    Returns
    -------
    np.ndarray
        ``(Y, X)`` int32.

    Raises
    ------
    InputError
        Missing/unsupported/corrupt file, data that is not 2D, non-integer, negative values, or values
        beyond int32.
    """
    p = Path(path)
    suffix = _check_file(p)
    raw, axes, _ = _read_raw(p, suffix)
    squeezed = raw.reshape([n for n in raw.shape if n > 1]) if raw.ndim > 2 else raw
    if squeezed.ndim != 2:
        raise InputError(f"labels must be a 2D image, found {_describe(axes, raw.shape)}", path=p)
    if squeezed.dtype == np.bool_:
        return squeezed.astype(np.int32)
    if np.issubdtype(squeezed.dtype, np.floating):
        if not np.isfinite(squeezed).all() or not np.array_equal(squeezed, np.round(squeezed)):
            raise InputError(f"labels must be integer-valued; found fractional or non-finite "
                             f"{squeezed.dtype} values", path=p)
    elif not np.issubdtype(squeezed.dtype, np.integer):
        raise InputError(f"labels must be integer-valued, found dtype {squeezed.dtype}", path=p)
    if squeezed.size:
        lo, hi = squeezed.min(), squeezed.max()
        if lo < 0:
            raise InputError(f"labels must be >= 0 (0 = background), found negative value {lo}", path=p)
        if hi > np.iinfo(np.int32).max:
            raise InputError(f"label value {hi} does not fit in int32", path=p)
    return np.ascontiguousarray(squeezed, dtype=np.int32)
