"""Pixel scores: foreground-vs-background masks (NuSeT's pixel-level metrics)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._errors import InputError
from ._conventions import _ratio


@dataclass(frozen=True)
class PixelScores:
    """Foreground-vs-background pixel scores of one image (NuSeT's pixel-level metrics).

    Foreground is ``labels > 0``. With pixel counts TP, FP, FN, TN of the foreground class and N pixels:

    Attributes
    ----------
    tp, fp, fn, tn : int
        Pixel counts.
    mean_iou : float
        Mean over the two classes of TP_c / (TP_c + FP_c + FN_c): (IoU_fg + IoU_bg) / 2 (NuSeT's "mean
        IU"). A class absent from both images has IoU 1.
    f1 : float
        2 TP / (2 TP + FP + FN) (the Dice coefficient); 1 when both have no foreground.
    rmse : float
        sqrt(mean((pred_i - gt_i)^2)) over binary pixels = sqrt((FP + FN) / N).
    accuracy : float
        (TP + TN) / N.
    fg_iou : float
        IoU of the foreground class alone (Jaccard index).
    """

    tp: int
    fp: int
    fn: int
    tn: int
    mean_iou: float
    f1: float
    rmse: float
    accuracy: float
    fg_iou: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int, tn: int) -> PixelScores:
        n = tp + fp + fn + tn
        fg = _ratio(tp, tp + fp + fn)
        bg = _ratio(tn, tn + fn + fp)
        return cls(tp=int(tp), fp=int(fp), fn=int(fn), tn=int(tn), mean_iou=(fg + bg) / 2,
                   f1=_ratio(2 * tp, 2 * tp + fp + fn), rmse=math.sqrt(_ratio(fp + fn, n, 0.0)),
                   accuracy=_ratio(tp + tn, n), fg_iou=fg)

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def pixel_scores(gt: np.ndarray, pred: np.ndarray) -> PixelScores:
    """Pixel-level scores of the foreground masks ``gt > 0`` and ``pred > 0`` (see :class:`PixelScores`)."""
    g, p = np.asarray(gt) > 0, np.asarray(pred) > 0
    if g.shape != p.shape:
        raise InputError(f"shape mismatch: ground truth {g.shape} vs prediction {p.shape}")
    tp = int(np.count_nonzero(g & p))
    ng, npred = int(np.count_nonzero(g)), int(np.count_nonzero(p))
    fp, fn = npred - tp, ng - tp
    return PixelScores.from_counts(tp, fp, fn, g.size - tp - fp - fn)
