"""Do the classes differ in a feature? Student's unpaired t-test and Mann-Whitney U per feature, per
class pair, on nuclei and on image means (nuclei of one image are not independent, so the image-level
test is the one to quote when images are the replicates)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ["compare_classes", "DEFAULT_STAT_COLUMNS"]

# What a biologist asks first: chromatin condensation, size, shape, brightness (SCENMED's box plots: HC/EC).
DEFAULT_STAT_COLUMNS = ("Chromatin_HCEC", "AreaShape_Area", "AreaShape_Eccentricity", "AreaShape_Solidity",
                        "Intensity_MeanIntensity", "Texture_Haralick_Contrast")


def _tests(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy import stats

    a = a[np.isfinite(a)]
    b = b[np.isfinite(b)]
    out = {"n_a": len(a), "n_b": len(b), "mean_a": float(np.mean(a)) if len(a) else np.nan,
           "mean_b": float(np.mean(b)) if len(b) else np.nan}
    if len(a) < 2 or len(b) < 2:
        return out | {"t": np.nan, "p_t": np.nan, "U": np.nan, "p_U": np.nan, "cohen_d": np.nan}
    t = stats.ttest_ind(a, b, equal_var=True)  # Student's unpaired t-test (SCENMED)
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    d = (a.mean() - b.mean()) / pooled if pooled > 0 else np.nan
    return out | {"t": float(t.statistic), "p_t": float(t.pvalue), "U": float(u.statistic),
                  "p_U": float(u.pvalue), "cohen_d": float(d)}


def compare_classes(table: pd.DataFrame, columns: Sequence[str], *, class_column: str = "Class",
                    image_column: str = "ImageName") -> pd.DataFrame:
    """Two-sample tests of each feature between each pair of classes.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per nucleus with the feature columns, the class and the image.
    columns : sequence of str
        Features to test (missing ones are skipped).
    class_column, image_column : str

    Returns
    -------
    pandas.DataFrame
        One row per (feature, class pair, level) with ``Level`` (nucleus | image), sample sizes, means,
        ``t``, ``p_t`` (Student), ``U``, ``p_U`` (Mann-Whitney, two-sided), ``cohen_d`` and ``q_t``,
        ``q_U``: Benjamini-Hochberg adjusted over the rows of the same level.
    """
    from scipy.stats import false_discovery_control

    columns = [c for c in columns if c in table.columns]
    classes = sorted(table[class_column].astype(str).unique())
    levels = {"nucleus": table}
    if image_column in table.columns and (table.groupby(image_column)[class_column].nunique() == 1).all():
        levels["image"] = table.groupby(image_column).agg({**{c: "mean" for c in columns}, class_column: "first"})
    rows = []
    for level, t in levels.items():
        cls = t[class_column].astype(str)
        for col in columns:
            v = pd.to_numeric(t[col], errors="coerce").to_numpy(np.float64)
            for a, b in combinations(classes, 2):
                rows.append({"Feature": col, "ClassA": a, "ClassB": b, "Level": level,
                             **_tests(v[(cls == a).to_numpy()], v[(cls == b).to_numpy()])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for p in ("p_t", "p_U"):
        q = np.full(len(df), np.nan)
        for level in df["Level"].unique():
            m = (df["Level"] == level).to_numpy() & np.isfinite(df[p].to_numpy())
            if m.any():
                q[m] = false_discovery_control(df.loc[m, p].to_numpy())
        df["q" + p[1:]] = q
    return df
