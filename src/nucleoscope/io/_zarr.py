"""OME-Zarr (NGFF) images and labels: reading level 0 of a multiscale image, writing an image with its
nucleus labels as a multiscale pyramid.

Reading uses ``zarr`` directly (the NGFF attributes are plain JSON: ``multiscales`` under ``ome`` in
format 0.5, at the top in 0.4), so files from any writer (ome-zarr-py, bioformats2raw, NGFF-Converter,
napari) are read the same way. Writing uses ``ome-zarr`` (the reference implementation of the
specification): a store that other tools open is the point of the format. Both are the optional extra
``pip install nucleoscope[ome]``; without it a clear error says so.

Layout written by :func:`write_ome_zarr`::

    NAME.ome.zarr/            image: multiscale (Y, X), levels 0..L-1, each half the last
    NAME.ome.zarr/labels/nuclei/   image-label: the same pyramid of int32 labels (nearest: ids kept)
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ._tiff import _positive, _to_um

__all__ = ["ZARR_SUFFIXES", "read_zarr", "read_zarr_labels", "write_ome_zarr"]

#: Folder suffixes read as OME-Zarr (a folder, not a file).
ZARR_SUFFIXES: tuple[str, ...] = (".ome.zarr", ".zarr")
#: NGFF axis type -> tifffile's axis letter, so the plane selection of TIFFs applies unchanged.
_LETTER = {"time": "T", "channel": "C"}
#: Pyramid levels stop when the short side would fall below this (px).
_MIN_LEVEL_SIDE = 256
_INSTALL = "reading and writing OME-Zarr needs the 'ome' extra: pip install 'nucleoscope[ome]'"


def _zarr(path: Path) -> Any:
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover - the extra is installed by `make test`
        raise InputError(_INSTALL, path=path) from exc
    return zarr


def _multiscales(attrs: dict, path: Path) -> dict | None:
    ms = attrs.get("ome", {}).get("multiscales", attrs.get("multiscales"))
    if ms is None:
        return None
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict) or not ms[0].get("datasets"):
        raise InputError("OME-Zarr 'multiscales' metadata is malformed (no datasets)", path=path)
    return ms[0]


def _axes_letters(ms: dict, ndim: int, path: Path) -> tuple[str, list[dict]]:
    axes = ms.get("axes")
    if axes is None:  # NGFF 0.1-0.3: always TCZYX, trailing ndim of them
        return "TCZYX"[-ndim:], [{"name": n} for n in "tczyx"[-ndim:]]
    axes = [a if isinstance(a, dict) else {"name": str(a)} for a in axes]
    if len(axes) != ndim:
        raise InputError(f"OME-Zarr axes {[a.get('name') for a in axes]} do not match the array's "
                         f"{ndim} dimensions", path=path)
    letters = ""
    for a in axes:
        name = str(a.get("name", "")).lower()
        letters += name.upper() if name in ("x", "y", "z") else _LETTER.get(str(a.get("type", "")).lower(), "Q")
    return letters, axes


def _spacing(ms: dict, axes: list[dict]) -> float | None:
    """µm per pixel of level 0 along X: its ``scale`` transform (times a multiscale-wide one), in the
    unit the axis declares (µm when none)."""
    names = [str(a.get("name", "")).lower() for a in axes]
    if "x" not in names:
        return None
    i = names.index("x")
    value = 1.0
    found = False
    for transforms in (ms["datasets"][0].get("coordinateTransformations", []),
                       ms.get("coordinateTransformations", [])):
        for t in transforms or []:
            if t.get("type") == "scale" and len(t.get("scale", [])) == len(axes):
                value *= float(t["scale"][i])
                found = True
    if not found:
        return None
    return _positive(_to_um(value, axes[i].get("unit")))


def read_zarr(path: Path) -> tuple[np.ndarray, str, float | None]:
    """Level 0 of an OME-Zarr image (or a bare zarr array) with tifffile axis letters and µm/pixel.

    Raises
    ------
    InputError
        Not a zarr store, malformed NGFF metadata, axes that do not match the array.
    """
    zarr = _zarr(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - any failure to open means "not a zarr store" to the user
        raise InputError(f"cannot open as zarr: {type(exc).__name__}: {exc}", path=path) from exc
    if isinstance(node, zarr.Array):  # a bare array: Y, X last, no metadata
        if node.ndim not in (2, 3):
            raise InputError(f"a zarr array without OME metadata must be (Y, X) or (Z, Y, X), got shape "
                             f"{node.shape}", path=path)
        return np.asarray(node[...]), "ZYX"[-node.ndim:], None
    ms = _multiscales(dict(node.attrs), path)
    if ms is None:
        raise InputError("zarr group without OME-Zarr 'multiscales' metadata (not an NGFF image)", path=path)
    level0 = ms["datasets"][0].get("path")
    try:
        arr = node[level0]
    except KeyError as exc:
        raise InputError(f"OME-Zarr level {level0!r} named in the metadata is missing", path=path) from exc
    letters, axes = _axes_letters(ms, arr.ndim, path)
    return np.asarray(arr[...]), letters, _spacing(ms, axes)


def read_zarr_labels(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Level 0 of an image-label of an OME-Zarr image: ``labels/<name>`` (default: the first listed).

    Raises
    ------
    InputError
        No ``labels`` group, or no label image of that name.
    """
    p = Path(path)
    zarr = _zarr(p)
    try:
        root = zarr.open_group(str(p), mode="r")
        group = root["labels"]
    except Exception as exc:  # noqa: BLE001
        raise InputError("OME-Zarr image holds no 'labels' group", path=p) from exc
    attrs = dict(group.attrs)
    listed = attrs.get("ome", {}).get("labels", attrs.get("labels", []))
    name = name or (listed[0] if listed else None)
    if name is None or name not in group:
        raise InputError(f"OME-Zarr holds no label image {name!r} (listed: {listed})", path=p)
    data, axes, _ = read_zarr(p / "labels" / name)
    keep = tuple(slice(None) if a in "YX" else 0 for a in axes)
    return np.asarray(data[keep])


