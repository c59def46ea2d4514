"""Segmentation metrics: every score the source papers use, defined once, on label images.

Layers, as in StarDist's ``matching``: label images -> sparse overlap table (intersection, IoU,
intersection over truth / over prediction) -> one-to-one matching at an IoU threshold -> frozen
dataclass results. Everything is computed from the sparse table of overlapping pairs, so a
2048 x 2048 image with ~2,000 nuclei is scored in well under a second.

Inputs are ground truth ``gt`` and prediction ``pred``: integer label images of the same shape, 0 =
background, any positive value an object (values need not be consecutive). Argument order is always
``(gt, pred)``. ``docs/metrics.md`` gives every definition with its formula and source paper.

Modules, one layer each: ``_overlap`` (validated labels -> :class:`Overlap`), ``_matching`` (one-to-one
matching -> :class:`ObjectScores` / :class:`Matching`), ``_pixel`` (:class:`PixelScores`),
``_error_analysis`` (splits / merges / catastrophes, touching pairs, NuSeT rates, Hausdorff ->
:class:`ErrorScores`), ``_dataset`` (:class:`ImageScores` of one image, :class:`DatasetScores` of many),
``_failures`` (why each miss and false detection happened -> :class:`FailureCauses`), ``_ctc`` (the Cell Tracking Challenge SEG measure), ``_conventions`` (default thresholds, threshold
keys, the empty-ratio rule). Import from the package.

Conventions for empty cases ("vacuous truth"): a ratio whose denominator counts nothing is 1 when its
numerator's failures are impossible too — precision with no predictions is 1, recall with no truth is
1, F1 / AP / PQ with neither truth nor prediction are 1 — so an image with no nuclei segmented as
empty scores perfectly. Quantities that need a matched pair (mean matched IoU, Hausdorff distance) are
NaN when there is none; per-image means skip NaN.

Examples
--------
>>> import numpy as np
>>> gt = np.zeros((8, 8), np.int32); gt[1:5, 1:5] = 1
>>> pred = np.zeros_like(gt); pred[1:5, 2:6] = 7
>>> m = match(gt, pred, thresh=0.5)
>>> m.tp, m.fp, m.fn, round(m.mean_matched_iou, 3)
(1, 0, 0, 0.6)
"""

from __future__ import annotations

from ._conventions import DEFAULT_THRESHOLDS, threshold_key
from ._ctc import ctc_seg_jaccard
from ._dataset import DatasetScores, ImageScores, evaluate_dataset, evaluate_image, summarize
from ._error_analysis import LINK_IOU, NUSET_OVERLAP, ErrorScores, error_scores
from ._failures import FN_CAUSES, FP_CAUSES, FailureCauses, failure_causes
from ._matching import Matching, ObjectScores, match
from ._overlap import Overlap, overlap
from ._pixel import PixelScores, pixel_scores

__all__ = [
    "FN_CAUSES",
    "FP_CAUSES",
    "FailureCauses",
    "failure_causes",
    "DEFAULT_THRESHOLDS",
    "LINK_IOU",
    "NUSET_OVERLAP",
    "Overlap",
    "ObjectScores",
    "Matching",
    "PixelScores",
    "ErrorScores",
    "ImageScores",
    "DatasetScores",
    "overlap",
    "match",
    "pixel_scores",
    "error_scores",
    "evaluate_image",
    "evaluate_dataset",
    "summarize",
    "ctc_seg_jaccard",
    "threshold_key",
]
