"""Failure causes: why each missed truth nucleus was missed and each false detection was made.

Every truth object left unmatched at the IoU threshold and every unmatched prediction gets one cause,
from the sparse :class:`Overlap` table plus two measurements per object (area, contrast over the
background). The causes, checked in this order (the first that holds wins):

Missed truth (false negatives)
    ``merged``    most of it (intersection over truth >= 0.5) lies in a prediction that also holds most
                  of another truth object;
    ``split``     two or more predictions lie mostly inside it (intersection over prediction >= 0.5);
    ``outline``   a prediction overlaps it with IoU in [0.25, thresh): found, but drawn differently;
    ``small``     area below a quarter of the image's median truth area (specks, micronuclei);
    ``faint``     contrast below half the image's median truth contrast;
    ``missed``    anything else: a normal-looking nucleus the segmenter did not see.

False detections (false positives)
    ``merge``     it holds most of two or more truth objects;
    ``fragment``  it lies mostly inside a truth object that another prediction matches, or that two
                  or more predictions split;
    ``outline``   it overlaps a truth object with IoU in [0.25, thresh);
    ``bright``    (under 20% of it on any truth) contrast over twice the median truth contrast: debris,
                  dead cells, aggregates;
    ``small``     (off the truth) area below a quarter of the median truth area;
    ``faint``     (off the truth) contrast below half the median truth contrast: texture, out-of-focus
                  light;
    ``nucleus-like`` (off the truth) size and contrast within the truth's range: either an unannotated
                  nucleus or debris that looks like one — only a look at the gallery tells;
    ``other``     partly on the truth, none of the above.

Contrast is the object's mean intensity minus the background (median of the pixels in neither image's
objects). The thresholds are fixed fractions of each image's own truth, so the causes mean the same on
any microscope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._matching import _matching_from
from ._overlap import _indexed

__all__ = ["FN_CAUSES", "FP_CAUSES", "FailureCauses", "failure_causes"]

FN_CAUSES = ("merged", "split", "outline", "small", "faint", "missed")
FP_CAUSES = ("merge", "fragment", "outline", "bright", "small", "faint", "nucleus-like", "other")

#: IoU from which an unmatched pair counts as the same object drawn differently
OUTLINE_IOU = 0.25
#: "most of": intersection over the smaller side's area
MOST = 0.5
#: fractions of the image's median truth area / contrast
SMALL_AREA, FAINT, BRIGHT = 0.25, 0.5, 2.0
#: a prediction with less than this fraction of its area on truth objects is "off the truth"
OFF_TRUTH = 0.2


@dataclass(frozen=True)
class FailureCauses:
    """Per-object status and cause of one image (see the module docstring for the causes).

    Attributes
    ----------
    thresh : float
        IoU threshold of the matching.
    gt_ids, pred_ids : ndarray of int64, (n_true,), (n_pred,)
        Label values.
    gt_cause, pred_cause : ndarray of str, (n_true,), (n_pred,)
        ``""`` for a matched object, else the cause.
    gt_area, pred_area : ndarray of int64
        Areas (px).
    gt_contrast, pred_contrast : ndarray of float64
        Mean intensity minus the background.
    median_area, median_contrast : float
        The image's median truth area and contrast (NaN without truth).
    """

    thresh: float
    gt_ids: np.ndarray = field(repr=False)
    pred_ids: np.ndarray = field(repr=False)
    gt_cause: np.ndarray = field(repr=False)
    pred_cause: np.ndarray = field(repr=False)
    gt_area: np.ndarray = field(repr=False)
    pred_area: np.ndarray = field(repr=False)
    gt_contrast: np.ndarray = field(repr=False)
    pred_contrast: np.ndarray = field(repr=False)
    median_area: float = float("nan")
    median_contrast: float = float("nan")

    def counts(self) -> dict[str, int]:
        """``{"fn:<cause>": n, ..., "fp:<cause>": n, ...}`` over every cause, zeros included."""
        out = {f"fn:{c}": int(np.sum(self.gt_cause == c)) for c in FN_CAUSES}
        out.update({f"fp:{c}": int(np.sum(self.pred_cause == c)) for c in FP_CAUSES})
        return out


def _means(index: np.ndarray, image: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``image`` per object index 1..n of ``index`` (0 = outside)."""
    s = np.bincount(index.ravel(), weights=image.ravel(), minlength=n + 1)[1:]
    c = np.bincount(index.ravel(), minlength=n + 1)[1:]
    return s / np.maximum(c, 1)


