"""Image and table input/output: readers that validate, writers that are atomic.

Reading returns an :class:`Image` (``(Y, X)`` float32 data, values as acquired, plus name, pixel size in
µm, stored dtype and detector full scale). Every problem with an input raises
:class:`nucleoscope.InputError` whose message names the file and the problem. Every writer goes through
:func:`atomic_path`: a temporary file beside the target, moved into place only on success; every TIFF
goes through :func:`write_image`. OME-Zarr stores are read like files and written by
:func:`write_ome_zarr` (image + labels pyramids; the ``ome`` extra); a huge image is opened without
reading it (:func:`open_image_lazy`) and written with its labels block by block (:class:`ZarrLabelSink`). :func:`read_datasets` reads labelled data set folders
(``train/images``, ``train/masks``, optionally ``val/``) for training.
"""

from __future__ import annotations

from ._find import find_images, unique_names
from ._read import SUPPORTED_SUFFIXES, Image, image_name, read_image, read_labels
from ._stack import Stack, read_stack
from ._rois import label_outline, write_imagej_rois
from ._zarr import read_zarr_labels, write_ome_zarr
from ._lazy import LazyFile, open_image_lazy
from ._zarr_sink import ZarrLabelSink
from ._write import (atomic_path, check_writable, read_table, write_image, write_json, write_labels, write_png,
                     write_table)
from .datasets import LabelledImage, dataset_pairs, read_datasets

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Image",
    "LabelledImage",
    "LazyFile",
    "atomic_path",
    "check_writable",
    "dataset_pairs",
    "find_images",
    "image_name",
    "label_outline",
    "open_image_lazy",
    "read_datasets",
    "read_image",
    "read_labels",
    "read_stack",
    "Stack",
    "read_table",
    "read_zarr_labels",
    "unique_names",
    "write_image",
    "write_imagej_rois",
    "write_json",
    "write_labels",
    "write_ome_zarr",
    "ZarrLabelSink",
    "write_png",
    "write_table",
]
