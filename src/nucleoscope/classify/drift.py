"""Image-set QC (SCENMED §6, "drift blur"): within one class, an image set (a plate, a day, a
montage) that a classifier tells apart from the class's other sets carries an acquisition artefact
(focus drift, blur, exposure), not biology. SCENMED discarded a set whose validation accuracy was
consistently above 60%."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .validation import cross_validate, grouped_folds

__all__ = ["image_set_drift", "DRIFT_ACCURACY"]

DRIFT_ACCURACY = 0.60  # SCENMED


def _pair_accuracy(make_model, X, target, images, random_state):
    """Image-grouped balanced accuracy of telling two sets apart, and the fraction of folds above chance+."""
    folds = grouped_folds(target, images, random_state=random_state)

    def fp(tr, te):
        mdl = make_model()
        mdl.fit(X[tr], target[tr], groups=images[tr])
        return mdl.predict_proba(X[te])

    r = cross_validate(fp, target, images, images, classes=["a", "b"], folds=folds)
    return r.nucleus["balanced_accuracy"], [f["balanced_accuracy"] for f in r.per_fold]


def image_set_drift(make_model: Callable[[], object], X: np.ndarray, y: Sequence, sets: Sequence,
                    images: Sequence, *, threshold: float = DRIFT_ACCURACY, random_state: int = 0) -> pd.DataFrame:
    """For every class with two or more image sets: which set can a classifier tell from the others?

    Every pair of sets of a class is classified (validated by image-grouped folds). A set is flagged when
    it is told apart (balanced accuracy > ``threshold`` overall and in at least half of the folds —
    SCENMED's "consistently") from more than half of the class's other sets; pairwise rather than one
    set against the rest, so one drifted set does not make its clean neighbours look drifted too. With
    only two sets a separable pair flags both: which one drifted cannot be told.

    Parameters
    ----------
    make_model : callable
        Fresh estimator with ``fit(X, y, groups=)`` and ``predict_proba``.
    X : (N, F) ndarray
    y, sets, images : (N,) array_like
        Class, image set and image of each nucleus.
    threshold : float

    Returns
    -------
    pandas.DataFrame
        ``Class``, ``Set``, ``Images``, ``Nuclei``, ``BalancedAccuracy`` (mean over the pairs with this
        set), ``SeparatedFrom`` (sets it is told apart from), ``Compared`` (sets compared), ``Flagged``,
        ``Note`` (why a pair could not be tested).
    """
    y = np.asarray(y).astype(str)
    sets = np.asarray(sets).astype(str)
    images = np.asarray(images).astype(str)
    rows = []
    for cls in sorted(np.unique(y)):
        m = y == cls
        names = sorted(np.unique(sets[m]))
        if len(names) < 2:
            continue
        acc: dict[str, list[float]] = {s: [] for s in names}
        sep: dict[str, list[str]] = {s: [] for s in names}
        notes: dict[str, str] = {s: "" for s in names}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                idx = np.flatnonzero(m & np.isin(sets, [a, b]))
                target = np.where(sets[idx] == a, "a", "b")
                try:
                    ba, per_fold = _pair_accuracy(make_model, X[idx], target, images[idx], random_state)
                except ValueError as e:  # a set of one image cannot be validated by image
                    notes[a] = notes[b] = str(e).split(": ", 1)[-1][:120]
                    continue
                acc[a].append(ba)
                acc[b].append(ba)
                if ba > threshold and np.mean([f > threshold for f in per_fold]) >= 0.5:
                    sep[a].append(b)
                    sep[b].append(a)
        for s in names:
            compared = len(acc[s])
            rows.append({"Class": cls, "Set": s, "Images": len(np.unique(images[m & (sets == s)])),
                         "Nuclei": int((m & (sets == s)).sum()),
                         "BalancedAccuracy": float(np.mean(acc[s])) if compared else np.nan,
                         "SeparatedFrom": ", ".join(sep[s]), "Compared": compared,
                         "Flagged": bool(compared and len(sep[s]) > compared / 2), "Note": notes[s]})
    return pd.DataFrame(rows, columns=["Class", "Set", "Images", "Nuclei", "BalancedAccuracy", "SeparatedFrom",
                                       "Compared", "Flagged", "Note"])
