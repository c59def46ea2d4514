"""Atomic writers: TIFF images and labels, tables, JSON, PNG. A crash never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._errors import InputError

__all__ = ["atomic_path", "write_image", "write_labels", "read_table", "write_table", "write_json", "write_png"]

_TABLE_SUFFIXES = (".parquet", ".csv")


def check_writable(path: str | os.PathLike) -> Path:
    """Check, before any work, that a file can be written at ``path`` (its folder is created).

    Raises
    ------
    InputError
        The path is a folder, or its folder cannot be created or written.
    """
    from .._errors import InputError

    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; give a file name for the table", path=p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        probe = p.parent / f".~{os.getpid()}-write-test.{p.name}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write here: {exc.strerror or exc}", path=p) from None
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary file lives in the same folder (so ``os.replace`` is an atomic rename on one file
    system) and ends with the target's full name (so writers that pick a format by suffix still work).
    On an exception it is removed and ``path`` is left as it was. The parent folder is created.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.

    Yields
    ------
    pathlib.Path
        Where to write.

    Examples
    --------
    >>> with atomic_path("out/table.csv") as tmp:  # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Leading dot: hidden, and skipped by find_images if the process dies before cleanup.
    tmp = target.with_name(f".~{os.getpid()}-{secrets.token_hex(4)}.{target.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer did not create the temporary file")
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _as_labels(labels: Any, path: Path) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise InputError(f"labels to write must be (Y, X) or (Z, Y, X), got shape {arr.shape}", path=path)
    if arr.dtype == np.bool_:
        return arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"labels to write must be integers, got dtype {arr.dtype}", path=path)
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise InputError(f"label values must lie in 0..2**31-1, got {arr.min()}..{arr.max()}", path=path)
    return arr.astype(np.int32, copy=False)


def _resolution(spacing: float | None, path: Path) -> dict[str, Any]:
    """tifffile keywords storing ``spacing`` (µm per pixel) as TIFF resolution; none for ``None``."""
    if spacing is None:
        return {}
    if not (isinstance(spacing, (int, float, np.integer, np.floating)) and math.isfinite(spacing) and spacing > 0):
        raise InputError(f"spacing must be a positive number of µm, got {spacing!r}", path=path)
    # TIFF has no µm unit; centimetre is standard and lossless enough (rational with 1e6 denominator).
    return dict(resolution=(1e4 / spacing, 1e4 / spacing), resolutionunit="CENTIMETER")


def write_image(path: str | os.PathLike, image: np.ndarray, *, spacing: float | None = None,
                compression: Literal["zlib", "none"] = "zlib") -> Path:
    """Write a grayscale image or stack as a TIFF in its own dtype, atomically.

    The one TIFF writer of nucleoscope: :func:`write_labels` and ``nucleoscope synth`` go through it.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.tif``.
    image : np.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` integer or floating-point values, stored as they are (no rescaling,
        no change of dtype); boolean masks are stored as uint8 0/1.
    spacing : float, optional
        µm per pixel, stored as TIFF resolution (pixels per cm) so that :func:`read_image` and
        ImageJ/Fiji recover it.
    compression : {"zlib", "none"}
        Lossless zlib (default) or none.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Not 2D or 3D, not a real number dtype, a spacing that is not a positive number, an unknown
        compression.

    Examples
    --------
    >>> write_image("out/field.tif", image, spacing=0.65)  # doctest: +SKIP
    >>> read_image("out/field.tif").spacing  # doctest: +SKIP
    0.65
    """
    import tifffile

    target = Path(path)
    data = np.asarray(image)
    if data.ndim not in (2, 3):
        raise InputError(f"image to write must be (Y, X) or (Z, Y, X), got shape {data.shape}", path=target)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"image to write must hold integers or floats, got dtype {data.dtype}", path=target)
    if compression not in ("zlib", "none"):
        raise InputError(f"compression must be 'zlib' or 'none', got {compression!r}", path=target)
    kwargs = _resolution(spacing, target)
    if compression == "zlib":
        kwargs["compression"] = "zlib"
    with atomic_path(target) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack", **kwargs)
    return target


def write_labels(path: str | os.PathLike, labels: np.ndarray, *, spacing: float | None = None,
                 dtype: Literal["int32", "uint16"] = "int32") -> Path:
    """Write an instance label image as a zlib-compressed TIFF, atomically (via :func:`write_image`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.tif``.
    labels : np.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` integer (or boolean) labels, 0 = background, values in 0..2**31-1.
    spacing : float, optional
        µm per pixel, stored as TIFF resolution (pixels per cm) so that :func:`read_image` and
        ImageJ/Fiji recover it.
    dtype : {"int32", "uint16"}
        Stored type: int32 (default; never narrowed) or, where a format asks for it, uint16, which
        raises rather than wrap a label above 65535.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Not 2D or 3D, not integers, negative or too large values, a bad spacing.
    """
    target = Path(path)
    data = _as_labels(labels, target)
    if dtype == "uint16":
        if data.size and data.max() > np.iinfo(np.uint16).max:
            raise InputError(f"labels up to {data.max()} do not fit uint16; write them as int32", path=target)
        data = data.astype(np.uint16)
    elif dtype != "int32":
        raise InputError(f"labels dtype must be 'int32' or 'uint16', got {dtype!r}", path=target)
    return write_image(target, data, spacing=spacing)


def _table_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise InputError(f"unsupported table format {suffix!r}; use .parquet or .csv", path=path)
    return suffix


def read_table(path: str | os.PathLike, *, dtype: Mapping[str, Any] | None = None) -> "pd.DataFrame":  # noqa: F821
    """Read a table written by :func:`write_table` (``.parquet`` or ``.csv``, by suffix).

    Parameters
    ----------
    path : str or os.PathLike
        ``.parquet`` or ``.csv`` file.
    dtype : mapping, optional
        Column dtypes for CSV, whose text loses them: e.g. ``{"ImageName": str}`` keeps an image named
        ``"01"`` from coming back as the number 1. Parquet stores dtypes and ignores this.

    Raises
    ------
    InputError
        Missing file, unsupported suffix, unreadable content.
    """
    import pandas as pd

    p = Path(path)
    kind = _table_kind(p)
    if not p.is_file():
        raise InputError("file not found", path=p)
    try:
        return pd.read_parquet(p) if kind == ".parquet" else pd.read_csv(p, dtype=dtype)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:  # noqa: BLE001 - pyarrow/pandas raise many kinds for a bad file
        raise InputError(f"cannot read table: {type(exc).__name__}: {exc}", path=p) from exc


def write_table(df: "pd.DataFrame", path: str | os.PathLike) -> Path:  # noqa: F821
    """Write a DataFrame by suffix: ``.parquet`` (pyarrow) or ``.csv``; without the index; atomically.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    target = Path(path)
    kind = _table_kind(target)
    with atomic_path(target) as tmp:
        if kind == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            _formula_safe(df).to_csv(tmp, index=False)
    return target


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _formula_safe(df: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """A copy whose text cells that begin like a formula start with ``'`` (file names such as
    ``=HYPERLINK(...).tif`` end up in ImageName and Path; Excel would run them). Numbers are untouched;
    the Parquet tables keep the text as it is."""
    import pandas as pd

    text = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)]
    risky = {c: df[c].map(lambda v: isinstance(v, str) and v.startswith(_FORMULA_START)) for c in text}
    risky = {c: m for c, m in risky.items() if m.any()}
    if not risky:
        return df
    out = df.copy()
    for c, m in risky.items():
        out.loc[m, c] = "'" + out.loc[m, c]
    return out


