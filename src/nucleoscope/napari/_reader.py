"""The reader: ``nucleoscope run`` output folders, TIFF / OME-TIFF, and OME-Zarr, through :mod:`nucleoscope.io`.

A run folder (``run.json`` + ``labels/``, or a ``measure`` folder, whose labels stay at ``images.csv``'s
``LabelsPath``) opens every image it analysed: the image (read again from the path in ``images.csv``,
when it is still there), its labels as ``"<image> nuclei"`` with its rows of ``nuclei.parquet`` as the
layer's features (and the folder as ``metadata["run_dir"]``), and its QC-flagged nuclei. An OME-Zarr store opens its image
and its image-labels (``--ome-zarr`` stores hold both).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import InputError

log = logging.getLogger(__name__)

__all__ = ["get_reader", "read_path", "read_run_folder"]

LayerData = tuple[Any, dict, str]

_TIFF = (".tif", ".tiff")


def _is_run_folder(p: Path) -> bool:
    """A ``run`` output folder (``labels/``), or a ``measure`` one (its labels stay where they were:
    ``images.csv``'s ``LabelsPath``)."""
    return p.is_dir() and (p / "run.json").is_file() and ((p / "labels").is_dir() or (p / "images.csv").is_file())


def _label_files(root: Path, images: Any) -> list[tuple[str, Path]]:
    """(image name, label image) of every image a run folder analysed."""
    own = sorted((root / "labels").glob("*.tif"))
    if own or images is None or "LabelsPath" not in images:
        return [(f.stem, f) for f in own]
    ok = images[images["Status"] == "ok"] if "Status" in images else images
    out = []
    for name, lp in zip(ok["ImageName"].astype(str), ok["LabelsPath"].astype(str)):
        p = Path(lp) if Path(lp).is_absolute() else root / lp
        if p.is_file():
            out.append((name, p))
        else:
            log.warning("%s: its labels %s are not there any more", name, p)
    return out


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and p.name.lower().endswith(".zarr")


def get_reader(path: str | os.PathLike | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader hook: :func:`read_path` when nucleoscope reads ``path``, else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    for p in map(Path, paths):
        if not (_is_run_folder(p) or _is_zarr(p) or (p.is_file() and p.suffix.lower() in _TIFF)):
            return None
    return read_path


def _image_layer(img: Any, name: str | None = None) -> LayerData:
    s = img.spacing
    meta = {"spacing_um": s, "saturation": img.saturation, "source": img.source, "dtype": img.dtype}
    return (img.data, {"name": name or img.name, "metadata": meta, "scale": (s, s) if s else (1.0, 1.0)}, "image")


def _labels_layers(labels: np.ndarray, name: str, spacing: float | None, table: Any = None,
                   run_dir: Path | None = None) -> list[LayerData]:
    from ._common import FLAGGED_SUFFIX, LABELS_SUFFIX, _flagged_colormap

    scale = (spacing, spacing) if spacing else (1.0, 1.0)
    meta = {"source_image": name, "spacing_um": spacing}
    if run_dir is not None:  # the Classify widget trains on (and predicts) the run's own table
        meta["run_dir"] = str(run_dir)
    attrs: dict = {"name": name + LABELS_SUFFIX, "metadata": meta, "scale": scale}
    out = []
    if table is not None:
        attrs["features"] = table
    out.append((labels, attrs, "labels"))
    if table is not None and "QC_Flagged" in table:
        ids = table.loc[table["QC_Flagged"].astype(bool), "ObjectNumber"].to_numpy(dtype=np.int64)
        flagged = np.where(np.isin(labels, ids), labels, 0).astype(np.int32)
        out.append((flagged, {"name": name + FLAGGED_SUFFIX, "metadata": {"source_image": name}, "scale": scale,
                              "colormap": _flagged_colormap(), "opacity": 1.0}, "labels"))
    return out


def read_run_folder(folder: str | os.PathLike) -> list[LayerData]:
    """The layers of a ``nucleoscope run`` output folder: per image, the image, its nuclei with their
    table rows, and its QC-flagged nuclei.

    Raises
    ------
    InputError
        No ``labels/*.tif`` in the folder.
    """
    from .. import io

    root = Path(folder)
    table = io.read_table(root / "nuclei.parquet") if (root / "nuclei.parquet").is_file() else None
    images = io.read_table(root / "images.csv", dtype={"ImageName": str}) if (root / "images.csv").is_file() else None
    label_files = _label_files(root, images)
    if not label_files:
        raise InputError("this run folder holds no labels/*.tif and names no label image that is still there "
                         "(did the run finish an image?)", path=root)
    if table is not None:
        table["ImageName"] = table["ImageName"].astype(str)
    layers: list[LayerData] = []
    for name, lf in label_files:
        spacing = None
        row = images[images["ImageName"] == name] if images is not None else None
        if row is not None and len(row):
            src = Path(str(row["Path"].iloc[0]))
            if not src.is_absolute():
                src = root / src
            try:
                img = io.read_image(src) if src.exists() else None
            except InputError as exc:
                log.warning("%s: image not opened: %s", name, exc)
                img = None
            if img is not None:
                ps = row["PixelSize_um"].iloc[0] if "PixelSize_um" in row else None
                spacing = float(ps) if ps is not None and np.isfinite(float(ps)) else img.spacing
                layers.append(_image_layer(img, name))
                layers[-1][1]["metadata"]["spacing_um"] = spacing
                layers[-1][1]["scale"] = (spacing, spacing) if spacing else (1.0, 1.0)
            else:
                log.warning("%s: the image %s is not there any more; opening its labels only", name, src)
        rows = None
        if table is not None:
            rows = table[table["ImageName"] == name].drop(columns=["ImageName"]).reset_index(drop=True)
        layers += _labels_layers(io.read_labels(lf), name, spacing, rows, run_dir=root.resolve())
    return layers


def _read_one(p: Path) -> list[LayerData]:
    from .. import io

    if _is_run_folder(p):
        return read_run_folder(p)
    try:
        img = io.read_image(p)
    except InputError as first:
        try:  # a z-stack or time series: all of its planes
            stack = io.read_stack(p)
        except Exception:  # noqa: BLE001 - the 2D reader's message says more
            raise first from None
        s = stack.spacing
        return [(stack.data, {"name": stack.name, "metadata": {"spacing_um": s, "source": str(p)}}, "image")]
    layers = [_image_layer(img)]
    if _is_zarr(p) and (p / "labels").is_dir():
        try:
            labels = io.read_zarr_labels(p)
        except InputError as exc:
            log.warning("%s", exc)
        else:
            layers += _labels_layers(labels, img.name, img.spacing)
    return layers


def read_path(path: str | os.PathLike | Sequence[str]) -> list[LayerData]:
    """Read one path or several into napari layer data (``(data, attributes, type)`` tuples).

    Raises
    ------
    InputError
        A file nucleoscope cannot read; the message names it and the problem (napari shows it).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        out += _read_one(Path(p))
    return out
