"""Writing a huge image and its labels to OME-Zarr block by block: the labels arrive from the tiled
segmenter a band of rows at a time (:class:`ZarrLabelSink`, a sink of
:func:`nucleoscope.tiling.segment_tiled`), and every pyramid level is computed from the level below it
in blocks, so nothing holds a whole level.

The store has the layout and metadata of :func:`nucleoscope.io.write_ome_zarr` (NGFF 0.5 through
ome-zarr-py's metadata writers, levels ``s0, s1, ...`` each every 2nd pixel of the last, the labels an
image-label ``labels/<name>`` pointing at the image), and is written in a temporary folder beside the
target, moved into place when complete.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError
from ._zarr import _MIN_LEVEL_SIDE, _replace_dir, _zarr

__all__ = ["ZarrLabelSink"]


def _create(group: Any, name: str, shape: tuple[int, int], dtype: Any, chunks: int) -> Any:
    return group.create_array(name, shape=shape, chunks=(min(chunks, shape[0]), min(chunks, shape[1])),
                              dtype=dtype, fill_value=0)


def _level_shapes(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Shapes of the levels :func:`nucleoscope.io.write_ome_zarr` writes for a level 0 of ``shape``."""
    shapes = [shape]
    while min(shapes[-1]) // 2 >= _MIN_LEVEL_SIDE:
        h, w = shapes[-1]
        shapes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return shapes


def _copy_blocks(src: Any, dst: Any, chunk: int) -> None:
    """``dst[...] = src[...]`` in blocks of ``chunk`` rows (each row block read whole in X)."""
    for r in range(0, dst.shape[0], chunk):
        dst[r:r + chunk] = np.asarray(src[r:r + chunk, 0:dst.shape[1]])


def _write_levels(group: Any, level0: Any, chunks: int) -> list[tuple[int, int]]:
    """Levels ``s1, s2, ...`` of ``group``, each every 2nd pixel of the one below, in blocks."""
    shapes = _level_shapes(tuple(level0.shape))
    prev = level0
    for k, shape in enumerate(shapes[1:], start=1):
        arr = _create(group, f"s{k}", shape, level0.dtype, chunks)
        for r in range(0, shape[0], chunks):
            arr[r:r + chunks] = np.asarray(prev[2 * r:2 * (r + chunks)])[::2, ::2]
        prev = arr
    return shapes


def _write_multiscale_metadata(group: Any, shapes: list[tuple[int, int]], spacing: float | None,
                               name: str) -> None:
    from ome_zarr.format import CurrentFormat
    from ome_zarr.writer import write_multiscales_metadata

    fmt = CurrentFormat()
    axes: list[dict] = [{"name": n, "type": "space", "unit": "micrometer"} for n in ("y", "x")]
    if spacing is None:
        axes = [{"name": a["name"], "type": "space"} for a in axes]
    transforms = fmt.generate_coordinate_transformations(shapes) or []
    for t in transforms:
        t[0]["scale"] = [s * (spacing or 1.0) for s in t[0]["scale"]]
    datasets = [{"path": f"s{k}", "coordinateTransformations": t} for k, t in enumerate(transforms)]
    write_multiscales_metadata(group, datasets=datasets, fmt=fmt, axes=axes, name=name)


