"""The Cell Tracking Challenge SEG measure on the sparse overlap table (Maška et al. 2014; Ulman et al. 2017).

A true object R is matched by the predicted object S that covers more than half of it
(``|R ∩ S| > 0.5 |R|``, so at most one S per R); its score is the Jaccard index ``|R ∩ S| / |R ∪ S|``,
0 without such an S. SEG is the mean over the true objects: false positives cost nothing (the CTC
truth is often sparse), merges and misses do.
"""

from __future__ import annotations

import numpy as np

from ._overlap import overlap

__all__ = ["ctc_seg_jaccard"]


def ctc_seg_jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per true object, the CTC SEG Jaccard index (0 when no prediction covers more than half of it).

    Parameters
    ----------
    gt, pred : ndarray of int, equal shapes
        Label images, 0 = background.

    Returns
    -------
    ndarray of float64, (n_true,)
        In the order of the true labels (ascending); SEG of a data set is the mean over all its frames.

    Examples
    --------
    >>> gt = np.zeros((8, 8), np.int32); gt[1:5, 1:5] = 1; gt[6:8, 6:8] = 2
    >>> pred = np.zeros_like(gt); pred[1:5, 2:6] = 7
    >>> ctc_seg_jaccard(gt, pred).round(3).tolist()  # 12 of 16 px covered: J = 12 / 20; object 2 missed
    [0.6, 0.0]
    """
    ov = overlap(gt, pred)
    out = np.zeros(ov.n_true)
    hit = ov.iot > 0.5
    out[ov.pair_gt[hit]] = ov.iou[hit]
    return out
