"""Bounding boxes of the objects of a label image, whatever its label values."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..postprocess import object_areas

__all__ = ["object_slices"]


def object_slices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[tuple[slice, slice]]]:
    """Present labels (ascending), the labels renumbered 1..N, and each object's bounding box.

    ``scipy.ndimage.find_objects`` wants consecutive labels (it allocates one entry per value up to
    the maximum), so labels are renumbered first; huge sparse values use a binary search instead of
    a lookup table.

    Parameters
    ----------
    labels : (Y, X) integer ndarray, 0 = background, values >= 0

    Returns
    -------
    ids : (N,) ndarray
        Label values present, ascending, 0 excluded.
    seq : (Y, X) int32 ndarray
        ``labels`` renumbered: object ``ids[k]`` is ``k + 1`` (``labels`` itself, not a copy, when it is
        int32 and already numbered 1..N; do not write to it).
    slices : list of (slice, slice)
        Bounding box of object ``k`` at position ``k``.
    """
    top = int(labels.max()) if labels.size else 0
    if 0 < top < 4 * labels.size and int(labels.min()) >= 0:
        # a bincount instead of np.unique (a sorted copy of the image), and the image itself when it is
        # already numbered 1..N: a 16k x 16k label image is 1 GiB
        ids = np.flatnonzero(object_areas(labels))
        ids = ids[ids != 0].astype(labels.dtype)
        if ids.size == top and labels.dtype == np.int32:
            return ids, labels, ndi.find_objects(labels)
    else:
        ids = np.unique(labels)
        ids = ids[ids != 0]
    if ids.size == 0:
        return ids, np.zeros(labels.shape, np.int32), []
    if ids[-1] < 4 * labels.size:
        lookup = np.zeros(int(ids[-1]) + 1, dtype=np.int32)
        lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
        seq = lookup[labels]
    else:
        seq = np.where(labels > 0, np.searchsorted(ids, labels) + 1, 0).astype(np.int32)
    return ids, seq, ndi.find_objects(seq)
