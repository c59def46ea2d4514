"""Validation that never puts nuclei of one image (group) on both sides, and the scores it reports.

SCENMED held out a stratified <= 15% of its data; nuclei of one image are not independent (same
field, same focus, same exposure), so the split here is by group (the image by default). With many
groups the folds hold out ~1/7 (<= 15%) each; with few (a class with under 7 images) the fold count
drops to what the rarest class allows (grouped k-fold, down to leave-one-group-out per class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._errors import InputError

__all__ = ["grouped_folds", "scores", "image_means", "image_scores", "CVResult", "cross_validate"]

MAX_FOLDS = 7  # 1/7 = 14% held out per fold: SCENMED's "at most 15%"


def grouped_folds(y: Sequence, groups: Sequence, *, n_folds: int | None = None,
                  random_state: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over groups: each group lies wholly in one test fold.

    Parameters
    ----------
    y, groups : (N,) array_like
        Class and group (image) of each sample.
    n_folds : int, optional
        Default: min(7, groups of the rarest class).

    Returns
    -------
    list of (train_index, test_index)

    Raises
    ------
    InputError
        A class has a single group: no grouped validation can test it.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y).astype(str)
    groups = np.asarray(groups).astype(str)
    per_class = {c: len(np.unique(groups[y == c])) for c in np.unique(y)}
    rare = min(per_class.values())
    if rare < 2:
        lone = [c for c, n in per_class.items() if n < 2]
        raise InputError(f"class(es) {', '.join(lone)} come from a single image/group: validation by group "
                         "needs at least two per class (add images or give per-nucleus --group-column values)")
    k = int(n_folds or min(MAX_FOLDS, rare))
    if k < 2 or k > rare:
        raise InputError(f"{k} folds need at least {k} groups per class; the rarest class has {rare}")
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=random_state)
    folds = [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]
    return [f for f in folds if len(f[1])]


def scores(y_true: Sequence, y_pred: Sequence, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy (= macro recall), macro F1 and per-class recall."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    present = [c for c in classes if (y_true == c).any()]
    rec = recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    out = {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
           "balanced_accuracy": float(np.mean(rec)) if len(rec) else float("nan"),
           "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))}
    out.update({f"recall_{c}": float(r) for c, r in zip(present, rec)})
    return out


def image_means(proba: np.ndarray, images: Sequence, classes: Sequence[str]) -> pd.DataFrame:
    """Per-image decisions: the mean class probability over an image's nuclei, then the argmax.

    Returns
    -------
    pandas.DataFrame
        ``ImageName``, ``Predicted``, ``P_<class>``..., ``Nuclei``; one row per image, sorted by name.
    """
    classes = list(classes)
    pcols = [f"P_{c}" for c in classes]
    df = pd.DataFrame(np.asarray(proba, dtype=np.float64).reshape(-1, len(classes)), columns=pcols)
    df["ImageName"] = np.asarray(images).astype(str)
    g = df.groupby("ImageName", sort=True)
    im = g[pcols].mean()
    im.insert(0, "Predicted", np.asarray(classes, dtype=object)[np.argmax(im.to_numpy(), axis=1)])
    im["Nuclei"] = g.size()
    return im.reset_index()


def image_scores(proba: np.ndarray, y: Sequence, images: Sequence, classes: Sequence[str]) -> tuple[dict, pd.DataFrame]:
    """Scores of the per-image decisions of :func:`image_means`.

    Returns the scores (as :func:`scores`) and the per-image table (``ImageName``, ``Class``,
    ``Predicted``, ``P_<class>``, ``Nuclei``).
    """
    truth = pd.DataFrame({"ImageName": np.asarray(images).astype(str), "Class": np.asarray(y).astype(str)})
    mixed = truth.groupby("ImageName")["Class"].nunique()
    if (mixed > 1).any():
        raise InputError(f"image {mixed.index[mixed > 1][0]!r} has nuclei of several classes: "
                         "per-image scores need one class per image")
    im = image_means(proba, images, classes)
    im.insert(1, "Class", truth.groupby("ImageName", sort=True)["Class"].first().to_numpy())
    return scores(im["Class"], im["Predicted"], classes), im


@dataclass
class CVResult:
    """Out-of-fold predictions of a grouped cross-validation.

    Attributes
    ----------
    classes : list of str
    proba : (N, K) ndarray
        Each sample's class probabilities from the fold that held it out.
    y, groups, images : (N,) ndarray of str
    fold : (N,) ndarray of int
    nucleus : dict
        :func:`scores` over all nuclei.
    per_fold : list of dict
        :func:`scores` of each fold's held-out nuclei.
    image : dict or None
        :func:`image_scores` (None when images mix classes, e.g. per-nucleus labels).
    image_table : pandas.DataFrame or None
    index : (N,) ndarray of int
        Row of the input each sample is (rows in no test fold are left out).
    """

    classes: list[str]
    proba: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    images: np.ndarray
    fold: np.ndarray
    nucleus: dict = field(default_factory=dict)
    per_fold: list = field(default_factory=list)
    image: dict | None = None
    image_table: pd.DataFrame | None = None
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def predicted(self) -> np.ndarray:
        return np.asarray(self.classes)[np.argmax(self.proba, axis=1)]

    def confusion(self) -> pd.DataFrame:
        """Nucleus confusion matrix: rows = true class, columns = predicted."""
        from sklearn.metrics import confusion_matrix

        m = confusion_matrix(self.y, self.predicted, labels=self.classes)
        return pd.DataFrame(m, index=pd.Index(self.classes, name="true"), columns=pd.Index(self.classes, name="predicted"))

    def summary(self) -> dict:
        """JSON-ready scores (nucleus, image, per fold)."""
        return {"nucleus": self.nucleus, "image": self.image, "per_fold": self.per_fold,
                "folds": int(self.fold.max() + 1) if len(self.fold) else 0}


def cross_validate(fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], y: Sequence, groups: Sequence,
                   images: Sequence, *, classes: Sequence[str] | None = None,
                   folds: list[tuple[np.ndarray, np.ndarray]] | None = None, random_state: int = 0) -> CVResult:
    """Run ``fit_predict(train_index, test_index) -> (n_test, K) probabilities`` over grouped folds.

    The callable fits whatever it likes on the training indices only (standardization included), so
    nothing of a held-out image leaks into its own prediction.

    Parameters
    ----------
    fit_predict : callable
    y, groups, images : (N,) array_like
    classes : sequence of str, optional
        Column order of the probabilities (default: sorted unique ``y``).
    folds : list, optional
        Default: :func:`grouped_folds`.
    """
    y = np.asarray(y).astype(str)
    groups = np.asarray(groups).astype(str)
    images = np.asarray(images).astype(str)
    classes = list(classes) if classes is not None else sorted(np.unique(y))
    folds = folds if folds is not None else grouped_folds(y, groups, random_state=random_state)
    proba = np.full((len(y), len(classes)), np.nan)
    fold = np.full(len(y), -1, dtype=np.int64)
    per_fold = []
    for i, (tr, te) in enumerate(folds):
        p = np.asarray(fit_predict(tr, te), dtype=np.float64)
        if p.shape != (len(te), len(classes)):
            raise ValueError(f"fit_predict returned shape {p.shape}, expected {(len(te), len(classes))}")
        proba[te] = p
        fold[te] = i
        per_fold.append(scores(y[te], np.asarray(classes)[p.argmax(1)], classes))
    done = fold >= 0
    res = CVResult(classes, proba[done], y[done], groups[done], images[done], fold[done], per_fold=per_fold,
                   index=np.flatnonzero(done))
    res.nucleus = scores(res.y, res.predicted, classes)
    try:
        res.image, res.image_table = image_scores(res.proba, res.y, res.images, classes)
    except InputError:
        res.image, res.image_table = None, None
    return res
