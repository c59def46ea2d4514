"""Train and validate every requested classifier on one labelled set of nuclei, in memory.

:func:`train_all` is the whole of ``nucleoscope classify train`` after the files are read: grouped
folds shared by every model (so their scores compare like with like), out-of-fold predictions per model
and per image, an area-only baseline, the final models fitted on all nuclei, feature ablation,
class statistics, image-set drift QC and t-SNE embeddings. Torch is imported only for ``cnn`` and
``patchnet``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError
from .ablation import ablation_table
from .drift import image_set_drift
from .embedding import tsne_embedding
from .linear import MODEL_KINDS, FeatureClassifier
from .stats import DEFAULT_STAT_COLUMNS, compare_classes
from .validation import CVResult, cross_validate, grouped_folds

__all__ = ["NucleusData", "TrainConfig", "TrainResult", "train_all", "ALL_MODELS", "NETWORK_MODELS"]

log = logging.getLogger(__name__)

NETWORK_MODELS = ("cnn", "patchnet")
ALL_MODELS = MODEL_KINDS + NETWORK_MODELS
BASELINE = "area_only"


@dataclass
class NucleusData:
    """Labelled nuclei with everything a model may learn from; rows aligned across fields.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per nucleus: ``ImageName``, ``ObjectNumber``, ``Class``, ``Group``, measurements.
    X : (N, F) float64 ndarray
        Feature matrix of ``columns``.
    columns : list of str
    crops : (N, S, S) float32 ndarray or None
        Each nucleus's crop (for ``cnn``).
    crop_masks : (N, S, S) bool ndarray or None
    patches : (M, P, P) float32 ndarray or None
        Patches (for ``patchnet``).
    patch_row : (M,) int ndarray or None
        Row of ``table`` each patch belongs to.
    """

    table: pd.DataFrame
    X: np.ndarray
    columns: list[str]
    crops: np.ndarray | None = None
    crop_masks: np.ndarray | None = None
    patches: np.ndarray | None = None
    patch_row: np.ndarray | None = None
    _reference: np.ndarray | None = field(default=None, repr=False)

    @property
    def y(self) -> np.ndarray:
        return self.table["Class"].astype(str).to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.table["Group"].astype(str).to_numpy()

    @property
    def images(self) -> np.ndarray:
        return self.table["ImageName"].astype(str).to_numpy()


@dataclass
class TrainConfig:
    """What ``classify train`` fits and measures.

    Attributes
    ----------
    models : sequence of str
        Any of ``logreg``, ``svm``, ``forest``, ``cnn``, ``patchnet``.
    n_folds : int or None
        Grouped folds (default: min(7, groups of the rarest class)).
    ablation : {"groups", "features", "none"}
        Feature ablation with the best feature model: per group, or per group and per feature.
    stat_columns : sequence of str
        Features tested between classes (plus the best linear model's five strongest).
    set_column : str or None
        Column of the table naming image sets for drift QC (none: skipped).
    embed : bool
        t-SNE of the features (and of the CNN's penultimate layer).
    network_folds : int or None
        Validation folds a network is trained on (each fold is one training); None = all.
    cnn, patchnet : dict
        Keyword arguments of :class:`~nucleoscope.classify.cnn.CNNClassifier` /
        :class:`~nucleoscope.classify.patchnet.PatchNetClassifier`.
    C : float or "auto"
        Inverse L2 strength of logreg and svm; ``"auto"`` chooses it per training by grouped inner folds
        (:data:`~nucleoscope.classify.linear.C_GRID`). Ablation and drift QC then use the value chosen
        for the final model (a search per removed group would multiply their cost by 18).
    random_state : int
    """

    models: Sequence[str] = ("logreg", "svm", "forest")
    n_folds: int | None = None
    ablation: str = "groups"
    stat_columns: Sequence[str] = DEFAULT_STAT_COLUMNS
    set_column: str | None = None
    embed: bool = True
    network_folds: int | None = None
    cnn: dict = field(default_factory=dict)
    patchnet: dict = field(default_factory=dict)
    C: float | str = 1.0
    random_state: int = 0

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in ALL_MODELS]
        if bad or not self.models:
            raise InputError(f"unknown model(s) {bad}; choose from {', '.join(ALL_MODELS)} or all")
        if self.ablation not in ("groups", "features", "none"):
            raise InputError(f"ablation must be groups, features or none, got {self.ablation!r}")


@dataclass
class TrainResult:
    """Everything :func:`train_all` learned and measured."""

    classes: list[str]
    models: dict[str, Any]
    validation: dict[str, CVResult]
    seconds: dict[str, float]
    best: str
    ablation: pd.DataFrame | None = None
    stats: pd.DataFrame | None = None
    drift: pd.DataFrame | None = None
    embeddings: dict[str, pd.DataFrame] = field(default_factory=dict)
    folds: list = field(default_factory=list)

    def scores_table(self) -> pd.DataFrame:
        """One row per model: nucleus and image scores, seconds."""
        rows = []
        for name, r in self.validation.items():
            row = {"Model": name, "Nuclei": r.nucleus["n"], "NucleusAccuracy": r.nucleus["accuracy"],
                   "NucleusBalancedAccuracy": r.nucleus["balanced_accuracy"], "NucleusMacroF1": r.nucleus["macro_f1"]}
            if r.image:
                row.update(Images=r.image["n"], ImageAccuracy=r.image["accuracy"],
                           ImageBalancedAccuracy=r.image["balanced_accuracy"])
            row["FoldsValidated"] = int(r.fold.max() + 1) if len(r.fold) else 0
            row["TrainSeconds"] = round(self.seconds.get(name, np.nan), 2)
            rows.append(row)
        return pd.DataFrame(rows)


def _feature_factory(kind: str, config: TrainConfig, C: float | str | None = None):
    return lambda: FeatureClassifier(kind, C=config.C if C is None else C, random_state=config.random_state)


def _chosen_C(model: FeatureClassifier, config: TrainConfig) -> float | str:
    """The C a fitted model used (its inner search's choice with ``C="auto"``)."""
    search = model.params_.get("search", {})
    return search.get("best", {}).get("C", config.C) if config.C == "auto" else config.C


def _inner_split(groups: np.ndarray, y: np.ndarray, rng: int) -> tuple[np.ndarray, np.ndarray]:
    """A grouped ~15% early-stopping split of the training rows (falls back to a stratified one)."""
    try:
        folds = grouped_folds(y, groups, random_state=rng)
        return folds[0]
    except InputError:
        from sklearn.model_selection import StratifiedShuffleSplit

        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < 2:
            idx = np.arange(len(y))
            return idx, idx[:0]
        return next(StratifiedShuffleSplit(1, test_size=0.15, random_state=rng).split(y, y))


def _network(kind: str, config: TrainConfig, tag: str):
    opts = dict(config.cnn if kind == "cnn" else config.patchnet)
    if opts.get("checkpoint_dir"):  # one resumable training per fold
        opts["checkpoint_dir"] = Path(opts["checkpoint_dir"]) / f"{kind}_{tag}"
    opts.setdefault("random_state", config.random_state)
    if kind == "cnn":
        from .cnn import CNNClassifier

        return CNNClassifier(**opts)
    from .patchnet import PatchNetClassifier

    return PatchNetClassifier(**opts)


def row_reference(data: NucleusData, normalize: str) -> np.ndarray | None:
    """(N, 2) background and level per table row that the networks map to 0 and 1: each crop's own
    nucleus, or (``normalize="image"``) the median nucleus of its image. None without crops (PatchNet
    then divides each patch by its own mean)."""
    if data.crops is None:
        return None
    from ._net import image_reference, nucleus_reference

    if data._reference is None:
        data._reference = nucleus_reference(data.crops, data.crop_masks)
    return image_reference(data._reference, data.images) if normalize == "image" else data._reference


def _fit_network(kind: str, data: NucleusData, rows: np.ndarray, config: TrainConfig, tag: str = "final"):
    """Fit a network on table rows ``rows`` with a grouped early-stopping split inside them."""
    y = data.y
    cls = np.unique(y)
    tr_i, va_i = _inner_split(data.groups[rows], y[rows], config.random_state)
    tr, va = rows[tr_i], rows[va_i]
    m = _network(kind, config, tag)
    log.info("%s %s: %d nuclei to train, %d for early stopping", kind, tag, len(tr), len(va))
    ref = row_reference(data, m.normalize)
    if kind == "cnn":
        val = {} if not len(va) else {"val_images": data.crops[va], "val_y": y[va], "val_masks": data.crop_masks[va],
                                      "val_reference": ref[va]}
        return m.fit(data.crops[tr], y[tr], masks=data.crop_masks[tr], classes=cls, reference=ref[tr], **val)
    in_tr = np.isin(data.patch_row, tr)
    in_va = np.isin(data.patch_row, va)
    pref = None if ref is None else ref[data.patch_row]
    val = {} if not in_va.any() else {"val_patches": data.patches[in_va], "val_y": y[data.patch_row[in_va]],
                                      "val_reference": None if pref is None else pref[in_va]}
    return m.fit(data.patches[in_tr], y[data.patch_row[in_tr]], classes=cls,
                 reference=None if pref is None else pref[in_tr], **val)


def network_proba(kind: str, model, data: NucleusData, rows: np.ndarray) -> np.ndarray:
    """(len(rows), K) probabilities of a network for table rows (PatchNet: mean over each nucleus's
    patches; a nucleus without patches gets the uniform distribution)."""
    ref = row_reference(data, model.normalize)
    if kind == "cnn":
        return model.predict_proba(data.crops[rows], masks=data.crop_masks[rows], reference=ref[rows])
    k = len(model.classes_)
    out = np.full((len(rows), k), 1.0 / k)
    sel = np.isin(data.patch_row, rows)
    if sel.any():
        pref = None if ref is None else ref[data.patch_row[sel]]
        g, p = model.aggregate(model.predict_proba(data.patches[sel], reference=pref), data.patch_row[sel])
        pos = {r: i for i, r in enumerate(rows)}
        for gi, pi in zip(g, p):
            out[pos[int(gi)]] = pi
    return out


def _check_inputs(data: NucleusData, config: TrainConfig) -> None:
    """Every input a requested step needs, checked before the first model is fitted."""
    if config.set_column and config.set_column not in data.table.columns:
        raise InputError(f"set column {config.set_column!r} is neither a column of the labels file nor of the "
                         "nuclei table")
    if "cnn" in config.models and data.crops is None:
        raise InputError("the cnn model needs nucleus crops (run with --crops, or let classify make them)")
    if "patchnet" in config.models and data.patches is None:
        raise InputError("the patchnet model needs patches (run with --patches 17, or let classify make them)")


def train_all(data: NucleusData, config: TrainConfig, *, show_progress: bool = False) -> TrainResult:
    """Validate and fit every model of ``config`` on ``data``.

    Returns
    -------
    TrainResult
        ``best`` is the model with the highest image-level balanced accuracy (nucleus-level when
        images mix classes), ties to the simpler model (feature models before networks).
    """
    _check_inputs(data, config)
    y, groups, images = data.y, data.groups, data.images
    classes = sorted(np.unique(y))
    folds = grouped_folds(y, groups, n_folds=config.n_folds, random_state=config.random_state)
    log.info("%d nuclei, %d classes, %d groups, %d grouped folds", len(y), len(classes), len(np.unique(groups)), len(folds))
    validation: dict[str, CVResult] = {}
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}

    def run_features(name: str, kind: str, cols: list[int]):
        def fp(tr, te):
            m = _feature_factory(kind, config)()
            return m.fit(data.X[tr][:, cols], y[tr], groups=groups[tr]).predict_proba(data.X[te][:, cols])
        t0 = time.perf_counter()
        validation[name] = cross_validate(fp, y, groups, images, classes=classes, folds=folds)
        seconds[name] = time.perf_counter() - t0
        return cols

    area = [i for i, c in enumerate(data.columns) if c == "AreaShape_Area"]
    if area:
        run_features(BASELINE, "logreg", area)
    for kind in (m for m in config.models if m in MODEL_KINDS):
        run_features(kind, kind, list(range(len(data.columns))))
        models[kind] = _feature_factory(kind, config)().fit(data.X, y, groups=groups)
    for kind in (m for m in config.models if m in NETWORK_MODELS):
        t0 = time.perf_counter()
        use = folds if config.network_folds is None else folds[: config.network_folds]

        def fp(tr, te, kind=kind):
            fold = next(i for i, (a, _) in enumerate(use) if len(a) == len(tr) and np.array_equal(a, tr))
            return network_proba(kind, _fit_network(kind, data, tr, config, f"fold{fold}"), data, te)
        validation[kind] = cross_validate(fp, y, groups, images, classes=classes, folds=use)
        models[kind] = _fit_network(kind, data, np.arange(len(y)), config)
        seconds[kind] = time.perf_counter() - t0
    candidates = [m for m in config.models if m in validation]

    def key(m):
        r = validation[m]
        return (r.image or r.nucleus)["balanced_accuracy"], r.nucleus["balanced_accuracy"], -config.models.index(m)
    best = max(candidates, key=key)
    res = TrainResult(classes, models, validation, seconds, best, folds=folds)
    feature_models = [m for m in candidates if m in MODEL_KINDS]
    if feature_models and config.ablation != "none":
        # the interpretable linear model when there is one: a forest with its inner search refitted for
        # every group (and every feature) on every fold would take hours on a laptop
        abl = "logreg" if "logreg" in feature_models else max(feature_models, key=key)
        res.ablation = ablation_table(_feature_factory(abl, config, _chosen_C(models[abl], config)), data.X, y,
                                      groups, images, data.columns,
                                      folds=folds, per_feature=config.ablation == "features",
                                      show_progress=show_progress)
        res.ablation.insert(0, "Model", abl)
    stat_cols = list(config.stat_columns)
    lin = next((m for m in ("logreg", "svm", "forest") if m in models), None)
    if lin:
        top = np.argsort(models[lin].feature_weights())[::-1][:5]
        stat_cols += [data.columns[i] for i in top if data.columns[i] not in stat_cols]
    res.stats = compare_classes(data.table, stat_cols)
    if config.set_column:
        model_kind = lin or "logreg"
        c = _chosen_C(models[model_kind], config) if model_kind in models else 1.0
        res.drift = image_set_drift(_feature_factory(model_kind, config, c), data.X, y,
                                    data.table[config.set_column].astype(str).to_numpy(), images,
                                    random_state=config.random_state)
    if config.embed:
        idx, xy = tsne_embedding(data.X, random_state=config.random_state)
        res.embeddings["features"] = _embedding_frame(data, idx, xy)
        if "cnn" in models:
            emb = models["cnn"].embed(data.crops, masks=data.crop_masks,
                                      reference=row_reference(data, models["cnn"].normalize))
            idx, xy = tsne_embedding(emb, random_state=config.random_state)
            res.embeddings["cnn"] = _embedding_frame(data, idx, xy)
    return res


def _embedding_frame(data: NucleusData, idx: np.ndarray, xy: np.ndarray) -> pd.DataFrame:
    t = data.table.iloc[idx]
    return pd.DataFrame({"ImageName": t["ImageName"].to_numpy(), "ObjectNumber": t["ObjectNumber"].to_numpy(),
                         "Class": t["Class"].to_numpy(), "X": xy[:, 0], "Y": xy[:, 1]})
