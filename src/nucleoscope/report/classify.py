"""The report of a trained classifier (``MODEL_DIR/report.html``): validation scores, confusion
matrices, feature ablation, training curves, t-SNE embeddings, box plots with p-values, drift QC and
PatchNet heat-maps. One self-contained HTML page; figures drawn on Figure objects (no pyplot)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import _CSS, _e, _png_uri

__all__ = ["write_classify_report", "confusion_figure", "ablation_figure", "embedding_figure",
           "boxplot_figure", "network_curves_figure", "heatmap_gallery_figure"]

log = logging.getLogger(__name__)

MAX_GALLERY = 6  # example nuclei per class in the heat-map gallery


def confusion_figure(confusion: pd.DataFrame, title: str) -> Figure:
    """Row-normalised confusion matrix (true rows, predicted columns) with counts in the cells."""
    m = confusion.to_numpy(dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(m)
    fig = Figure(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8)
    ax.set_xticks(range(k), confusion.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), confusion.index, fontsize=8)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def ablation_figure(ablation: pd.DataFrame) -> Figure:
    """Drop in nucleus balanced accuracy when a feature group is removed, and the score of the group alone."""
    g = ablation[ablation["Kind"] == "group"].sort_values("NucleusDrop")
    alone = ablation[ablation["Kind"] == "group only"].set_index("Removed")["Nucleus"]
    fig = Figure(figsize=(9, 0.4 * max(len(g), 3) + 1))
    a1, a2 = fig.subplots(1, 2, sharey=True)
    a1.barh(g["Removed"], g["NucleusDrop"], color="#c0392b")
    a1.axvline(0, color="k", lw=0.5)
    a1.set_xlabel("accuracy drop when removed")
    a2.barh(g["Removed"], alone.reindex(g["Removed"]).to_numpy(), color="#2980b9")
    base = ablation.loc[ablation["Kind"] == "all", "Nucleus"]
    if len(base):
        a2.axvline(float(base.iloc[0]), color="k", ls="--", lw=0.8, label="all features")
        a2.legend(fontsize=8)
    a2.set_xlabel("balanced accuracy of the group alone")
    fig.tight_layout()
    return fig


def embedding_figure(emb: pd.DataFrame, title: str) -> Figure:
    """t-SNE scatter coloured by class."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for c in sorted(emb["Class"].unique()):
        e = emb[emb["Class"] == c]
        ax.scatter(e["X"], e["Y"], s=4, alpha=0.6, label=f"{c} ({len(e)})")
    ax.set_xticks([]), ax.set_yticks([]), ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    return fig