def _pyramid(array: np.ndarray) -> list[np.ndarray]:
    """Level 0 and each half-size level (every 2nd pixel: exact ids for labels, a plain subsample for the
    image) while the short side stays >= :data:`_MIN_LEVEL_SIDE`."""
    levels = [array]
    while min(levels[-1].shape[-2:]) // 2 >= _MIN_LEVEL_SIDE:
        levels.append(levels[-1][..., ::2, ::2])
    return levels


def _scale(axes: list[dict], spacing: float | None) -> dict[str, float]:
    """Level 0's pixel size per axis (ome-zarr derives each level's from the shapes)."""
    return {a["name"]: (spacing or 1.0) if a["name"] in ("y", "x") else 1.0 for a in axes}


def write_ome_zarr(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray | None = None, *,
                   spacing: float | None = None, label_name: str = "nuclei",
                   chunks: int = 1024) -> Path:
    """Write ``image`` (and ``labels`` as its image-label) as an OME-Zarr multiscale store, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination folder, by convention ``NAME.ome.zarr``; an existing one is replaced.
    image : np.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` intensities, stored in their own dtype.
    labels : np.ndarray, optional
        Instance labels of the same shape, stored as int32 under ``labels/<label_name>``.
    spacing : float, optional
        µm per pixel (Y and X), written as the ``scale`` of level 0 with unit micrometer.
    chunks : int
        Chunk side (px) in Y and X.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        Not 2D/3D, labels of another shape.
    """
    target = Path(path)
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise InputError(f"image to write must be (Y, X) or (Z, Y, X), got shape {img.shape}", path=target)
    if labels is not None and np.shape(labels) != img.shape:
        raise InputError(f"labels shape {np.shape(labels)} differs from the image's {img.shape}", path=target)
    zarr = _zarr(target)
    from ome_zarr.writer import write_multiscale, write_multiscale_labels

    axes = [{"name": "z", "type": "space", "unit": "micrometer"}] if img.ndim == 3 else []
    axes += [{"name": n, "type": "space", "unit": "micrometer"} for n in ("y", "x")]
    if spacing is None:
        axes = [{"name": a["name"], "type": "space"} for a in axes]
    chunk = (1,) * (img.ndim - 2) + (chunks, chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        root = zarr.open_group(str(tmp), mode="w")
        levels = _pyramid(img)
        write_multiscale(levels, root, axes=axes, scale=_scale(axes, spacing), storage_options={"chunks": chunk},
                         name=target.name)
        if labels is not None:
            lab = np.ascontiguousarray(labels, dtype=np.int32)
            lv = _pyramid(lab)
            write_multiscale_labels(lv, root, name=label_name, axes=axes, scale=_scale(axes, spacing),
                                    storage_options={"chunks": chunk},
                                    label_metadata={"source": {"image": "../../"}})
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` folder to ``target``; an old ``target`` is moved aside first and removed
    after, so a crash leaves either the old store or the new one, never a mix."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
