"""Image and dataset summaries: every score of one image, and scores pooled and averaged over many.

``evaluate_image`` computes the overlap table once and derives the object, pixel and error scores from it;
``summarize`` / ``evaluate_dataset`` pool counts over images (what the DSB 2018 / StarDist report) and
average per-image ratios (what NuSeT reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from ._conventions import DEFAULT_THRESHOLDS, threshold_key
from ._error_analysis import ErrorScores, _error_scores
from ._matching import Matching, ObjectScores, _match_indices, _matching_from
from ._overlap import _indexed
from ._pixel import PixelScores


@dataclass(frozen=True)
class ImageScores:
    """Every score of one image.

    Attributes
    ----------
    name : str or None
    n_true, n_pred : int
        Objects after ``min_size`` filtering.
    objects : dict float -> Matching
        Object scores per IoU threshold (keys normalised by :func:`threshold_key`).
    pixel : PixelScores
    errors : ErrorScores
    """

    name: str | None
    n_true: int
    n_pred: int
    objects: Mapping[float, Matching] = field(repr=False)
    pixel: PixelScores
    errors: ErrorScores

    def at(self, thresh: float) -> Matching:
        """Object scores at one of the evaluated thresholds."""
        return self.objects[threshold_key(thresh)]


def evaluate_image(gt: np.ndarray, pred: np.ndarray, *, thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
                   error_thresh: float = 0.5, min_size: int = 0, hausdorff: bool = True,
                   name: str | None = None) -> ImageScores:
    """Score one predicted label image against its ground truth.

    Parameters
    ----------
    gt, pred : ndarray of int, (Y, X), same shape
        Label images, 0 = background. (Z, Y, X) volumes work too for the object, pixel and
        split/merge scores; touching pairs and Hausdorff distances are 2D only (0 pairs / NaN).
    thresholds : iterable of float
        IoU thresholds for the object scores.
    error_thresh : float
        IoU threshold of the matching used by the error analysis (:class:`ErrorScores`).
    min_size : int
        Objects smaller than this many pixels, in truth or prediction, are set to background before
        anything is scored (objects, pixels and errors alike). 0 keeps everything.
    hausdorff : bool
        Compute the Hausdorff distance of matched pairs.
    name : str, optional
        Carried into the result.

    Returns
    -------
    ImageScores
    """
    gi, pi, ov = _indexed(gt, pred, min_size)
    objects = {threshold_key(t): _matching_from(ov, t) for t in thresholds}
    errors = _error_scores(gi, pi, ov, _match_indices(ov, error_thresh), error_thresh, hausdorff)
    g, p = gi > 0, pi > 0
    tp = int(np.count_nonzero(g & p))
    fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp
    pixel = PixelScores.from_counts(tp, fp, fn, g.size - tp - fp - fn)
    return ImageScores(name=name, n_true=ov.n_true, n_pred=ov.n_pred, objects=objects, pixel=pixel, errors=errors)


_MEAN_FIELDS = ("precision", "recall", "f1", "ap", "mean_matched_iou", "panoptic_quality")
_PIXEL_FIELDS = ("mean_iou", "f1", "rmse", "accuracy", "fg_iou")


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


@dataclass(frozen=True)
class DatasetScores:
    """Scores of a set of images, pooled and averaged.

    Attributes
    ----------
    thresholds : tuple of float
    n_images : int
    pooled : dict float -> ObjectScores
        Counts summed over all images, then the ratios (what the DSB 2018 / StarDist report).
    per_image_mean : dict float -> dict str -> float
        Mean over images of each per-image ratio (precision, recall, f1, ap, mean_matched_iou,
        panoptic_quality); NaN values are skipped.
    pixel : dict str -> float
        Mean over images of each pixel score (NuSeT averages per image).
    errors : ErrorScores
        Counts summed over images, rates and means recomputed from the sums.
    images : list of ImageScores
    """

    thresholds: tuple[float, ...]
    n_images: int
    pooled: Mapping[float, ObjectScores]
    per_image_mean: Mapping[float, Mapping[str, float]]
    pixel: Mapping[str, float]
    errors: ErrorScores
    images: Sequence[ImageScores] = field(repr=False)

    def to_json_dict(self) -> dict:
        """The ``nucleoscope evaluate --json`` object (NaN -> None, threshold keys as strings)."""
        return _jsonable({
            "thresholds": list(self.thresholds),
            "n_images": self.n_images,
            "pooled": {str(t): s.as_dict() for t, s in self.pooled.items()},
            "per_image_mean": {str(t): dict(v) for t, v in self.per_image_mean.items()},
            "pixel": dict(self.pixel),
            "errors": self.errors.as_dict(),
            "per_image": [_image_json(s) for s in self.images],
        })


def _image_json(s: ImageScores) -> dict:
    return {
        "name": s.name, "n_true": s.n_true, "n_pred": s.n_pred,
        "objects": {str(t): {k: v for k, v in m.as_dict().items()} for t, m in s.objects.items()},
        "pixel": s.pixel.as_dict(), "errors": s.errors.as_dict(),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def summarize(images: Sequence[ImageScores]) -> DatasetScores:
    """Pool and average per-image scores (all must share the same thresholds)."""
    images = list(images)
    if not images:
        raise ValueError("no images to summarize")
    thresholds = tuple(images[0].objects)
    for s in images:
        if tuple(s.objects) != thresholds:
            raise ValueError("images were scored at different thresholds")
    pooled, means = {}, {}
    for t in thresholds:
        ms = [s.objects[t] for s in images]
        pooled[t] = ObjectScores.from_counts(t, sum(m.n_true for m in ms), sum(m.n_pred for m in ms),
                                             sum(m.tp for m in ms), sum(m.sum_matched_iou for m in ms))
        means[t] = {k: _nanmean([getattr(m, k) for m in ms]) for k in _MEAN_FIELDS}
    pixel = {k: _nanmean([getattr(s.pixel, k) for s in images]) for k in _PIXEL_FIELDS}
    return DatasetScores(thresholds=thresholds, n_images=len(images), pooled=pooled, per_image_mean=means,
                         pixel=pixel, errors=ErrorScores.pooled([s.errors for s in images]), images=images)


def evaluate_dataset(pairs: Iterable[tuple[np.ndarray, np.ndarray]], *,
                     thresholds: Iterable[float] = DEFAULT_THRESHOLDS, names: Sequence[str] | None = None,
                     **options) -> DatasetScores:
    """Score many ``(gt, pred)`` pairs; see :func:`evaluate_image` for ``options``.

    Returns
    -------
    DatasetScores
        Pooled counts and per-image means, with every :class:`ImageScores` in ``images``.
    """
    thresholds = tuple(thresholds)
    scores = []
    for i, (gt, pred) in enumerate(pairs):
        name = names[i] if names is not None else None
        scores.append(evaluate_image(gt, pred, thresholds=thresholds, name=name, **options))
    return summarize(scores)
