"""Reading images and label images, with validation that names the file and the problem.

The generic reader: file checks, the dispatch to a format (TIFF in :mod:`._tiff`, PNG / JPEG here), the
choice of one 2D plane (:mod:`._plane`), and the checks on the values. ``read_image`` returns an
:class:`Image`; ``read_labels`` an int32 label image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import InputError
from ._plane import _describe, _select_plane
from ._tiff import _read_tiff
from ._zarr import ZARR_SUFFIXES, read_zarr, read_zarr_labels

__all__ = ["SUPPORTED_SUFFIXES", "Image", "read_image", "read_labels", "image_name"]

#: File name endings read by :func:`read_image` (case-insensitive); longest first where they overlap.
#: OME-Zarr stores (``*.ome.zarr``, ``*.zarr``) are folders, read with the ``ome`` extra.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg",
                                       *ZARR_SUFFIXES)
_TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


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
    suffix = _suffix_of(path)
    if path.is_dir() != (suffix in ZARR_SUFFIXES):
        raise InputError("is a folder, not an image file" if path.is_dir() else
                         "an OME-Zarr image is a folder, found a file", path=path)
    if suffix is None:
        raise InputError(
            f"unsupported format {path.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(sorted(set(SUPPORTED_SUFFIXES)))}",
            path=path,
        )
    return suffix


def _read_raw(path: Path, suffix: str) -> tuple[np.ndarray, str, float | None]:
    """Read the stored array with its axes (tifffile letters, ``Y`` and ``X`` included) and pixel size."""
    try:
        if suffix in _TIFF_SUFFIXES:
            return _read_tiff(path)
        if suffix in ZARR_SUFFIXES:
            return read_zarr(path)
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
        kind = ("TIFF" if suffix in _TIFF_SUFFIXES else "OME-Zarr" if suffix in ZARR_SUFFIXES
                else suffix.lstrip(".").upper())
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # a corrupt file's bytes end up in the library's message: keep the message readable and short
        detail = "".join(c if " " <= c <= "~" else "?" for c in detail)
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise InputError(
            f"cannot read {kind}: the file is corrupt, truncated or not a {kind} ({detail})", path=path
        ) from exc


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


def read_image(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    plane: int | None = None,
    pixel_size: float | None = None,
) -> Image:
    """Read one 2D grayscale image (TIFF, OME-TIFF, PNG, JPEG, OME-Zarr level 0) as float32, values as acquired.

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
        TIFF or PNG label image, integer-valued (float files holding whole numbers are accepted), or an
        OME-Zarr image whose ``labels`` group holds them (the first label image listed), or a zarr array.

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
    if suffix in ZARR_SUFFIXES and (p / "labels").is_dir():
        raw, axes = read_zarr_labels(p), "YX"
    else:
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
