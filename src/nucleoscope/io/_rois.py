"""Export of label images as an ImageJ/Fiji ROI set (``.zip`` of ``.roi`` polygons) for the ROI Manager.

Written by hand: none of our dependencies writes ImageJ ROIs (``roifile`` would be a new dependency for a
64-byte header and two coordinate arrays). Format: ImageJ's ``ij/io/RoiEncoder`` (big-endian).
"""

from __future__ import annotations

import logging
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from .._errors import InputError
from ._write import _as_labels, atomic_path

__all__ = ["label_outline", "write_imagej_rois"]

logger = logging.getLogger(__name__)

_ROI_VERSION = 228
_ROI_POLYGON = 0
_HEADER = 64
_HEADER2 = 64

# Directed boundary edges of a pixel, as (corner dx, dy) start and step, walked with the pixel on the right
# (y points down): top edge eastwards, right edge southwards, bottom edge westwards, left edge northwards.
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def _signed_area(poly: np.ndarray) -> float:
    """Shoelace area; positive for loops clockwise on screen (y down)."""
    x, y = poly[:, 0].astype(float), poly[:, 1].astype(float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def label_outline(mask: np.ndarray) -> np.ndarray:
    """Outer outline of a binary region on the pixel-corner grid, as ImageJ's wand traces it.

    Parameters
    ----------
    mask : np.ndarray
        ``(Y, X)`` bool.

    Returns
    -------
    np.ndarray
        ``(N, 2)`` int ``(x, y)`` polygon vertices (pixel corners: pixel ``(r, c)`` spans
        ``[c, c+1] x [r, r+1]``), clockwise on screen, without repeated or collinear vertices. Filling it
        by pixel centres gives back ``mask`` exactly when ``mask`` is one 4-connected region without holes;
        otherwise the largest outer outline is returned (holes are not part of a polygon ROI). Empty
        ``(0, 2)`` for an empty mask.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    # Starts of the boundary edges in padded corner coordinates, one array per side.
    r, c = np.nonzero(m[1:-1, 1:-1])
    r, c = r + 1, c + 1
    starts = {}
    sides = (
        (~m[r - 1, c], c, r, 0),  # top: from (c, r)
        (~m[r, c + 1], c + 1, r, 1),  # right: from (c+1, r)
        (~m[r + 1, c], c + 1, r + 1, 2),  # bottom: from (c+1, r+1)
        (~m[r, c - 1], c, r + 1, 3),  # left: from (c, r+1)
    )
    for keep, x, y, d in sides:
        for xi, yi in zip(x[keep].tolist(), y[keep].tolist()):
            starts.setdefault((xi, yi), []).append(d)
    if not starts:
        return np.zeros((0, 2), dtype=np.int64)
    loops = []
    while starts:
        x0, y0 = next(iter(starts))
        x, y, d = x0, y0, starts[(x0, y0)][0]
        loop: list[tuple[int, int]] = []
        while True:
            dirs = starts[(x, y)]
            if loop:
                # Where two pixels touch only at a corner, turn right first (then straight, then left):
                # the loop stays around one 4-connected piece.
                nd = next(((d + t) % 4 for t in (1, 0, 3) if (d + t) % 4 in dirs), dirs[0])
            else:
                nd = d
            dirs.remove(nd)
            if not dirs:
                del starts[(x, y)]
            if nd != d or not loop:
                loop.append((x, y))
            d = nd
            x, y = x + _STEPS[d][0], y + _STEPS[d][1]
            if (x, y) == (x0, y0) or (x, y) not in starts:
                break
        loops.append(np.asarray(loop, dtype=np.int64))
    # Outer outlines run clockwise on screen (positive shoelace area with y down); holes the other way.
    areas = [_signed_area(p) for p in loops]
    best = int(np.argmax(areas))
    poly = loops[best] - 1  # undo the padding
    # The first vertex may sit mid-way along a straight side; drop it when collinear.
    if len(poly) > 2:
        a, b, c2 = poly[-1], poly[0], poly[1]
        if (b[0] - a[0]) * (c2[1] - b[1]) == (b[1] - a[1]) * (c2[0] - b[0]):
            poly = poly[1:]
    return poly


def _encode_roi(poly: np.ndarray, name: str) -> bytes:
    """One ImageJ polygon ROI: 64-byte header, x then y as shorts relative to the box, header2, name."""
    left, top = (int(v) for v in poly.min(axis=0))
    right, bottom = (int(v) for v in poly.max(axis=0))
    n = len(poly)
    header2_offset = _HEADER + 4 * n
    name_offset = header2_offset + _HEADER2
    head = bytearray(_HEADER)
    head[0:4] = b"Iout"
    struct.pack_into(">hBxhhhhH", head, 4, _ROI_VERSION, _ROI_POLYGON, top, left, bottom, right, n)
    struct.pack_into(">i", head, 60, header2_offset)
    coords = np.concatenate([poly[:, 0] - left, poly[:, 1] - top]).astype(">i2").tobytes()
    header2 = bytearray(_HEADER2)
    struct.pack_into(">ii", header2, 16, name_offset, len(name))
    return bytes(head) + coords + bytes(header2) + name.encode("utf-16-be")


def write_imagej_rois(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write each nucleus of a label image as a polygon ROI in an ImageJ/Fiji ROI set, atomically.

    Open the ``.zip`` in Fiji's ROI Manager (drag and drop) on top of the image. ROI names are the label
    values (``ObjectNumber``), entries ``<label>.roi`` zero-padded so the ROI Manager keeps their order.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.zip``.
    labels : np.ndarray
        ``(Y, X)`` integer labels, 0 = background; at most 32767 px on a side (ImageJ stores shorts).

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    Each polygon is the label's outer outline on the pixel-corner grid (:func:`label_outline`); ImageJ
    fills polygons by pixel centres, so the ROI covers exactly the label's pixels when the label is one
    4-connected region without holes. Holes are filled; a label in several pieces gets its largest piece.
    """
    from scipy import ndimage as ndi

    target = Path(path)
    arr = _as_labels(labels, target)
    if max(arr.shape) > 32767:
        raise InputError(f"ImageJ ROIs store coordinates as 16-bit: image {arr.shape} is too large", path=target)
    boxes = ndi.find_objects(arr)
    width = max(4, len(str(len(boxes))))
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, box in enumerate(boxes):
            if box is None:
                continue
            label = i + 1
            poly = label_outline(arr[box] == label)
            poly = poly + np.array([box[1].start, box[0].start])
            name = str(label)
            zf.writestr(f"{label:0{width}d}.roi", _encode_roi(poly, name))
    return target
