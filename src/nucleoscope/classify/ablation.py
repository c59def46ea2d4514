"""Feature ablation (SCENMED Table 1): how much validation accuracy each feature group, or each feature,
carries, measured by refitting without it on the same grouped folds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from .table import feature_group
from .validation import cross_validate

__all__ = ["ablation_table"]


def ablation_table(make_model: Callable[[], object], X: np.ndarray, y: Sequence, groups: Sequence,
                   images: Sequence, columns: Sequence[str], *, folds: list, per_feature: bool = False,
                   metric: str = "balanced_accuracy", show_progress: bool = False) -> pd.DataFrame:
    """Validation score with all features, with each group removed, with each group alone (and, if
    ``per_feature``, with each single feature removed).

    Parameters
    ----------
    make_model : callable
        Returns a fresh estimator with ``fit(X, y, groups=...)`` and ``predict_proba``.
    X : (N, F) ndarray
    y, groups, images : (N,) array_like
    columns : sequence of str
        Names of X's columns (their groups come from :func:`~nucleoscope.classify.table.feature_group`).
    folds : list of (train, test)
        The grouped folds, shared by every row so the drops compare like with like.
    per_feature : bool
        Also one row per feature removed (F refits per fold: slow for forests).
    metric : str
        Key of :func:`~nucleoscope.classify.validation.scores` reported (per nucleus; and per image
        where images have one class).

    Returns
    -------
    pandas.DataFrame
        Columns ``Removed``, ``Kind`` (all | group | group only | feature), ``Features``, ``Nucleus``,
        ``NucleusDrop`` (score with all features minus this row's), ``Image``, ``ImageDrop``; sorted by
        kind, then by the drop.
    """
    y = np.asarray(y).astype(str)
    groups = np.asarray(groups)
    columns = list(columns)
    classes = sorted(np.unique(y))

    def score(cols: list[int]) -> tuple[float, float]:
        def fp(tr, te):
            m = make_model()
            m.fit(X[tr][:, cols], y[tr], groups=groups[tr])
            return m.predict_proba(X[te][:, cols])
        r = cross_validate(fp, y, groups, images, classes=classes, folds=folds)
        return r.nucleus[metric], (r.image[metric] if r.image else np.nan)

    fam: dict[str, list[int]] = {}
    for i, c in enumerate(columns):
        fam.setdefault(feature_group(c), []).append(i)
    jobs: list[tuple[str, str, list[int]]] = [("(none)", "all", list(range(len(columns))))]
    if len(fam) > 1:
        for g, idx in fam.items():
            jobs.append((g, "group", [i for i in range(len(columns)) if i not in idx]))
            jobs.append((g, "group only", idx))
    if per_feature:
        jobs += [(c, "feature", [j for j in range(len(columns)) if j != i]) for i, c in enumerate(columns)]
    from tqdm.auto import tqdm

    rows = []
    for name, kind, cols in tqdm(jobs, desc="ablation", disable=not show_progress, leave=False):
        n, im = score(cols)
        rows.append({"Removed": name, "Kind": kind, "Features": len(cols), "Nucleus": n, "Image": im})
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    df["NucleusDrop"] = base["Nucleus"] - df["Nucleus"]
    df["ImageDrop"] = base["Image"] - df["Image"]
    order = {"all": 0, "group": 1, "group only": 2, "feature": 3}
    df["_o"] = df["Kind"].map(order)
    df = df.sort_values(["_o", "NucleusDrop"], ascending=[True, False]).drop(columns="_o").reset_index(drop=True)
    return df[["Removed", "Kind", "Features", "Nucleus", "NucleusDrop", "Image", "ImageDrop"]]