def boxplot_figure(table: pd.DataFrame, stats: pd.DataFrame, columns: list[str]) -> Figure:
    """Per-class box plots of features, the nucleus-level Student's t p-value (2 classes) in the title."""
    classes = sorted(table["Class"].astype(str).unique())
    n = len(columns)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, col in zip(axes, columns):
        vals = [pd.to_numeric(table.loc[table["Class"] == c, col], errors="coerce").dropna().to_numpy() for c in classes]
        ax.boxplot(vals, showfliers=False)
        ax.set_xticks(range(1, len(classes) + 1), classes, rotation=30, fontsize=7)
        s = stats[(stats["Feature"] == col) & (stats["Level"] == "nucleus")]
        title = col.replace("Texture_", "").replace("AreaShape_", "").replace("Intensity_", "")
        if len(classes) == 2 and len(s):
            title += f"\nt-test p = {s['p_t'].iloc[0]:.2g}"
        ax.set_title(title, fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def network_curves_figure(history: list[dict], title: str) -> Figure:
    """Training and validation loss, and validation balanced accuracy, per epoch.

    Parameters
    ----------
    history : list of dict
        One record per epoch (``epoch``, ``train_loss``, ``val_loss``, ``val_balanced_accuracy``), as
        the networks' ``history_``.
    """
    fig = Figure(figsize=(9, 3.2))
    a1, a2 = fig.subplots(1, 2)
    h = pd.DataFrame(history)
    if len(h):
        for col, lab in (("train_loss", "train"), ("val_loss", "validation")):
            if col in h:
                a1.plot(h["epoch"], h[col], label=lab)
        if "val_balanced_accuracy" in h:
            a2.plot(h["epoch"], h["val_balanced_accuracy"], color="C1", label="validation")
            a2.set_ylim(0, 1)
    a1.set_xlabel("epoch"), a1.set_ylabel("weighted cross-entropy"), a1.legend(fontsize=8)
    a2.set_xlabel("epoch"), a2.set_ylabel("balanced accuracy")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def heatmap_gallery_figure(crops: np.ndarray, masks: np.ndarray, class_maps: np.ndarray, filter_maps: np.ndarray,
                           title: str) -> Figure:
    """Example nuclei (top row), PatchNet's probability of a class at each pixel (middle; NaN, i.e. the
    border and outside the nucleus, transparent) and the activation of the filter most indicative of
    that class (bottom).

    Parameters
    ----------
    crops, masks : (N, S, S)
    class_maps, filter_maps : (N, S, S) float
    title : str
    """
    n = max(len(crops), 1)
    fig = Figure(figsize=(1.5 * n + 0.8, 4.6))
    axes = np.asarray(fig.subplots(3, n, squeeze=False))
    im = fim = None
    for i in range(len(crops)):
        c = crops[i]
        lo, hi = np.percentile(c[masks[i]] if masks[i].any() else c, (1, 99.5))
        for ax in axes[:, i]:
            ax.imshow(c, cmap="gray", vmin=lo, vmax=hi)
        im = axes[1, i].imshow(np.ma.masked_invalid(class_maps[i]), cmap="magma", vmin=0, vmax=1, alpha=0.8)
        f = filter_maps[i]
        fin = f[np.isfinite(f)]
        fim = axes[2, i].imshow(np.ma.masked_invalid(f), cmap="viridis", alpha=0.8,
                                vmin=float(fin.min()) if fin.size else 0, vmax=float(fin.max()) if fin.size else 1)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("nucleus", fontsize=7)
    axes[1, 0].set_ylabel("P(class)", fontsize=7)
    axes[2, 0].set_ylabel("top filter", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=9)
    return fig


def _table_html(df: pd.DataFrame, float_fmt: str = "{:.3f}", max_rows: int = 60) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for _, r in df.head(max_rows).iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if isinstance(v, (float, np.floating)):
                txt = "" if not np.isfinite(v) else (f"{v:.2e}" if c.startswith(("p_", "q_")) else float_fmt.format(v))
                cells.append(f"<td class='num'>{txt}</td>")
            else:
                cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p>{len(df) - max_rows} more rows in the CSV.</p>" if len(df) > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _img(fig: Figure, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='{_png_uri(fig)}'>"


def _gallery(res, data) -> str:
    pn = res.models.get("patchnet")
    if pn is None or data.crops is None:
        return ""
    parts = []
    rng = np.random.default_rng(0)
    for k, c in enumerate(res.classes):
        idx = np.flatnonzero(data.y == c)
        if not len(idx):
            continue
        pick = np.sort(rng.choice(idx, min(MAX_GALLERY, len(idx)), replace=False))
        top = int(pn.top_filters(c, 1)[0])
        cm = np.stack([pn.heatmap(data.crops[i], mask=data.crop_masks[i])[k] for i in pick])
        fm = np.stack([pn.filter_maps(data.crops[i], mask=data.crop_masks[i])[top] for i in pick])
        fig = heatmap_gallery_figure(data.crops[pick], data.crop_masks[pick], cm, fm,
                                     f"{c}: P({c}) per patch and filter {top}, the most indicative of {c}")
        parts.append(f"<h3>{_e(c)}</h3>{_img(fig, 'heat-maps ' + c)}")
    return "".join(parts)


def write_classify_report(out: str | os.PathLike, info: dict[str, Any], res, data) -> Path:
    """Write ``out/report.html`` for a trained classifier.

    Parameters
    ----------
    out : path
        The model folder.
    info : dict
        The content of model.json being written.
    res : nucleoscope.classify.train.TrainResult
    data : nucleoscope.classify.train.NucleusData
    """
    from ..io import atomic_path

    out = Path(out)
    t = info["training"]
    counts = ", ".join(f"{_e(k)} {v}" for k, v in t["class_counts"].items())
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nucleoscope classifier</title>"
             f"<style>{_CSS}</style></head><body><h1>nucleoscope classifier</h1>",
             f"<p>{_e(t['command'])}<br>nucleoscope {_e(t['nucleoscope_version'])} · {_e(t['started'])} · "
             f"{t['seconds']:.0f} s</p>",
             f"<p>{t['nuclei']} nuclei from {t['images']} images ({counts}); validation: {len(res.folds)} folds "
             f"grouped by {_e(t['group_column'] or 'image')} — no group on both sides of a split. "
             f"Chosen model: <b>{_e(res.best)}</b>.</p>",
             "<h2>Validation</h2>", _table_html(res.scores_table()),
             "<p>Image scores: the mean class probability over the image's nuclei. "
             "<i>area_only</i> is a logistic regression on nucleus area alone (a baseline).</p>",
             "<h2>Confusion matrices (nuclei, out of fold)</h2><div class='thumbs' style='gap:20px'>"]
    for name, r in res.validation.items():
        parts.append(_img(confusion_figure(r.confusion(), name), f"confusion {name}"))
    parts.append("</div>")
    if any(hasattr(m, "history_") for m in res.models.values()):
        parts.append("<h2>Training curves</h2>")
        for k, m in res.models.items():
            if hasattr(m, "history_"):
                fi = getattr(m, "fit_info_", {})
                parts.append(_img(network_curves_figure(m.history_, f"{k} (final fit): best epoch "
                                                        f"{fi.get('best_epoch', '?')}, stopped by "
                                                        f"{fi.get('stopped', '?')}"), f"curves {k}"))
    if res.ablation is not None:
        parts.append(f"<h2>Feature ablation ({_e(res.ablation['Model'].iloc[0])})</h2>")
        if (res.ablation["Kind"] == "group").any():
            parts.append(_img(ablation_figure(res.ablation), "ablation"))
        parts.append(_table_html(res.ablation))
    if res.embeddings:
        parts.append("<h2>Embeddings (t-SNE)</h2><div class='thumbs' style='gap:20px'>")
        parts += [_img(embedding_figure(e, f"t-SNE of the {k}"), f"t-SNE {k}") for k, e in res.embeddings.items()]
        parts.append("</div>")
    if res.stats is not None and len(res.stats):
        cols = list(dict.fromkeys(res.stats["Feature"]))[:9]
        parts.append("<h2>Class differences</h2>" + _img(boxplot_figure(data.table, res.stats, cols), "box plots"))
        parts.append("<p>Student's unpaired t-test and Mann-Whitney U (two-sided); q = Benjamini-Hochberg over "
                     "the rows of one level. Nuclei of one image are not independent: quote the <i>image</i> "
                     "level when images are the replicates.</p>")
        parts.append(_table_html(res.stats.drop(columns=["U"], errors="ignore")))
    if res.drift is not None:
        parts.append("<h2>Image-set QC (drift, blur)</h2><p>Within a class, a set a classifier tells apart from "
                     "the class's other sets (balanced accuracy > 0.60, SCENMED) is flagged: an acquisition "
                     "artefact, not biology.</p>" + _table_html(res.drift))
    try:
        gallery = _gallery(res, data)
    except Exception:  # noqa: BLE001 - the gallery is an illustration; the numbers above stand without it
        log.warning("PatchNet heat-maps could not be drawn", exc_info=True)
        gallery = ""
    if gallery:
        parts.append("<h2>PatchNet heat-maps</h2>" + gallery)
    parts.append("</body></html>")
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path