class ZarrLabelSink:
    """An OME-Zarr store being written: the image copied in, the labels to come from a tiled segmenter.

    Creating it writes the image (level 0 copied from ``image`` block by block, then its pyramid) into a
    temporary folder beside ``path``; :func:`nucleoscope.tiling.segment_tiled` (``sink=``) then writes
    the labels' final rows to level 0 of ``labels/<label_name>`` as the tiles go, and :meth:`finish`
    renumbers them, writes their pyramid and the metadata and moves the store into place. Use it as a
    context manager: leaving the ``with`` block on an exception removes the temporary folder.

    Parameters
    ----------
    path : str or os.PathLike
        Destination folder, by convention ``NAME.ome.zarr``; an existing one is replaced at the end.
    image : array-like, (Y, X)
        Intensities, sliced a block of rows at a time and stored in their own dtype (a zarr array, a
        memmap, :attr:`nucleoscope.io.LazyFile.data`).
    spacing : float, optional
        µm per pixel, written as the ``scale`` of level 0.
    label_name : str
        The image-label's name.
    chunks : int
        Chunk side (px) of every array; also the rows held back until a whole chunk row is final.

    Attributes
    ----------
    shape : (int, int)
    path : pathlib.Path
        The destination.

    Examples
    --------
    >>> with ZarrLabelSink("big.ome.zarr", lazy.data, spacing=0.1) as sink:  # doctest: +SKIP
    ...     segment_large(lazy.data, method="otsu", sink=sink)
    """

    def __init__(self, path: str | os.PathLike, image: Any, *, spacing: float | None = None,
                 label_name: str = "nuclei", chunks: int = 1024) -> None:
        self.path = Path(path)
        if len(image.shape) != 2:
            raise InputError(f"image to write must be (Y, X), got shape {tuple(image.shape)}", path=self.path)
        if int(chunks) < 1:
            raise ValueError(f"chunks must be >= 1 px, got {chunks}")
        zarr = _zarr(self.path)
        self.shape = (int(image.shape[0]), int(image.shape[1]))
        self.chunks = int(chunks)
        self.spacing = spacing
        self.label_name = label_name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._root = zarr.open_group(str(self._tmp), mode="w")
            s0 = _create(self._root, "s0", self.shape, np.dtype(image.dtype).newbyteorder("="), self.chunks)
            _copy_blocks(image, s0, self.chunks)
            _write_multiscale_metadata(self._root, _write_levels(self._root, s0, self.chunks), spacing,
                                       self.path.name)
            self._labels = self._root.require_group("labels").require_group(label_name)
            self._level0 = _create(self._labels, "s0", self.shape, np.int32, self.chunks)
        except BaseException:
            self.abort()
            raise
        self._buf = np.zeros((0, self.shape[1]), np.int32)
        self._b0 = 0  # first row held in _buf; rows above it are on disk
        self._done = False

    def __enter__(self) -> "ZarrLabelSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def abort(self) -> None:
        """Remove the temporary store (nothing is left at ``path`` that was not there before)."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Writable int32 rows ``start:stop`` (:meth:`nucleoscope.tiling.LabelSink.rows`); the whole
        chunk rows above ``start`` go to disk and leave memory."""
        ny = self.shape[0]
        cut = ny if start >= ny else (start // self.chunks) * self.chunks
        if cut > self._b0:
            self._level0[self._b0:cut] = self._buf[:cut - self._b0]
            self._buf = self._buf[cut - self._b0:].copy()
            self._b0 = cut
        held = self._b0 + self._buf.shape[0]
        if stop > held:
            self._buf = np.concatenate([self._buf, np.zeros((stop - held, self.shape[1]), np.int32)])
        return self._buf[start - self._b0:stop - self._b0]

    def finish(self, lut: np.ndarray, chunk: int | None = None) -> Path:
        """Renumber level 0 through ``lut`` block by block, write the label pyramid and metadata, and move
        the store to :attr:`path`; returns it."""
        del chunk  # the store's own chunks set the blocks
        if self._b0 < self.shape[0] or self._buf.size:
            self.rows(self.shape[0], self.shape[0])
        self._buf = np.zeros((0, self.shape[1]), np.int32)
        lut = np.asarray(lut, np.int32)
        for r in range(0, self.shape[0], self.chunks):
            self._level0[r:r + self.chunks] = np.take(lut, np.asarray(self._level0[r:r + self.chunks]))
        shapes = _write_levels(self._labels, self._level0, self.chunks)
        _write_multiscale_metadata(self._labels, shapes, self.spacing, self.label_name)
        from ome_zarr.writer import write_label_metadata

        write_label_metadata(self._root["labels"], self.label_name, source={"image": "../../"})
        _replace_dir(self._tmp, self.path)
        self._done = True
        return self.path
