"""The Classify widget: train a nucleus classifier on Labels layers and their tables, predict the nuclei of
a Labels layer with a model folder, and show a PatchNet's per-class heat-map.

The machinery is ``nucleoscope classify``'s: :func:`~nucleoscope.classify.train.train_all` on a
:class:`~nucleoscope.classify.train.NucleusData` built from the layers' tables
(:func:`~nucleoscope.classify.table.feature_matrix`), or from run folders opened by the reader
(:func:`~nucleoscope.pipeline.classify.load_nuclei`, what ``classify train`` reads); the model folder is
written by :func:`~nucleoscope.pipeline.classify.save_model`, the writer of ``classify train``, and read
back by :func:`~nucleoscope.pipeline.classify.load_model`; prediction is
:func:`~nucleoscope.pipeline.classify.predict_proba` + :func:`~nucleoscope.pipeline.classify.prediction_table`,
what ``classify predict`` computes.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                            QLineEdit, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout,
                            QWidget)

from .. import InputError
from ..classify.labels import attach_labels, read_labels
from ..classify.linear import MODEL_KINDS
from ..classify.table import feature_columns_of, feature_matrix
from ..classify.train import NucleusData, TrainConfig, train_all
from ..pipeline import measure_labels
from ..pipeline.classify import (image_nuclei, load_model, load_nuclei, model_name, output_folder, predict_proba,
                                 prediction_table, save_model, training_provenance)
from ._common import FLAGGED_SUFFIX, LABELS_SUFFIX, LayerChoice, image_array, layer_spacing, report_error

log = logging.getLogger(__name__)

__all__ = ["ClassifyWidget", "PREDICTED_SUFFIX", "HEATMAP_SUFFIX", "class_colours", "labelled_nuclei",
           "network_available", "patchnet_available"]

#: the predicted classes of the nuclei of image ``NAME`` are the Labels layer ``"NAME classes"``
PREDICTED_SUFFIX = " classes"
#: a PatchNet's probability map of one class over image ``NAME`` is the Image layer ``"NAME heat-map"``
HEATMAP_SUFFIX = " heat-map"
#: class colours, in the model's class order (matplotlib's tab10)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_LABELS_FILE = "labels file…"
_AUTO, _IMAGES, _NUCLEI = "auto", "images", "nuclei"
_NOT_CLASSES = ("ImageName", "ObjectNumber", "Class", "Group", "Predicted")
#: measurements, QC flags and predictions: never offered as a class or group column
_NOT_CLASS_PREFIXES = ("AreaShape_", "Intensity_", "Texture_", "Chromatin_", "Location_", "Cells_", "Cytoplasm_",
                       "QC_", "P_")


def class_colours(classes: list[str]) -> dict[str, str]:
    """The colour of each class (hex), as the Classify widget draws them."""
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}


def network_available(kind: str) -> bool:
    """Whether :mod:`nucleoscope.classify.cnn` / ``.patchnet`` (``kind``) imports here (torch included)."""
    import importlib

    try:
        importlib.import_module(f"nucleoscope.classify.{kind}")
    except Exception:  # noqa: BLE001 - not installed yet, or its torch is missing: the option is hidden
        return False
    return True


def patchnet_available() -> bool:
    """Whether :mod:`nucleoscope.classify.patchnet` (PatchNet and its heat-maps) imports here."""
    return network_available("patchnet")


def image_name(layer: Labels) -> str:
    """The image a Labels layer belongs to: its ``source_image``, else its name without ``" nuclei"``."""
    src = (layer.metadata or {}).get("source_image")
    if src:
        return str(src)
    return layer.name[: -len(LABELS_SUFFIX)] if layer.name.endswith(LABELS_SUFFIX) else layer.name


@dataclass
class _Nuclei:
    """One Labels layer's nuclei, copied on the GUI thread for the worker."""

    layer: Labels
    name: str
    labels: np.ndarray
    table: pd.DataFrame
    image: np.ndarray | None
    spacing: float | None
    saturation: float | None

    def measured(self, feature_set: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The table with ``ImageName``; measured now when it has no measurements, lacks ``columns``, or
        is not the table of these labels any more (nuclei painted or erased since it was made)."""
        t = self.table
        missing = not feature_columns_of(t) if columns is None else any(c not in t for c in columns)
        stale = "ObjectNumber" not in t or not np.array_equal(
            np.sort(t["ObjectNumber"].to_numpy(dtype=np.int64)), np.unique(self.labels[self.labels > 0]))
        if missing or stale:
            if self.image is None:
                raise InputError(f"labels {self.layer.name!r} have no measurements and no image layer to measure "
                                 "them on (open the image, or measure with the Measure widget)")
            old = t
            t = measure_labels(self.image, self.labels, spacing=self.spacing, saturation=self.saturation,
                               feature_set=feature_set)
            extra = [c for c in old.columns if c not in t.columns and c != "ImageName"]
            if extra and "ObjectNumber" in old:  # a class column (say) stays with its nuclei
                t = t.merge(old[["ObjectNumber", *extra]], on="ObjectNumber", how="left")
        t = t.drop(columns=["ImageName"], errors="ignore")
        t.insert(0, "ImageName", self.name)
        return t


def _copy_nuclei(viewer: Any, layer: Labels) -> _Nuclei:
    name = image_name(layer)
    labels = np.asarray(layer.data)
    if labels.ndim != 2:
        raise InputError(f"labels {layer.name!r} have shape {labels.shape}; the Classify widget works on 2D labels")
    image = viewer.layers[name] if name in viewer.layers and isinstance(viewer.layers[name], Image) else None
    data = image_array(image) if image is not None else None
    if data is not None and data.shape != labels.shape:
        raise InputError(f"labels {layer.name!r} {labels.shape} and image {name!r} {data.shape} differ in shape")
    sat = (image.metadata or {}).get("saturation") if image is not None else None
    spacing = (layer_spacing(image) if image is not None else None) or layer_spacing(layer)
    return _Nuclei(layer, name, labels.astype(np.int32, copy=True), pd.DataFrame(layer.features).copy(), data,
                   spacing, float(sat) if sat else None)


def labelled_nuclei(tables: list[pd.DataFrame], *, class_column: str | None = None, labels_path: str | None = None,
                    group: str = _AUTO, keep_flagged: bool = False) -> tuple[NucleusData, str, str]:
    """The labelled nuclei of some tables (one per image, with ``ImageName``) as ``NucleusData``.

    Parameters
    ----------
    tables : list of pandas.DataFrame
    class_column : str, optional
        A column of the tables holding each nucleus's class (empty cells: unlabelled, left out).
    labels_path : str, optional
        A labels file (``ImageName,class`` or ``ImageName,ObjectNumber,class``), instead of ``class_column``.
    group : str
        Validation groups: ``"images"``, ``"nuclei"`` (each nucleus its own group: only for one image, as
        nuclei of an image are not independent), a column of the tables, or ``"auto"`` (images when every
        class has nuclei in two images, else nuclei).
    keep_flagged : bool
        Train on QC-flagged nuclei too.

    Returns
    -------
    data : NucleusData
    class_source : str
        The column or file the classes came from.
    groups : str
        What the validation groups are.
    """
    table = pd.concat(tables, ignore_index=True)
    if labels_path:
        lab = read_labels(labels_path)
        open_images = set(table["ImageName"].astype(str))
        listed = lab.table[lab.table["ImageName"].isin(open_images)]
        if listed.empty:
            raise InputError(f"no image of the labels file is open here (the file lists "
                             f"{', '.join(sorted(lab.table['ImageName'].unique())[:5])}; the layers are of "
                             f"{', '.join(sorted(open_images)[:5])})", path=labels_path)
        table = attach_labels(table, replace(lab, table=listed.reset_index(drop=True)))
        source = f"{Path(labels_path).name} ({lab.class_column})"
    else:
        if not class_column or class_column not in table:
            raise InputError(f"no class column {class_column!r} in the tables: choose a column or a labels file")
        cls = table[class_column]
        keep = cls.notna() & (cls.astype(str).str.strip() != "")
        table = table[keep].assign(Class=cls[keep].astype(str).str.strip())
        source = class_column
    if not keep_flagged and "QC_Flagged" in table:
        table = table[table["QC_Flagged"].fillna(0).astype(int) == 0]
    table = table.reset_index(drop=True)
    if table["Class"].nunique() < 2:
        raise InputError(f"need nuclei of at least two classes to train, found {sorted(table['Class'].unique())} "
                         f"(in {source})")
    if group == _AUTO:
        per_class = table.groupby("Class")["ImageName"].nunique()
        group = _IMAGES if per_class.min() >= 2 else _NUCLEI
    if group == _IMAGES:
        groups = table["ImageName"].astype(str)
    elif group == _NUCLEI:
        groups = table["ImageName"].astype(str) + "#" + table["ObjectNumber"].astype(str)
    elif group in table:
        groups = table[group].astype(str)
    else:
        raise InputError(f"no group column {group!r} in the tables")
    table["Group"] = groups.to_numpy()
    X, cols = feature_matrix(table)
    return NucleusData(table, X, cols), source, group


# -- the workers (generators: a cancel is honoured at every yield) --------------------------------------------
def _train_job(nuclei: list[_Nuclei], run_dirs: list[str], *, feature_set: str, class_column: str | None,
               labels_path: str | None, group: str, keep_flagged: bool, config: TrainConfig, out: str):
    steps = len(nuclei) + 2
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    measured: dict[str, pd.DataFrame] = {}
    output_folder(out, "model.json")  # writable, before any work
    if run_dirs:  # classify train's own reading of the runs
        yield ("reading the runs", 0, steps)
        group_column = None if group in (_AUTO, _IMAGES) else group
        data = load_nuclei(run_dirs, labels=labels_path, group_column=group_column, drop_flagged=not keep_flagged)
        provenance = training_provenance(run_dirs, labels_path, group_column=group_column,
                                         drop_flagged=not keep_flagged, command="napari: nucleoscope Classify widget")
        groups = group_column or _IMAGES
    else:
        tables = []
        for i, n in enumerate(nuclei):
            yield (f"measuring {n.name}", i, steps)
            t = n.measured(feature_set)
            if t is not n.table:
                measured[n.layer.name] = t
            tables.append(t)
        data, source, groups = labelled_nuclei(tables, class_column=class_column, labels_path=labels_path,
                                               group=group, keep_flagged=keep_flagged)
        provenance = {"command": "napari: nucleoscope Classify widget", "cwd": os.getcwd(), "runs": [],
                      "layers": [n.layer.name for n in nuclei], "labels": labels_path,
                      "class_column": None if labels_path else class_column, "class_source": source,
                      "group_column": groups, "drop_flagged": not keep_flagged}
    yield (f"training on {len(data.table)} nuclei", steps - 2, steps)
    res = train_all(data, config)
    yield ("saving", steps - 1, steps)
    info = save_model(out, res, data, config, provenance=provenance, started=started,
                      seconds=time.perf_counter() - t0)
    return info, groups, measured


def _predict_job(n: _Nuclei, info: dict, model_dir: str, name: str, *, feature_set: str, heatmap: bool):
    steps = 3 if heatmap else 2
    yield ("measuring", 0, steps)
    table = n.measured(feature_set, info["feature_columns"])
    net = info.get("networks", {}).get(name) or {}
    if net and n.image is None:
        raise InputError(f"the {name} model predicts from the image of {n.layer.name!r}: open {n.name!r}")
    # the windows predict_runs attaches for this model (none for a feature model)
    data = image_nuclei(table, n.image, n.labels, columns=info["feature_columns"],  # names missing columns
                        crops=net.get("crop_size") or 0, patches=net.get("patch_size") or 0, saturation=n.saturation)
    yield ("predicting", 1, steps)
    pred = prediction_table(data.table, predict_proba(info, model_dir, name, data), info["classes"])
    maps = None
    if heatmap:
        yield ("PatchNet heat-map", 2, steps)
        from ..classify.patchnet import PatchNetClassifier

        if n.image is None:
            raise InputError(f"the heat-map needs the image of {n.layer.name!r}: open {n.name!r}")
        net = PatchNetClassifier.load(Path(model_dir) / "patchnet")
        maps = np.asarray(net.image_heatmap(n.image, n.labels), dtype=np.float32)
    return table, pred, maps


def _default_folder() -> str:
    return str(Path.home() / "nucleoscope-models" / time.strftime("classifier-%Y%m%d-%H%M%S"))


def _swatch(colour: str) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(colour))
    return QIcon(pix)


class ClassifyWidget(QWidget):
    """Train a nucleus classifier on Labels layers, predict the nuclei of a Labels layer, show heat-maps.

    **Train**: tick the Labels layers to learn from (their tables are the Measure widget's; a layer
    without measurements is measured first, on its image), choose where the classes come from (a column
    of the tables, or a labels file ``ImageName,class`` / ``ImageName,ObjectNumber,class``), the model
    (logreg, svm, forest) and the model folder. The folder is what ``nucleoscope classify train`` writes,
    and the widget shows its validation balanced accuracy (grouped folds: by image when every class has
    two images, else by nucleus). With *source* ``run folders`` it trains on the tables of the run folders
    the reader opened, exactly as ``classify train RUN_DIR... --labels FILE``.

    **Predict**: load a model folder and press **Predict**: the nuclei of the chosen Labels layer are
    coloured by predicted class in the Labels layer ``"<image> classes"`` (the legend lists the classes,
    their colours and counts), and ``Predicted`` and ``P_<class>`` join the layer's table. When the folder
    holds a PatchNet, **heat-map** adds its probability map of the chosen class as ``"<image> heat-map"``.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    """

    #: emitted with the model folder's ``model.json`` content when a training has been saved
    trained = Signal(object)
    #: emitted with the ``"<image> classes"`` layer when a prediction has been shown
    predicted = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.info: dict | None = None  # the loaded model folder's model.json
        self.model_dir: str | None = None
        #: the loaded folder holds a PatchNet and classify.patchnet imports: the heat-map option is shown
        self.has_patchnet = False
        self.maps: np.ndarray | None = None  # the last heat-maps (K, Y, X)
        self._maps_layer: Image | None = None
        self._checked: dict[str, bool] = {}
        self._labels_file_chosen = False
        self._watched: set[int] = set()  # ids of the layers whose renames and tables this widget follows

        # -- train
        train = QGroupBox("Train")
        tf = QFormLayout(train)
        self.layers = QListWidget()
        self.layers.setMaximumHeight(90)
        self.layers.itemChanged.connect(self._layer_ticked)
        tf.addRow("labels layers", self.layers)
        self.source = QComboBox()
        self.source.addItems(["layers", "run folders"])
        self.source.setToolTip("layers: the tables of the ticked layers (as measured now); run folders: the "
                               "tables of the run folders the reader opened, as `classify train` reads them")
        tf.addRow("source", self.source)
        self.runs = QLineEdit()
        self.runs.setPlaceholderText("run folders (;-separated), filled from the layers the reader opened")
        tf.addRow("run folders", self.runs)
        self.class_source = QComboBox()
        tf.addRow("classes from", self.class_source)
        self.labels_file = QLineEdit()
        self.labels_file.setPlaceholderText("ImageName,class or ImageName,ObjectNumber,class")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_labels)
        row = QHBoxLayout()
        row.addWidget(self.labels_file, 1)
        row.addWidget(browse)
        tf.addRow("labels file", row)
        self.groups = QComboBox()
        tf.addRow("validation groups", self.groups)
        self.model = QComboBox()
        self.model.addItems([*MODEL_KINDS, "linear (all three)"])
        tf.addRow("model", self.model)
        self.features = QComboBox()
        self.features.addItems(["shape", "default", "all"])
        self.features.setCurrentText("default")
        tf.addRow("measurements", self.features)
        self.keep_flagged = QCheckBox("train on QC-flagged nuclei too")
        tf.addRow("", self.keep_flagged)
        self.full_report = QCheckBox("ablation and t-SNE in the report (slower)")
        tf.addRow("", self.full_report)
        self.out = QLineEdit(_default_folder())
        obrowse = QPushButton("…")
        obrowse.clicked.connect(self._browse_out)
        orow = QHBoxLayout()
        orow.addWidget(self.out, 1)
        orow.addWidget(obrowse)
        tf.addRow("model folder", orow)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        tf.addRow(self.train_button)
        self.score = QLabel("")
        self.score.setWordWrap(True)
        tf.addRow(self.score)

        # -- predict
        predict = QGroupBox("Predict")
        pf = QFormLayout(predict)
        self.model_folder = QLineEdit()
        self.model_folder.setPlaceholderText("a model folder (model.json)")
        mbrowse = QPushButton("…")
        mbrowse.clicked.connect(self._browse_model)
        load = QPushButton("Load")
        load.clicked.connect(lambda: self.load_model(self.model_folder.text()))
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_folder, 1)
        mrow.addWidget(mbrowse)
        mrow.addWidget(load)
        pf.addRow("model folder", mrow)
        self.predict_model = QComboBox()
        pf.addRow("model", self.predict_model)
        self.target = LayerChoice(napari_viewer, Labels, exclude=(FLAGGED_SUFFIX, PREDICTED_SUFFIX))
        pf.addRow("labels", self.target)
        self.heatmap = QCheckBox("PatchNet heat-map of")
        self.heatmap_class = QComboBox()
        self.heatmap_class.currentIndexChanged.connect(self._show_heatmap)
        hrow = QHBoxLayout()
        hrow.addWidget(self.heatmap)
        hrow.addWidget(self.heatmap_class, 1)
        self.heatmap_row = QWidget()
        self.heatmap_row.setLayout(hrow)
        pf.addRow(self.heatmap_row)
        self.heatmap_row.setVisible(False)
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.predict)
        pf.addRow(self.predict_button)
        self.legend = QListWidget()
        self.legend.setMaximumHeight(110)
        pf.addRow("classes", self.legend)

        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(train)
        layout.addWidget(predict)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self.class_source.currentTextChanged.connect(self._class_source_changed)
        self.class_source.currentTextChanged.connect(self._class_source_chosen)
        self._refresh_layers()

    # ------------------------------------------------------------------------------------------ layers

    def _candidates(self) -> list[Labels]:
        return [la for la in self.viewer.layers if isinstance(la, Labels)
                and not la.name.endswith((FLAGGED_SUFFIX, PREDICTED_SUFFIX))]

    def _refresh_layers(self, event: Any = None) -> None:
        """Rebuild the list of Labels layers (ticked by default when they have a table) and the choices
        that depend on their tables."""
        self.layers.blockSignals(True)
        self.layers.clear()
        for la in self._candidates():
            if id(la) not in self._watched:  # follow renames and new tables
                la.events.features.connect(self._refresh_layers)
                la.events.name.connect(self._refresh_layers)
                self._watched.add(id(la))
            item = QListWidgetItem(la.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            # as the user ticked it; else ticked when it has a table (measured since, say)
            ticked = self._checked.get(la.name, bool(feature_columns_of(pd.DataFrame(la.features))))
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
            self.layers.addItem(item)
        self.layers.blockSignals(False)
        self._refresh_choices()

    def _layer_ticked(self, item: QListWidgetItem) -> None:
        self._checked[item.text()] = item.checkState() == Qt.CheckState.Checked
        self._refresh_choices()

    def set_layers(self, names: list[str]) -> None:
        """Tick exactly the Labels layers ``names`` for training."""
        for i in range(self.layers.count()):
            item = self.layers.item(i)
            self._checked[item.text()] = item.text() in names
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def chosen_layers(self) -> list[Labels]:
        """The ticked Labels layers."""
        names = {self.layers.item(i).text() for i in range(self.layers.count())
                 if self.layers.item(i).checkState() == Qt.CheckState.Checked}
        return [la for la in self._candidates() if la.name in names]

    def _refresh_choices(self, event: Any = None) -> None:
        """Class columns (the tables' non-measurement columns) and group columns of the ticked layers."""
        columns: list[str] = []
        runs: list[str] = []
        for la in self.chosen_layers():
            t = pd.DataFrame(la.features)
            columns += [c for c in t.columns if c not in columns and c not in _NOT_CLASSES
                        and not str(c).startswith(_NOT_CLASS_PREFIXES)]
            run = (la.metadata or {}).get("run_dir")
            if run and run not in runs:
                runs.append(run)
        if runs and not self.runs.isModified():
            self.runs.setText(";".join(runs))
        for box, items in ((self.class_source, [*columns, _LABELS_FILE]),
                           (self.groups, [_AUTO, _IMAGES, _NUCLEI, *columns])):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(items)
            # the user's choice stays; "labels file" only when chosen (else the tables' first column)
            if current in items and (current != _LABELS_FILE or self._labels_file_chosen):
                box.setCurrentText(current)
            box.blockSignals(False)
        self._class_source_changed(self.class_source.currentText())

    def _class_source_changed(self, text: str) -> None:
        self.labels_file.setEnabled(text == _LABELS_FILE)

    def _class_source_chosen(self, text: str) -> None:
        self._labels_file_chosen = text == _LABELS_FILE

    def _browse_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels file", "", "Tables (*.csv *.tsv *.parquet)")
        if path:
            self.labels_file.setText(path)
            self.class_source.setCurrentText(_LABELS_FILE)

    def _browse_out(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the classifier")
        if folder:
            self.out.setText(folder)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "A classifier's model folder (model.json)")
        if folder:
            self.load_model(folder)

    # ------------------------------------------------------------------------------------------ workers

    def _start(self, job: Any, what: str, on_result: Any, *args: Any, **kwargs: Any) -> Any:
        worker = create_worker(job, *args, **kwargs, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(on_result)
        worker.errored.connect(lambda exc: self.status.setText(report_error(what, exc)))
        worker.aborted.connect(lambda: self.status.setText("cancelled"))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.train_button.setEnabled(False)
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        worker.start()
        return worker

    def _on_step(self, step: tuple[str, int, int]) -> None:
        text, done, total = step
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.status.setText(f"{text} …")

    def cancel(self) -> None:
        """Stop the running training or prediction at its next step (between images, before saving):
        a cancelled training writes no model folder."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling …")

    def _on_finished(self) -> None:
        self.worker = None
        self.train_button.setEnabled(True)
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setValue(self.progress.maximum() if self.status.text() != "cancelled" else 0)

    # ------------------------------------------------------------------------------------------ training

    def train_config(self) -> TrainConfig:
        """The :class:`~nucleoscope.classify.train.TrainConfig` the controls say."""
        model = self.model.currentText()
        models = tuple(MODEL_KINDS) if model.startswith("linear") else (model,)
        full = self.full_report.isChecked()
        return TrainConfig(models=models, ablation="groups" if full else "none", embed=full)

    def train(self) -> Any:
        """Train on the ticked layers (or the run folders) in a worker thread; returns the worker
        (``None`` on an error, shown as a notification)."""
        if self.worker is not None:
            return self.worker
        try:
            runs: list[str] = []
            chosen: list[Labels] = []
            if self.source.currentText() == "run folders":
                runs = [r.strip() for r in self.runs.text().split(";") if r.strip()]
                if not runs:
                    raise InputError("no run folder: open one with File > Open (a nucleoscope run output folder)")
                if self.class_source.currentText() != _LABELS_FILE:
                    raise InputError("training on run folders takes the classes from a labels file")
                if self.groups.currentText() == _NUCLEI:
                    raise InputError("run folders are validated grouped by image (or by a column of the labels "
                                     "file, named in the labels file); choose auto or images")
            else:
                chosen = self.chosen_layers()
                if not chosen:
                    raise InputError("no Labels layer ticked: segment or open an image and tick its nuclei")
            labels_path = self.labels_file.text().strip() if self.class_source.currentText() == _LABELS_FILE else None
            if self.class_source.currentText() == _LABELS_FILE and not labels_path:
                raise InputError("choose a labels file (ImageName,class or ImageName,ObjectNumber,class)")
            class_column = None if labels_path else self.class_source.currentText()
            out = self.out.text().strip()
            if not out:
                raise InputError("choose a model folder")
            nuclei = [_copy_nuclei(self.viewer, la) for la in chosen]
            config = self.train_config()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Train", exc))
            return None
        self.score.setText("")
        worker = self._start(_train_job, "Train", lambda r, out=out: self._on_trained(out, *r), nuclei, runs,
                             feature_set=self.features.currentText(), class_column=class_column,
                             labels_path=labels_path, group=self.groups.currentText(),
                             keep_flagged=self.keep_flagged.isChecked(), config=config, out=out)
        self.status.setText(f"training {', '.join(config.models)} …")
        return worker

    def _on_trained(self, out: str, info: dict, groups: str, measured: dict[str, pd.DataFrame]) -> None:
        for name, table in measured.items():  # the tables measured for the training join their layers
            if name in self.viewer.layers:
                self.viewer.layers[name].features = table.drop(columns=["ImageName"])
        v = info["validation"]
        lines = []
        for name in [*info["models"], "area_only"]:
            if name not in v:
                continue
            label = "area only (the baseline)" if name == "area_only" else name
            s = f"{label}: balanced accuracy {v[name]['nucleus']['balanced_accuracy']:.3f} per nucleus"
            if v[name].get("image"):
                s += f", {v[name]['image']['balanced_accuracy']:.3f} per image"
            lines.append(s)
        self.score.setText(f"validation ({info['folds']} folds grouped by {groups}, "
                           f"{info['training']['nuclei']} nuclei):\n" + "\n".join(lines) + f"\nchosen: {info['best']}")
        if self.load_model(out) is not None:
            self.status.setText(f"model folder written: {out} (loaded for Predict)")
        self.trained.emit(info)

    def validation_score(self, model: str | None = None, level: str = "nucleus") -> float:
        """The loaded model folder's validation balanced accuracy of ``model`` (default: the chosen one)."""
        if self.info is None:
            raise ValueError("no model loaded")
        return float(self.info["validation"][model or self.info["best"]][level]["balanced_accuracy"])

    # ------------------------------------------------------------------------------------------ predicting

    def load_model(self, folder: str | os.PathLike) -> dict | None:
        """Load a model folder for prediction (``None`` on an error, shown as a notification)."""
        try:
            info = load_model(folder)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Loading the model", exc))
            return None
        self.info, self.model_dir = info, str(folder)
        self.model_folder.setText(str(folder))
        self.predict_model.clear()
        nets = [k for k in info.get("networks", {}) if network_available(k)]
        for name in [*info["loaded"], *nets]:  # networks where their module (and torch) imports
            self.predict_model.addItem(name)
        if self.predict_model.findText(info["best"]) >= 0:
            self.predict_model.setCurrentText(info["best"])
        has_patchnet = self.has_patchnet = "patchnet" in info.get("networks", {}) and patchnet_available()
        self.heatmap_row.setVisible(has_patchnet)
        self.heatmap.setEnabled(has_patchnet)
        self.heatmap.setChecked(has_patchnet)
        self.heatmap_class.blockSignals(True)
        self.heatmap_class.clear()
        self.heatmap_class.addItems(list(info["classes"]))
        self.heatmap_class.blockSignals(False)
        self.status.setText(f"model {Path(folder).name}: classes {', '.join(info['classes'])}")
        return info

    def predict(self) -> Any:
        """Predict the nuclei of the chosen Labels layer in a worker thread; returns the worker (``None`` on
        an error, shown as a notification)."""
        if self.worker is not None:
            return self.worker
        try:
            if self.info is None:
                raise InputError("no model loaded: train one, or load a model folder")
            layer = self.target.layer()
            if layer is None:
                raise InputError("no Labels layer to predict: segment or open an image first")
            name = model_name(self.info, self.predict_model.currentText() or None, self.model_dir)
            if name not in self.info["loaded"] and not network_available(name):
                raise InputError(f"the {name} model needs nucleoscope.classify.{name} (and torch), which do not "
                                 "import here")
            nuclei = _copy_nuclei(self.viewer, layer)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Predict", exc))
            return None
        heat = self.has_patchnet and self.heatmap.isChecked()
        worker = self._start(_predict_job, "Predict", lambda r, n=nuclei: self._on_predicted(n, *r), nuclei,
                             self.info, self.model_dir, name, feature_set=self.features.currentText(), heatmap=heat)
        self.status.setText(f"predicting {layer.name} with {name} …")
        return worker

    def _on_predicted(self, n: _Nuclei, table: pd.DataFrame, pred: pd.DataFrame, maps: np.ndarray | None) -> None:
        layer = n.layer
        if layer not in self.viewer.layers:
            self.status.setText(f"the labels layer {layer.name!r} was closed; result discarded")
            return
        classes = list(self.info["classes"])
        colours = class_colours(classes)
        cols = ["Predicted", *[f"P_{c}" for c in classes]]
        features = table.drop(columns=["ImageName", *[c for c in table.columns if c == "Predicted" or
                                                      c.startswith("P_")]], errors="ignore")
        features = features.merge(pred[["ObjectNumber", *cols]], on="ObjectNumber", how="left")
        layer.features = features  # Predicted and P_<class> join the layer's table
        ids = pred["ObjectNumber"].to_numpy(dtype=np.int64)
        cmap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                               **{int(i): colours[c] for i, c in zip(ids, pred["Predicted"])}})
        out_name = n.name + PREDICTED_SUFFIX
        meta = {"source_image": n.name, "classes": classes, "colours": colours, "model_dir": self.model_dir,
                "spacing_um": n.spacing}
        feats = pred[["ObjectNumber", *cols]].reset_index(drop=True)
        if out_name in self.viewer.layers and isinstance(self.viewer.layers[out_name], Labels):
            out = self.viewer.layers[out_name]
            out.data = n.labels
            out.features, out.metadata = feats, meta
        else:
            out = self.viewer.add_labels(n.labels, name=out_name, features=feats, metadata=meta, scale=layer.scale)
        out.colormap = cmap
        out.opacity = 0.7
        counts = pred["Predicted"].value_counts()
        self.legend.clear()
        for c in classes:
            self.legend.addItem(QListWidgetItem(_swatch(colours[c]), f"{c}: {int(counts.get(c, 0))} nuclei"))
        self.maps = maps
        if maps is not None:
            self._show_heatmap(image_layer_name=n.name, scale=layer.scale)
        self.status.setText(f"{len(pred)} nuclei of {n.name} predicted: " +
                            ", ".join(f"{int(counts.get(c, 0))} {c}" for c in classes))
        self.predicted.emit(out)

    def _show_heatmap(self, *args: Any, image_layer_name: str | None = None, scale: Any = None) -> None:
        """Show the chosen class's heat-map (the last prediction's) as ``"<image> heat-map"``."""
        if self.maps is None or self.info is None:
            return
        k = max(self.heatmap_class.currentIndex(), 0)
        cls = self.info["classes"][k]
        if image_layer_name is None:
            if self._maps_layer is None or self._maps_layer not in self.viewer.layers:
                return
            layer = self._maps_layer
            layer.data = self.maps[k]
        else:
            name = image_layer_name + HEATMAP_SUFFIX
            if name in self.viewer.layers and isinstance(self.viewer.layers[name], Image):
                layer = self.viewer.layers[name]
                layer.data = self.maps[k]
            else:
                layer = self.viewer.add_image(self.maps[k], name=name, colormap="inferno", opacity=0.6,
                                              contrast_limits=(0.0, 1.0), blending="translucent", scale=scale)
            self._maps_layer = layer
        layer.metadata = {**(layer.metadata or {}), "class": cls}
        self.status.setText(f"heat-map: P({cls})")