def failure_causes(gt: np.ndarray, pred: np.ndarray, image: np.ndarray, *, thresh: float = 0.5) -> FailureCauses:
    """Status and cause of every truth and predicted object of one image.

    Parameters
    ----------
    gt, pred : ndarray (Y, X) int
        Truth and predicted instance labels, 0 = background.
    image : ndarray (Y, X)
        The intensities the objects are measured on (any real dtype).
    thresh : float
        IoU threshold of the one-to-one matching (as :func:`match`).

    Returns
    -------
    FailureCauses
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != np.shape(gt):
        raise ValueError(f"image shape {image.shape} differs from the labels' {np.shape(gt)}")
    gi, pi, ov = _indexed(gt, pred, 0)
    m = _matching_from(ov, thresh)
    n_g, n_p = ov.n_true, ov.n_pred
    outside = (gi == 0) & (pi == 0)
    bg = float(np.median(image[outside])) if outside.any() else 0.0
    g_con, p_con = _means(gi, image, n_g) - bg, _means(pi, image, n_p) - bg
    med_a = float(np.median(ov.gt_areas)) if n_g else float("nan")
    med_c = float(np.median(g_con)) if n_g else float("nan")

    g_matched = np.isin(ov.gt_ids, m.matched_gt)
    p_matched = np.isin(ov.pred_ids, m.matched_pred)
    iot, iop, iou = ov.iot, ov.iop, ov.iou
    # how many truths a prediction holds most of, and how many predictions lie mostly inside a truth
    holds = np.bincount(ov.pair_pred[iot >= MOST], minlength=n_p)
    pieces = np.bincount(ov.pair_gt[iop >= MOST], minlength=n_g)
    g_best = np.zeros(n_g)
    np.maximum.at(g_best, ov.pair_gt, iou)
    p_best = np.zeros(n_p)
    np.maximum.at(p_best, ov.pair_pred, iou)
    on_truth = np.bincount(ov.pair_pred, weights=ov.intersection, minlength=n_p) / np.maximum(ov.pred_areas, 1)
    in_merge = np.zeros(n_g, bool)
    in_merge[ov.pair_gt[(iot >= MOST) & (holds[ov.pair_pred] >= 2)]] = True
    # a fragment lies mostly inside a truth object that another prediction matches, or that is split
    inside = iop >= MOST
    claimed = g_matched[ov.pair_gt] | (pieces[ov.pair_gt] >= 2)
    fragment = np.zeros(n_p, bool)
    fragment[ov.pair_pred[inside & claimed]] = True

    gc = np.full(n_g, "", dtype=object)
    for i in np.flatnonzero(~g_matched):
        gc[i] = ("merged" if in_merge[i] else "split" if pieces[i] >= 2
                 else "outline" if g_best[i] >= OUTLINE_IOU else "small" if ov.gt_areas[i] < SMALL_AREA * med_a
                 else "faint" if g_con[i] < FAINT * med_c else "missed")
    pc = np.full(n_p, "", dtype=object)
    for j in np.flatnonzero(~p_matched):
        if holds[j] >= 2:
            pc[j] = "merge"
        elif fragment[j]:
            pc[j] = "fragment"
        elif p_best[j] >= OUTLINE_IOU:
            pc[j] = "outline"
        elif on_truth[j] >= OFF_TRUTH or not n_g:
            pc[j] = "other"
        else:
            pc[j] = ("bright" if p_con[j] > BRIGHT * med_c else "small" if ov.pred_areas[j] < SMALL_AREA * med_a
                     else "faint" if p_con[j] < FAINT * med_c else "nucleus-like")
    return FailureCauses(float(thresh), ov.gt_ids, ov.pred_ids, gc.astype(str), pc.astype(str), ov.gt_areas,
                         ov.pred_areas, g_con, p_con, med_a, med_c)
