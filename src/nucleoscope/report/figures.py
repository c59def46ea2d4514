"""Figures of a run and of a training: nucleus distributions, training curves.

Every figure is a :class:`matplotlib.figure.Figure` drawn without pyplot, so drawing never switches
the global matplotlib backend or touches pyplot's figure list: a user's notebook or napari session
keeps its own. Saving goes through the figure's own canvas (Agg for PNG).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["distributions_figure", "training_curves_figure", "write_training_curves"]

#: the training-loss columns of ``log.csv`` that are plotted, when present
_LOSS_COLUMNS = ("loss", "bce", "dice", "rpn_cls", "rpn_box", "boundary")


def _hist_bins(values: np.ndarray, n: int = 40) -> tuple[np.ndarray | int, bool]:
    """Histogram bins for ``values``: log-spaced (and True) when positive values span more than 20x.

    Nucleus areas of a batch mixing magnifications, or with debris and clumps, span two decades; on a
    linear axis every ordinary nucleus then falls into the first bar or two.
    """
    v = values[np.isfinite(values)]
    if v.size and v.min() > 0 and v.max() > 20 * v.min():
        return np.geomspace(v.min(), v.max(), n + 1), True
    return n, False


def distributions_figure(nuclei: pd.DataFrame) -> Figure | None:
    """Histograms of nucleus area and mean intensity, the median marked.

    Parameters
    ----------
    nuclei : pandas.DataFrame
        The nuclei table (``AreaShape_Area`` px or ``AreaShape_Area_um2`` µm² when filled,
        ``Intensity_MeanIntensity``).

    Returns
    -------
    matplotlib.figure.Figure or None
        One panel per column present; ``None`` for a table without nuclei.
    """
    if nuclei.empty:
        return None
    cols = [("AreaShape_Area", "area (px)"), ("Intensity_MeanIntensity", "mean intensity")]
    if "AreaShape_Area_um2" in nuclei and nuclei["AreaShape_Area_um2"].notna().any():
        cols[0] = ("AreaShape_Area_um2", "area (µm²)")
    cols = [(c, t) for c, t in cols if c in nuclei]
    fig = Figure(figsize=(4.5 * len(cols), 3))
    axes = fig.subplots(1, len(cols), squeeze=False)
    for ax, (c, t) in zip(axes[0], cols):
        v = nuclei[c].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        bins, log = _hist_bins(v)
        ax.hist(v, bins=bins, color="#3b7dd8")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(t + (" (log scale)" if log else ""))
        ax.set_ylabel("nuclei")
        if len(v):
            ax.axvline(np.median(v), color="k", lw=1, ls="--")
    fig.tight_layout()
    return fig


def training_curves_figure(log: pd.DataFrame | str | os.PathLike) -> Figure:
    """Training losses (rolling mean over 5 logged rows, log scale) and validation F1 against the step.

    Parameters
    ----------
    log : pandas.DataFrame or path
        The training log (``log.csv`` of ``nucleoscope train-segmenter``, or its table): columns
        ``step``, the losses (``loss``, ``bce``, ``dice``, ``rpn_cls``, ``rpn_box``, ``boundary``; those
        present are drawn) and ``val_f1_50``, ``val_f1_70`` (empty where not validated).

    Returns
    -------
    matplotlib.figure.Figure
        Two panels, 10 x 4 inches.
    """
    df = log if isinstance(log, pd.DataFrame) else pd.read_csv(log)
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    for col in _LOSS_COLUMNS:
        if col in df:
            a1.plot(df["step"], df[col].rolling(5, min_periods=1).mean(), label=col)
    a1.set_xlabel("step"), a1.set_ylabel("training loss"), a1.set_yscale("log"), a1.legend()
    v = df.dropna(subset=["val_f1_50"])
    a2.plot(v["step"], v["val_f1_50"], "o-", label="F1@0.5")
    a2.plot(v["step"], v["val_f1_70"], "o-", label="F1@0.7")
    a2.set_xlabel("step"), a2.set_ylabel("validation F1"), a2.legend()
    fig.tight_layout()
    return fig


def write_training_curves(log_csv: str | os.PathLike, path: str | os.PathLike, *, dpi: int = 80) -> Path:
    """Draw :func:`training_curves_figure` of ``log_csv`` and write it as a PNG, atomically.

    Parameters
    ----------
    log_csv : path
        The training log.
    path : path
        Destination ``.png``.
    dpi : int
        Dots per inch (80: an 800 x 320 px image).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from ..io import atomic_path

    fig = training_curves_figure(log_csv)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target
