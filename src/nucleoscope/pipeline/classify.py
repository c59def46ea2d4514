"""``nucleoscope classify``: train classifiers on the nuclei of finished runs and predict new runs.

A RUN_DIR is an output folder of ``run`` or ``measure`` (``nuclei.parquet`` or ``nuclei.csv``,
``images.csv``, ``run.json``, ``labels/``). Crops and patches are read from the run's ``crops.h5`` /
``patches.h5`` when their size matches, else cut on demand from the run's images and label images.

A MODEL_DIR holds ``model.json`` (format, classes, feature columns, every feature model's fitted
arrays, validation scores, provenance), ``cnn.safetensors``/``cnn.json`` and
``patchnet.safetensors``/``patchnet.json`` for networks, ``validation/`` (out-of-fold predictions,
per-image table, confusion matrices, ablation, statistics, drift QC, embeddings as CSV) and
``report.html``. ``model.json`` is written last: a folder without it is an unfinished training.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, io
from .._errors import InputError
from ..classify.labels import attach_labels, read_labels
from ..classify.linear import MODEL_KINDS, FeatureClassifier
from ..classify.table import feature_matrix
from ..classify.train import NETWORK_MODELS, NucleusData, TrainConfig, TrainResult, network_proba, train_all
from ..classify.validation import image_means

__all__ = ["read_runs", "load_nuclei", "image_nuclei", "train_classifier", "training_provenance", "output_folder",
           "save_model", "load_model", "model_name", "predict_proba", "prediction_table", "predict_runs",
           "MODEL_FORMAT", "DEFAULT_CROP", "DEFAULT_PATCH"]

log = logging.getLogger(__name__)

MODEL_FORMAT = "nucleoscope-classifier"
DEFAULT_CROP = 128  # SCENMED's crop
DEFAULT_PATCH = 17  # SCENMED's PatchNet (BJ vs MCF10A); 11 for NIH/3T3 vs BJ


# -- reading runs ------------------------------------------------------------------------------------
def read_runs(run_dirs: Sequence[str | os.PathLike]) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Concatenate the nuclei tables of run folders.

    Returns
    -------
    table : pandas.DataFrame
        All nuclei, ``ImageName`` as str.
    run_of : dict
        Image name -> its run folder.

    Raises
    ------
    InputError
        A folder is not a finished run, or two runs hold an image of the same name (both named).
    """
    if not run_dirs:
        raise InputError("give at least one RUN_DIR (an output folder of nucleoscope run or measure)")
    tables, run_of = [], {}
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise InputError("not a folder (give an output folder of nucleoscope run or measure)", path=d)
        src = next((d / n for n in ("nuclei.parquet", "nuclei.csv") if (d / n).is_file()), None)
        if src is None:
            raise InputError("no nuclei.parquet or nuclei.csv: not a finished run (run or measure it first)", path=d)
        t = io.read_table(src, dtype={"ImageName": str})
        t["ImageName"] = t["ImageName"].astype(str)
        for name in t["ImageName"].unique():
            if name in run_of:
                raise InputError(f"image {name!r} is in two runs ({run_of[name]} and {d}); names must be unique",
                                 path=d)
            run_of[name] = d
        tables.append(t)
    return pd.concat(tables, ignore_index=True), run_of


