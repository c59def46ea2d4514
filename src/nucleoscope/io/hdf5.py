"""HDF5 data sets of nucleus crops or patches (images, masks, labels, metadata) for the classifiers.

SCENMED stored its nuclei as HDF5 data sets; this is ours. One file holds windows of one size from
any number of images, appended as they are measured, and is written atomically (a temporary file
renamed into place when the writer closes without error).

Layout (N windows of S x S pixels from M images)::

    /images           (N, S, S) float32   intensities as acquired (no rescaling)
    /masks            (N, S, S) uint8     1 = the window's own nucleus
    /labels           (N,)      int64     class label (index into attrs["class_names"]), -1 = unknown
    /object_number    (N,)      int32     the nucleus's label in its label image
    /image_index      (N,)      int32     row of /image_names the window comes from
    /image_names      (M,)      str       image names (file stems)
    /origin           (N, 2)    int64     (row, col) of the window's top-left pixel in its image
    /fits             (N,)      uint8     the whole nucleus is inside the window
    /inside_image     (N,)      uint8     the window lies inside the image (else padded)
    /inside_fraction  (N,)      float64   fraction of the window covered by its nucleus
    attrs: format="nucleoscope-crops", version=1, kind ("crops" | "patches"), size=S,
           class_names (JSON list), metadata (JSON object: parameters, pixel sizes, software)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import InputError
from ._write import atomic_path

if TYPE_CHECKING:  # io stays independent of the core at run time: any object with these fields works
    from ..features import Crops

__all__ = ["FORMAT", "CropWriter", "window_writers", "write_crops_h5", "read_crops_h5"]

FORMAT = "nucleoscope-crops"
_VERSION = 1
_CHUNK = 64  # windows per chunk: whole windows, so reading a batch touches few chunks


class CropWriter:
    """Append windows image by image to a new HDF5 file; atomic: visible only after :meth:`close`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.h5`` file (replaced if it exists).
    size : int
        Window side, pixels (every added :class:`~nucleoscope.features.Crops` must match).
    kind : {"crops", "patches"}
    metadata : mapping, optional
        JSON-serialisable description (parameters, pixel size, ...), stored in ``attrs["metadata"]``.

    Examples
    --------
    >>> with CropWriter("crops.h5", size=128) as w:  # doctest: +SKIP
    ...     w.add("img01", nucleus_crops(image, labels), class_label="MCF7")
    """

    def __init__(
        self, path: str | os.PathLike, *, size: int, kind: str = "crops", metadata: Mapping[str, Any] | None = None
    ) -> None:
        import h5py

        if kind not in ("crops", "patches"):
            raise InputError(f"kind must be 'crops' or 'patches', got {kind!r}", path=path)
        self.path = Path(path)
        self.size = int(size)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(tmp, "w")
            s = self.size
            f = self._f
            opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
            f.create_dataset("images", (0, s, s), np.float32, maxshape=(None, s, s), chunks=(_CHUNK, s, s), **opts)
            f.create_dataset("masks", (0, s, s), np.uint8, maxshape=(None, s, s), chunks=(_CHUNK, s, s), **opts)
            for name, dt in [
                ("labels", np.int64),
                ("object_number", np.int32),
                ("image_index", np.int32),
                ("fits", np.uint8),
                ("inside_image", np.uint8),
                ("inside_fraction", np.float64),
            ]:
                f.create_dataset(name, (0,), dt, maxshape=(None,), chunks=(1024,))
            f.create_dataset("origin", (0, 2), np.int64, maxshape=(None, 2), chunks=(1024, 2))
            f.attrs["format"] = FORMAT
            f.attrs["version"] = _VERSION
            f.attrs["kind"] = kind
            f.attrs["size"] = s
            f.attrs["metadata"] = json.dumps(dict(metadata or {}), default=str)
        except BaseException:
            self.abort()
            raise
        self._names: list[str] = []
        self._classes: list[Any] = []
        self._closed = False

    def _code(self, class_label: int | str | None) -> int:
        if class_label is None:
            return -1
        if isinstance(class_label, (int, np.integer)) and not isinstance(class_label, bool):
            if any(isinstance(c, str) for c in self._classes):
                raise InputError("class labels mix integers and names", path=self.path)
            if class_label < 0:
                raise InputError(f"integer class labels must be >= 0, got {class_label}", path=self.path)
            if int(class_label) not in self._classes:
                self._classes.append(int(class_label))
            return int(class_label)
        if any(not isinstance(c, str) for c in self._classes):
            raise InputError("class labels mix integers and names", path=self.path)
        name = str(class_label)
        if name not in self._classes:
            self._classes.append(name)
        return self._classes.index(name)

    def add(self, image_name: str, crops: "Crops", *, class_label: int | str | None = None) -> int:
        """Append the windows of one image; returns how many were added.

        Parameters
        ----------
        image_name : str
        crops : Crops
            From :func:`~nucleoscope.features.nucleus_crops` or :func:`~nucleoscope.features.nucleus_patches`.
        class_label : int or str, optional
            The image's class (cell line, condition): integers are stored as given; names are coded
            0, 1, ... in order of first appearance and listed in ``attrs["class_names"]``.
        """
        if self._closed:
            raise ValueError("writer is closed")
        if len(crops) and crops.size != self.size:
            raise InputError(f"window size {crops.size} differs from the file's {self.size}", path=self.path)
        code = self._code(class_label)
        self._names.append(str(image_name))
        n = len(crops)
        if n == 0:
            return 0
        f = self._f
        old = f["images"].shape[0]
        new = old + n
        for name in f:
            if name != "image_names":
                f[name].resize(new, axis=0)
        f["images"][old:new] = crops.images.astype(np.float32, copy=False)
        f["masks"][old:new] = crops.masks.astype(np.uint8)
        f["labels"][old:new] = code
        f["object_number"][old:new] = crops.object_numbers
        f["image_index"][old:new] = len(self._names) - 1
        f["origin"][old:new] = crops.origins
        f["fits"][old:new] = crops.fits.astype(np.uint8)
        f["inside_image"][old:new] = crops.inside_image.astype(np.uint8)
        f["inside_fraction"][old:new] = crops.inside_fraction
        return n

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self._closed:
            return self.path
        import h5py

        f = self._f
        f.create_dataset("image_names", data=np.array(self._names, dtype=object), dtype=h5py.string_dtype())
        names = self._classes if all(isinstance(c, str) for c in self._classes) else []
        f.attrs["class_names"] = json.dumps(names)
        f.close()
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Close and delete the unfinished file (the destination is left as it was)."""
        try:
            if getattr(self, "_f", None) is not None:
                self._f.close()
        finally:
            self._closed = True
            err = RuntimeError("aborted")
            try:
                self._ctx.__exit__(RuntimeError, err, None)
            except RuntimeError:
                pass

    def __enter__(self) -> CropWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_crops_h5(
    path: str | os.PathLike,
    items: Iterable[tuple],
    *,
    size: int,
    kind: str = "crops",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``(image_name, crops[, class_label])`` items to one HDF5 file (see :class:`CropWriter`)."""
    with CropWriter(path, size=size, kind=kind, metadata=metadata) as w:
        for item in items:
            name, crops, *rest = item
            w.add(name, crops, class_label=rest[0] if rest else None)
    return Path(path)


@contextmanager
def window_writers(out: str | os.PathLike, *, crop_size: int = 0, patch_size: int = 0, patch_stride: int = 0,
                   metadata: Mapping[str, Any] | None = None) -> Iterator[dict[str, "CropWriter"]]:
    """Context manager over ``out/crops.h5`` and/or ``out/patches.h5`` writers (a size of 0 skips that file).

    The metadata of each file records its window size (and the patches' stride and the 85 % inside
    rule), so ``run`` and ``measure`` write the same layout. Leaving the block closes every writer
    (each file appears atomically); an exception aborts them all, so no partial file is left, and
    propagates.

    Yields
    ------
    dict
        ``{"crops": CropWriter, "patches": CropWriter}``, only the kinds asked for.
    """
    meta = dict(metadata or {})
    out = Path(out)
    writers: dict[str, CropWriter] = {}
    if crop_size:
        writers["crops"] = CropWriter(out / "crops.h5", size=crop_size, kind="crops",
                                      metadata={**meta, "crop_size": crop_size})
    if patch_size:
        writers["patches"] = CropWriter(out / "patches.h5", size=patch_size, kind="patches",
                                        metadata={**meta, "patch_size": patch_size, "patch_stride": patch_stride,
                                                  "min_inside": 0.85})
    try:
        yield writers
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()


def read_crops_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read a crops/patches file written by :class:`CropWriter` into memory.

    Returns
    -------
    dict
        The datasets as numpy arrays (``masks``, ``fits``, ``inside_image`` as bool; ``image_names``
        as a list of str) plus ``kind``, ``size``, ``class_names`` (list) and ``metadata`` (dict).

    Raises
    ------
    InputError
        Missing file, not HDF5, or not this format.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", path=p)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file: {exc}", path=p) from exc
    with f:
        if f.attrs.get("format") != FORMAT:
            raise InputError(f"not a {FORMAT} file (attrs['format'] = {f.attrs.get('format')!r})", path=p)
        out: dict[str, Any] = {
            name: f[name][()]
            for name in f
            if name != "image_names"
        }
        out["image_names"] = [s.decode() if isinstance(s, bytes) else str(s) for s in f["image_names"][()]]
        for name in ("masks", "fits", "inside_image"):
            out[name] = out[name].astype(bool)
        out["kind"] = str(f.attrs["kind"])
        out["size"] = int(f.attrs["size"])
        out["class_names"] = json.loads(f.attrs.get("class_names", "[]"))
        out["metadata"] = json.loads(f.attrs.get("metadata", "{}"))
    return out