def _jsonable(obj: Any) -> Any:
    """Plain-JSON view of ``obj``: numpy scalars/arrays, Paths, dataclasses, sets, dates; NaN/Inf -> null."""
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as UTF-8 JSON (indent 2, trailing newline), atomically.

    numpy scalars and arrays, ``Path``, dataclasses, sets and dates are converted; NaN and Inf become
    ``null`` so the file is strict JSON.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    target = Path(path)
    text = json.dumps(_jsonable(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a uint8 image as PNG, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.png``.
    rgb : np.ndarray
        ``(Y, X, 3)`` RGB, ``(Y, X, 4)`` RGBA or ``(Y, X)`` grayscale, uint8.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import imagecodecs

    target = Path(path)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise InputError(f"PNG data must be uint8, got {arr.dtype}", path=target)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise InputError(f"PNG data must be (Y, X), (Y, X, 3) or (Y, X, 4), got shape {arr.shape}", path=target)
    # zlib level 3: the same size as the default (6) on overlays, 2.7x faster to encode (67 -> 25 ms
    # on a 520 x 696 overlay; level 1 is 20 ms but 12% larger)
    encoded = imagecodecs.png_encode(np.ascontiguousarray(arr), level=3)
    with atomic_path(target) as tmp:
        tmp.write_bytes(encoded)
    return target