def _run_json(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _image_path(run_dir: Path, rec: pd.Series, info: dict) -> Path:
    p = Path(str(rec["Path"]))
    if not p.is_absolute():
        for base in (Path(info.get("cwd", ".")), Path.cwd()):
            if (base / p).exists():
                return base / p
    if not p.exists():
        raise InputError(f"image {rec['ImageName']!r} of this run is no longer at {p}: cannot cut crops from it "
                         "(run with --crops/--patches, or keep the images)", path=run_dir)
    return p


def _labels_path(run_dir: Path, rec: pd.Series) -> Path:
    own = run_dir / "labels" / f"{rec['ImageName']}.tif"
    if own.is_file():
        return own
    lp = str(rec.get("LabelsPath", "") or "")
    if lp and Path(lp).is_file():
        return Path(lp)
    raise InputError(f"no label image for {rec['ImageName']!r}", path=run_dir)


def _cut_windows(image: np.ndarray, labels: np.ndarray, kind: str, size: int, *, saturation: float | None = None):
    """The crops (one per nucleus) or patches (stride half their side) of one image's nuclei."""
    from ..features import nucleus_crops, nucleus_patches

    if kind == "crops":
        return nucleus_crops(image, labels, size=size)
    return nucleus_patches(image, labels, size=size, stride=max(size // 2, 1), saturation=saturation)


def _windows_of_run(run_dir: Path, names: set[str], kind: str, size: int) -> dict[str, Any]:
    """Crops or patches of a run's images: from its HDF5 file when the size matches, else cut now."""
    from ..io.hdf5 import read_crops_h5

    h5 = run_dir / f"{kind}.h5"
    if h5.is_file():
        d = read_crops_h5(h5)
        if int(d["size"]) == size:
            img_names = np.asarray(d["image_names"], dtype=str)[np.asarray(d["image_index"])]
            keep = np.isin(img_names, list(names))
            return {"images": np.asarray(d["images"])[keep], "masks": np.asarray(d["masks"])[keep].astype(bool),
                    "image": img_names[keep], "object": np.asarray(d["object_number"])[keep]}
    info = _run_json(run_dir)
    params = info.get("parameters", {})
    recs = io.read_table(run_dir / "images.csv", dtype={"ImageName": str})
    recs = recs[(recs["Status"] == "ok") & recs["ImageName"].astype(str).isin(names)]
    parts: dict[str, list] = {"images": [], "masks": [], "image": [], "object": []}
    for _, r in recs.iterrows():
        img = io.read_image(_image_path(run_dir, r, info), channel=params.get("channel"), plane=params.get("plane"))
        labels = io.read_labels(_labels_path(run_dir, r))
        w = _cut_windows(img.data, labels, kind, size, saturation=img.saturation)
        parts["images"].append(w.images)
        parts["masks"].append(w.masks)
        parts["image"].append(np.full(len(w), str(r["ImageName"]), dtype=object))
        parts["object"].append(w.object_numbers)
    if not parts["images"]:
        return {"images": np.zeros((0, size, size), np.float32), "masks": np.zeros((0, size, size), bool),
                "image": np.zeros(0, str), "object": np.zeros(0, np.int64)}
    return {k: np.concatenate(v) for k, v in parts.items()} | {"image": np.concatenate(parts["image"]).astype(str)}


def _attach_windows(table: pd.DataFrame, run_of: dict[str, Path], kind: str, size: int):
    """The windows of the table's nuclei: (images (M, S, S), masks (M, S, S), table row of each window).

    Crops: at most one per row (a row without one is absent). Patches: any number per row."""
    key = {(n, int(o)): i for i, (n, o) in enumerate(zip(table["ImageName"], table["ObjectNumber"]))}
    imgs, masks, rows = [], [], []
    by_run: dict[Path, set[str]] = {}
    for n in table["ImageName"].unique():
        by_run.setdefault(run_of[n], set()).add(n)
    for run_dir, names in by_run.items():
        w = _windows_of_run(run_dir, names, kind, size)
        r = np.array([key.get((n, int(o)), -1) for n, o in zip(w["image"], w["object"])], dtype=np.int64)
        ok = r >= 0
        imgs.append(w["images"][ok])
        masks.append(w["masks"][ok])
        rows.append(r[ok])
    return np.concatenate(imgs), np.concatenate(masks), np.concatenate(rows)


def load_nuclei(run_dirs: Sequence[str | os.PathLike], *, labels: str | os.PathLike | None = None,
                class_column: str | None = None, group_column: str | None = None, drop_flagged: bool = True,
                columns: Sequence[str] | None = None, crops: int = 0, patches: int = 0) -> NucleusData:
    """Read runs (and a labels file) into :class:`~nucleoscope.classify.train.NucleusData`.

    Parameters
    ----------
    run_dirs : sequence of path
    labels : path, optional
        Labels file; without it (prediction) ``Class``/``Group`` are empty and ``Group`` is the image.
    drop_flagged : bool
        Leave QC-flagged nuclei out (SCENMED trains on nuclei that pass QC).
    columns : sequence of str, optional
        Feature columns (a model's); default: every measurement column.
    crops, patches : int
        Side of the crops / patches to attach (0: none).
    """
    table, run_of = read_runs(run_dirs)
    if labels is not None:
        lab = read_labels(labels, class_column=class_column, group_column=group_column)
        table = attach_labels(table, lab)
    else:
        table = table.assign(Class="", Group=table["ImageName"].astype(str))
    if drop_flagged and "QC_Flagged" in table.columns:
        table = table[table["QC_Flagged"].fillna(0).astype(int) == 0]
    table = table.reset_index(drop=True)
    if table.empty:
        raise InputError("no nuclei left to classify (all unlabelled or QC-flagged; try --keep-flagged)")
    X, cols = feature_matrix(table, columns)
    data = NucleusData(table, X, cols)
    if crops:
        im, mk, rows = _attach_windows(table, run_of, "crops", crops)
        if len(rows) < len(table):
            log.warning("%d nuclei have no crop and are left out", len(table) - len(rows))
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        data = NucleusData(table.iloc[rows].reset_index(drop=True), X[rows], cols, im[order], mk[order])
    if patches:
        im, _, rows = _attach_windows(data.table, run_of, "patches", patches)
        data.patches, data.patch_row = im, rows
    return data


def image_nuclei(table: pd.DataFrame, image: np.ndarray, labels: np.ndarray, *, columns: Sequence[str],
                 crops: int = 0, patches: int = 0, saturation: float | None = None) -> NucleusData:
    """One image's nuclei as :class:`~nucleoscope.classify.train.NucleusData` to predict, with crops
    and patches cut as :func:`predict_runs` cuts them from a run's images.

    Parameters
    ----------
    table : pandas.DataFrame
        The image's nuclei table (``ImageName``, ``ObjectNumber``, measurements).
    image, labels : (Y, X) ndarray
        The image (as acquired) and its labels.
    columns : sequence of str
        The model's feature columns.
    crops, patches : int
        Side of the crops / patches to attach (0: none).
    saturation : float, optional
        Detector full scale (patches of saturated pixels are left out).

    Raises
    ------
    InputError
        A feature column is missing (named).
    """
    table = table.reset_index(drop=True)
    X, cols = feature_matrix(table, columns)
    data = NucleusData(table.assign(Class="", Group=table["ImageName"].astype(str)), X, cols)

    def rows_of(w) -> np.ndarray:
        row = {int(o): i for i, o in enumerate(data.table["ObjectNumber"])}
        return np.array([row.get(int(o), -1) for o in w.object_numbers], dtype=np.int64)

    if crops:
        w = _cut_windows(image, labels, "crops", crops, saturation=saturation)
        r = rows_of(w)
        ok = np.flatnonzero(r >= 0)
        ok = ok[np.argsort(r[ok], kind="stable")]
        rows = r[ok]
        if len(rows) < len(data.table):
            log.warning("%d nuclei have no crop and are left out", len(data.table) - len(rows))
        data = NucleusData(data.table.iloc[rows].reset_index(drop=True), X[rows], cols, w.images[ok],
                           w.masks[ok].astype(bool))
    if patches:
        w = _cut_windows(image, labels, "patches", patches, saturation=saturation)
        r = rows_of(w)
        data.patches, data.patch_row = w.images[r >= 0], r[r >= 0]
    return data


# -- training ----------------------------------------------------------------------------------------
def output_folder(out: str | os.PathLike, first: str) -> Path:
    """The output folder, checked writable before any work (a file of that name is an error)."""
    if Path(out).is_file():
        raise InputError("is a file; -o names the output folder", path=out)
    return io.check_writable(Path(out) / first).parent


def _write_validation(out: Path, res: TrainResult, data: NucleusData) -> None:
    v = out / "validation"
    v.mkdir(parents=True, exist_ok=True)
    io.write_table(res.scores_table(), v / "scores.csv")
    for name, r in res.validation.items():
        oof = pd.DataFrame({"ImageName": r.images, "ObjectNumber": data.table["ObjectNumber"].to_numpy()[r.index],
                            "Class": r.y, "Group": r.groups, "Fold": r.fold,
                            "Predicted": r.predicted})
        for i, c in enumerate(r.classes):
            oof[f"P_{c}"] = r.proba[:, i]
        io.write_table(oof, v / f"oof_{name}.csv")
        io.write_table(r.confusion().reset_index(), v / f"confusion_{name}.csv")
        if r.image_table is not None:
            io.write_table(r.image_table, v / f"images_{name}.csv")
    for name, df in (("ablation", res.ablation), ("stats", res.stats), ("drift", res.drift)):
        if df is not None:
            io.write_table(df, v / f"{name}.csv")
    for name, df in res.embeddings.items():
        io.write_table(df, v / f"embedding_{name}.csv")


def train_classifier(run_dirs: Sequence[str | os.PathLike], labels: str | os.PathLike, out: str | os.PathLike,
                     config: TrainConfig, *, class_column: str | None = None, group_column: str | None = None,
                     drop_flagged: bool = True, crop_size: int = DEFAULT_CROP, patch_size: int = DEFAULT_PATCH,
                     command: str | None = None, show_progress: bool = False) -> TrainResult:
    """Train, validate and save every model of ``config`` into the model folder ``out``.

    Returns
    -------
    TrainResult
    """
    out = output_folder(out, "model.json")
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    nets = [m for m in config.models if m in NETWORK_MODELS]
    if "patchnet" in nets:
        config.patchnet.setdefault("patch_size", patch_size)
        config.patchnet.setdefault("crop_size", crop_size)
    for name in nets:  # a killed training resumes from here (same command); removed once the model is saved
        getattr(config, name).setdefault("checkpoint_dir", os.fspath(out / "checkpoints"))
    data = load_nuclei(run_dirs, labels=labels, class_column=class_column, group_column=group_column,
                       drop_flagged=drop_flagged, crops=crop_size if nets else 0,  # patchnet: crops for its heat-maps
                       patches=patch_size if "patchnet" in nets else 0)
    res = train_all(data, config, show_progress=show_progress)
    provenance = training_provenance(run_dirs, labels, class_column=class_column, group_column=group_column,
                                     drop_flagged=drop_flagged, command=command)
    save_model(out, res, data, config, provenance=provenance, started=started,
               seconds=time.perf_counter() - t0, crop_size=crop_size, patch_size=patch_size)
    return res


def training_provenance(run_dirs: Sequence[str | os.PathLike], labels: str | os.PathLike, *,
                        class_column: str | None = None, group_column: str | None = None, drop_flagged: bool = True,
                        command: str | None = None) -> dict[str, Any]:
    """Where a training on runs came from: the first entries of ``model.json``'s ``training``."""
    return {"command": command or " ".join(sys.argv), "cwd": os.getcwd(),
            "runs": [os.fspath(r) for r in run_dirs], "labels": os.fspath(labels),
            "class_column": class_column, "group_column": group_column, "drop_flagged": drop_flagged}


def save_model(out: str | os.PathLike, res: TrainResult, data: NucleusData, config: TrainConfig, *,
               provenance: dict[str, Any], started: _dt.datetime | None = None, seconds: float | None = None,
               crop_size: int = DEFAULT_CROP, patch_size: int = DEFAULT_PATCH) -> dict[str, Any]:
    """Write a trained :class:`~nucleoscope.classify.train.TrainResult` as a model folder.

    The folder ``classify train`` writes (networks, ``validation/``, ``report.html``, then ``model.json``
    last), whoever trained it: :func:`train_classifier`, or the napari Classify widget on its layers.

    Parameters
    ----------
    out : path
        The model folder (checked writable here; made when missing).
    res, data, config
        What :func:`~nucleoscope.classify.train.train_all` returned, was given, and was configured with.
    provenance : dict
        Where the training came from (``command``, ``cwd``, ``runs``, ``labels``, ...): the first entries
        of ``model.json``'s ``training``.
    started : datetime, optional
        When the training started (default: now).
    seconds : float, optional
        How long it took, reading included (default: the models' own seconds).
    crop_size, patch_size : int
        The networks' window sizes, recorded for prediction.

    Returns
    -------
    dict
        The content of ``model.json``.
    """
    out = output_folder(out, "model.json")
    started = started or _dt.datetime.now(_dt.timezone.utc)
    seconds = float(sum(res.seconds.values()) if seconds is None else seconds)
    nets = [m for m in config.models if m in NETWORK_MODELS]
    out.mkdir(parents=True, exist_ok=True)
    for name in nets:
        res.models[name].save(out / name)
    _write_validation(out, res, data)
    info = {
        "format": MODEL_FORMAT, "version": 1, "classes": res.classes, "best": res.best,
        "feature_columns": data.columns,
        "models": {k: res.models[k].to_dict() for k in config.models if k in MODEL_KINDS},
        "networks": {k: {"file": f"{k}.safetensors", "crop_size": crop_size,
                         "patch_size": patch_size if k == "patchnet" else None} for k in nets},
        "validation": {k: r.summary() for k, r in res.validation.items()},
        "folds": len(res.folds),
        "training": {**provenance,
                     "config": asdict(config), "nuclei": len(data.table),
                     "images": int(data.table["ImageName"].nunique()),
                     "class_counts": data.table["Class"].value_counts().sort_index().to_dict(),
                     "started": started.isoformat(), "seconds": round(seconds, 2),
                     "model_seconds": {k: round(v, 2) for k, v in res.seconds.items()},
                     "nucleoscope_version": __version__, "python": platform.python_version(),
                     "platform": platform.platform()},
    }
    try:
        from ..report.classify import write_classify_report

        write_classify_report(out, info, res, data)
    except Exception:  # noqa: BLE001 - a figure failing must not lose a trained model
        log.warning("the classification report could not be written", exc_info=True)
    io.write_json(info, out / "model.json")  # last: its presence marks a finished model folder
    if nets and (out / "checkpoints").is_dir():
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return info


# -- prediction --------------------------------------------------------------------------------------
def load_model(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a model folder's ``model.json`` (checked) -> dict with the parsed feature models under
    ``"loaded"`` (networks load lazily in :func:`predict_runs`)."""
    d = Path(model_dir)
    try:
        info = json.loads((d / "model.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no model.json: not a trained classifier (or its training did not finish)", path=d) from None
    except ValueError as e:
        raise InputError(f"model.json is not valid JSON ({e})", path=d) from None
    if info.get("format") != MODEL_FORMAT:
        raise InputError(f"model.json is not a {MODEL_FORMAT} (format {info.get('format')!r})", path=d)
    info["loaded"] = {k: FeatureClassifier.from_dict(v) for k, v in info.get("models", {}).items()}
    return info


def _load_network(model_dir: Path, kind: str):
    if kind == "cnn":
        from ..classify.cnn import CNNClassifier as Net
    else:
        from ..classify.patchnet import PatchNetClassifier as Net
    return Net.load(model_dir / kind)


def model_name(info: dict[str, Any], model: str | None, model_dir: str | os.PathLike) -> str:
    """The model of a loaded folder to predict with: ``model``, or the one chosen at training (``best``).

    Raises
    ------
    InputError
        ``model`` is not in the folder (the ones it has are named).
    """
    name = model or info["best"]
    available = list(info["loaded"]) + list(info.get("networks", {}))
    if name not in available:
        raise InputError(f"model {name!r} is not in this folder (has {', '.join(available)})", path=model_dir)
    return name


def predict_proba(info: dict[str, Any], model_dir: str | os.PathLike, name: str, data: NucleusData) -> np.ndarray:
    """(N, K) class probabilities of the folder's model ``name`` for the nuclei of ``data`` (its ``X``
    for a feature model, its crops or patches for a network), columns in ``info["classes"]`` order."""
    if name in info["loaded"]:
        return info["loaded"][name].predict_proba(data.X)
    return network_proba(name, _load_network(Path(model_dir), name), data, np.arange(len(data.table)))


def prediction_table(table: pd.DataFrame, proba: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """``ImageName, ObjectNumber, Predicted, P_<class>...``: one row per row of ``table``."""
    pred = pd.DataFrame({"ImageName": table["ImageName"].to_numpy(),
                         "ObjectNumber": table["ObjectNumber"].to_numpy(),
                         "Predicted": np.asarray(classes)[np.argmax(proba, axis=1)]})
    for i, c in enumerate(classes):
        pred[f"P_{c}"] = proba[:, i]
    return pred


def predict_runs(model_dir: str | os.PathLike, run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 model: str | None = None, keep_flagged: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict the class of every nucleus of the runs; write ``OUT/predictions.csv`` and
    ``OUT/image_predictions.csv`` (mean probability over each image's nuclei).

    Parameters
    ----------
    model_dir : path
    run_dirs : sequence of path
    out : path
    model : str, optional
        Which of the folder's models (default: the one chosen at training, ``best``).
    keep_flagged : bool
        Also predict QC-flagged nuclei (they are marked and left out of the image means).

    Returns
    -------
    predictions, image_predictions : pandas.DataFrame
    """
    model_dir = Path(model_dir)
    out = output_folder(out, "predictions.csv")
    info = load_model(model_dir)
    name = model_name(info, model, model_dir)
    classes = list(info["classes"])
    net = info.get("networks", {}).get(name)
    data = load_nuclei(run_dirs, drop_flagged=not keep_flagged, columns=info["feature_columns"],
                       crops=(net or {}).get("crop_size") or 0, patches=(net or {}).get("patch_size") or 0)
    proba = predict_proba(info, model_dir, name, data)
    pred = prediction_table(data.table, proba, classes)
    flagged = (data.table["QC_Flagged"].fillna(0).astype(int).to_numpy() == 1
               if "QC_Flagged" in data.table.columns else np.zeros(len(pred), bool))
    if keep_flagged:
        pred["QC_Flagged"] = flagged.astype(int)
    im = image_means(proba[~flagged], pred["ImageName"].to_numpy()[~flagged], classes)
    out.mkdir(parents=True, exist_ok=True)
    io.write_table(pred, out / "predictions.csv")
    io.write_table(im, out / "image_predictions.csv")
    io.write_json({"model_dir": os.fspath(model_dir), "model": name, "classes": classes,
                   "runs": [os.fspath(r) for r in run_dirs], "keep_flagged": keep_flagged,
                   "nuclei": len(pred), "images": len(im), "nucleoscope_version": __version__,
                   "date": _dt.datetime.now(_dt.timezone.utc).isoformat()}, out / "predict.json")
    return pred, im
