"""Opening a huge image without reading it: level 0 of an OME-Zarr image or a TIFF as a (Y, X) array-like
that reads only the part it is sliced with.

A TIFF is memory-mapped when its pixels are stored uncompressed and contiguous
(``tifffile.memmap``), otherwise opened through tifffile's zarr store (``imread(aszarr=True)``: tiled
or striped TIFFs decode only the tiles or strips a slice touches). An OME-Zarr image is its level-0
zarr array. Axes other than Y and X must be of length 1 or chosen with ``channel`` / ``plane``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ._read import _TIFF_SUFFIXES, _check_file, image_name
from ._zarr import ZARR_SUFFIXES, _axes_letters, _multiscales, _spacing, _zarr

__all__ = ["LazyFile", "open_image_lazy"]


class _Plane:
    """A (Y, X) view of an array whose leading axes are fixed to ``lead`` (integer indices)."""

    def __init__(self, array: Any, lead: tuple[int, ...]) -> None:
        self.array, self.lead = array, tuple(int(i) for i in lead)
        self.shape = tuple(int(s) for s in array.shape[len(self.lead):])
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is Ellipsis:
            key = key[1:]
        return np.asarray(self.array[self.lead + key])


@dataclass(frozen=True, eq=False)
class LazyFile:
    """One 2D image opened, not read.

    Attributes
    ----------
    data : array-like, (Y, X)
        Slicing reads that part only, in the stored dtype (a zarr array, a ``numpy.memmap`` or a view
        of one plane of either).
    name, source : str
        As :class:`nucleoscope.io.Image`'s.
    spacing : float or None
        µm per pixel (``pixel_size`` if given, else the file's metadata).
    dtype : str
        The stored dtype.
    """

    data: Any
    name: str
    source: str
    spacing: float | None
    dtype: str

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def megapixels(self) -> float:
        return self.shape[0] * self.shape[1] / 1e6


def _choose_plane(array: Any, axes: str, path: Path, channel: int | None, plane: int | None) -> Any:
    """(Y, X) of ``array`` with tifffile axis letters ``axes``: Y and X last, other axes of length 1 or
    chosen by ``channel`` (``C``, ``S``) / ``plane`` (``Z``, ``T``, ``I``, ``Q``)."""
    if len(axes) != array.ndim or not axes.endswith("YX"):
        raise InputError(f"reading lazily needs Y and X as the last axes, got axes {axes!r} of shape "
                         f"{tuple(array.shape)}; read it whole (a smaller image) or convert it", path=path)
    lead = []
    for letter, size in zip(axes[:-2], array.shape[:-2]):
        want = channel if letter in "CS" else plane
        what = "--channel" if letter in "CS" else "--plane"
        if want is None:
            if size != 1:
                raise InputError(f"axis {letter} has {size} entries: choose one with {what}", path=path)
            want = 0
        if not 0 <= int(want) < size:
            raise InputError(f"{what} {want} is out of range: axis {letter} has {size} entries", path=path)
        lead.append(int(want))
    return _Plane(array, tuple(lead)) if lead else array


def open_image_lazy(path: str | os.PathLike, *, channel: int | None = None, plane: int | None = None,
                    pixel_size: float | None = None) -> LazyFile:
    """Open level 0 of an OME-Zarr image or a TIFF for tile-by-tile reading.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.ome.zarr`` / ``*.zarr`` folder or ``*.tif(f)`` file.
    channel, plane : int, optional
        Index along a channel axis / a Z, T or page axis, when it has more than one entry.
    pixel_size : float, optional
        µm per pixel; overrides the file's metadata.

    Returns
    -------
    LazyFile

    Raises
    ------
    InputError
        A format other than TIFF or OME-Zarr, a store or file that cannot be opened, axes other than
        ``...YX``, a choice of channel or plane that is missing or out of range.
    """
    p = Path(path)
    suffix = _check_file(p)
    if suffix in ZARR_SUFFIXES:
        array, axes, spacing = _open_zarr(p)
    elif suffix in _TIFF_SUFFIXES:
        array, axes, spacing = _open_tiff(p)
    else:
        raise InputError(f"reading lazily supports TIFF and OME-Zarr, not {suffix}", path=p)
    data = _choose_plane(array, axes, p, channel, plane)
    if pixel_size is not None:
        spacing = float(pixel_size)
    return LazyFile(data=data, name=image_name(p), source=os.fspath(path), spacing=spacing,
                    dtype=str(np.dtype(array.dtype).newbyteorder("=")))


def _open_zarr(path: Path) -> tuple[Any, str, float | None]:
    zarr = _zarr(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - any failure to open means "not a zarr store" to the user
        raise InputError(f"cannot open as zarr: {type(exc).__name__}: {exc}", path=path) from exc
    if isinstance(node, zarr.Array):
        return node, "ZYX"[-node.ndim:] if node.ndim <= 3 else "Q" * (node.ndim - 2) + "YX", None
    ms = _multiscales(dict(node.attrs), path)
    if ms is None:
        raise InputError("zarr group without OME-Zarr 'multiscales' metadata (not an NGFF image)", path=path)
    level0 = ms["datasets"][0].get("path")
    try:
        arr = node[level0]
    except KeyError as exc:
        raise InputError(f"OME-Zarr level {level0!r} named in the metadata is missing", path=path) from exc
    letters, axes = _axes_letters(ms, arr.ndim, path)
    return arr, letters, _spacing(ms, axes)


def _open_tiff(path: Path) -> tuple[Any, str, float | None]:
    import tifffile

    from ._tiff import _tiff_spacing, _tifffile_log

    try:
        with _tifffile_log(path), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError("cannot read TIFF: the file holds no image data", path=path)
            axes = tif.series[0].axes
            spacing = _tiff_spacing(tif, path)
        try:
            array: Any = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: decode the strips / tiles a slice touches
            zarr = _zarr(path)
            array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library error means the same thing to the user
        raise InputError(f"cannot open TIFF: {type(exc).__name__}: {exc}", path=path) from exc
    if array.ndim != len(axes):
        raise InputError(f"cannot read TIFF lazily: axes {axes!r} do not match shape {tuple(array.shape)}",
                         path=path)
    return array, axes, spacing
