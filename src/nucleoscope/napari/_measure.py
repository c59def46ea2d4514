"""The Measure widget: the table of a Labels layer, measured again on request, shown sortable and linked
to the nuclei, exported as CSV or Parquet.

Measuring is :func:`nucleoscope.pipeline.measure_labels`, the table :func:`~nucleoscope.pipeline.analyze`
makes (measurements + QC flags), on the labels as they are now (corrected with the brush, say).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..pipeline import measure_labels
from ._common import FLAGGED_SUFFIX, LABELS_SUFFIX, LayerChoice, image_array, layer_spacing, report_error

log = logging.getLogger(__name__)

__all__ = ["MeasureWidget"]

#: columns shown first (the rest follow in the table's order)
_FIRST = ["ObjectNumber", "AreaShape_Area", "Intensity_MeanIntensity", "QC_Flagged"]


class _Item(QTableWidgetItem):
    """A cell that sorts by its number (Qt sorts text by default: "10" < "9")."""

    def __init__(self, value: Any) -> None:
        self.value = value
        if isinstance(value, (bool, np.bool_)):
            text = "yes" if value else ""
        elif isinstance(value, (float, np.floating)):
            text = f"{value:.4g}"
        else:
            text = str(value)
        super().__init__(text)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.value, getattr(other, "value", None)
        try:
            return bool(float(a) < float(b))
        except (TypeError, ValueError):
            return str(a) < str(b)


def _measure_job(image: np.ndarray, labels: np.ndarray, kwargs: dict):
    yield "measuring"
    return measure_labels(image, labels, **kwargs)


class MeasureWidget(QWidget):
    """The nuclei table of a Labels layer.

    Choosing a Labels layer shows its table (the ``features`` that Segment or the reader stored);
    **Measure** measures the labels again with the chosen feature set and the image they were made
    from (after a correction, say), and stores the new table as the layer's features. The table sorts by
    any column (click its header); clicking a row selects that nucleus in the layer and centres the view
    on it. **Export** writes the table as CSV or Parquet (:func:`nucleoscope.io.write_table`).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    """

    finished = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        form = QFormLayout()
        self.labels = LayerChoice(napari_viewer, Labels)
        self.image = LayerChoice(napari_viewer, Image)
        self.features = QComboBox()
        self.features.addItems(["shape", "default", "all"])
        self.features.setCurrentText("default")
        form.addRow("labels", self.labels)
        form.addRow("image", self.image)
        form.addRow("measurements", self.features)
        self.measure_button = QPushButton("Measure")
        self.measure_button.clicked.connect(self.run)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.measure_button)
        buttons.addWidget(self.export_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.cellClicked.connect(self.select_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        self.labels.currentIndexChanged.connect(self._labels_changed)
        self._labels_changed()

    # ------------------------------------------------------------------------------------------ table

    def _labels_changed(self, *args: Any) -> None:
        layer = self.labels.layer()
        if layer is None:
            self.show_table(pd.DataFrame())
            return
        source = (layer.metadata or {}).get("source_image")
        if source and source in self.viewer.layers:
            self.image.choose(self.viewer.layers[source])
        self.show_table(pd.DataFrame(layer.features))

    def current_table(self) -> pd.DataFrame:
        """The chosen Labels layer's table (its ``features``), empty without one."""
        layer = self.labels.layer()
        return pd.DataFrame(layer.features) if layer is not None else pd.DataFrame()

    def show_table(self, df: pd.DataFrame) -> None:
        """Fill the table widget with ``df`` (one row per nucleus)."""
        cols = [c for c in _FIRST if c in df] + [c for c in df.columns if c not in _FIRST]
        self.table.setSortingEnabled(False)
        self.table.clear()
        self.table.setRowCount(len(df))
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        for j, c in enumerate(cols):
            for i, v in enumerate(df[c].to_numpy()):
                self.table.setItem(i, j, _Item(v))
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        if len(df):
            self.status.setText(f"{len(df)} nuclei, {len(cols)} columns")

    def row_object(self, row: int) -> int | None:
        """The ``ObjectNumber`` shown in table row ``row`` (as sorted now)."""
        for j in range(self.table.columnCount()):
            if self.table.horizontalHeaderItem(j).text() == "ObjectNumber":
                item = self.table.item(row, j)
                return int(item.value) if item is not None else None
        return None

    def select_row(self, row: int, column: int = 0) -> None:
        """Select the nucleus of table row ``row`` in its Labels layer and centre the view on it."""
        layer = self.labels.layer()
        obj = self.row_object(row)
        if layer is None or obj is None:
            return
        layer.selected_label = obj
        self.viewer.layers.selection.active = layer
        df = pd.DataFrame(layer.features)
        hit = df[df["ObjectNumber"] == obj] if "ObjectNumber" in df else df.iloc[0:0]
        if len(hit) and {"Location_Center_Y", "Location_Center_X"} <= set(df):
            y, x = float(hit["Location_Center_Y"].iloc[0]), float(hit["Location_Center_X"].iloc[0])
        else:
            ys, xs = np.nonzero(np.asarray(layer.data) == obj)
            if not len(ys):
                return
            y, x = float(ys.mean()), float(xs.mean())
        sy, sx = layer.scale[-2:]
        self.viewer.camera.center = (y * sy, x * sx)

    # ------------------------------------------------------------------------------------------ measuring

    def run(self) -> Any:
        """Measure the chosen labels on the chosen image in a worker thread; returns the worker (``None``
        on an error, shown as a notification)."""
        if self.worker is not None:
            return self.worker
        labels, image = self.labels.layer(), self.image.layer()
        try:
            if labels is None:
                raise ValueError("no Labels layer: segment an image first, or open labels")
            if image is None:
                raise ValueError("no image layer to measure the labels on")
            data = image_array(image)
            lab = np.asarray(labels.data)
            if lab.shape != data.shape:
                raise ValueError(f"labels {labels.name!r} {lab.shape} and image {image.name!r} {data.shape} "
                                 "differ in shape")
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Measure", exc))
            return None
        sat = (image.metadata or {}).get("saturation")
        kwargs = dict(spacing=layer_spacing(image) or layer_spacing(labels), saturation=float(sat) if sat else None,
                      feature_set=self.features.currentText())
        worker = create_worker(_measure_job, data, lab.copy(), kwargs, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda t, layer=labels: self._on_result(layer, t))
        worker.errored.connect(lambda exc: self.status.setText(report_error("Measure", exc)))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.measure_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.status.setText(f"measuring {labels.name} …")
        worker.start()
        return worker

    def _on_result(self, layer: Labels, table: pd.DataFrame) -> None:
        layer.features = table
        name = layer.name[: -len(LABELS_SUFFIX)] if layer.name.endswith(LABELS_SUFFIX) else None
        flagged = self.viewer.layers[name + FLAGGED_SUFFIX] if name and name + FLAGGED_SUFFIX in self.viewer.layers \
            else None
        if flagged is not None:  # the QC outlines follow the corrected labels
            ids = table.loc[table["QC_Flagged"], "ObjectNumber"].to_numpy(dtype=np.int64)
            flagged.data = np.where(np.isin(layer.data, ids), layer.data, 0).astype(np.int32)
        if layer is self.labels.layer():
            self.show_table(table)
        self.finished.emit(table)

    def _on_finished(self) -> None:
        self.worker = None
        self.measure_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    # ------------------------------------------------------------------------------------------ export

    def export(self, path: str) -> str | None:
        """Write the chosen layer's table to ``path`` (``.csv`` or ``.parquet``); ``None`` on an error."""
        from ..io import write_table

        try:
            df = self.current_table()
            if df.empty:
                raise ValueError("no table to export: segment or measure first")
            layer = self.labels.layer()
            source = (layer.metadata or {}).get("source_image")
            if source and "ImageName" not in df:
                df.insert(0, "ImageName", source)
            out = str(write_table(df, path))
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Export", exc))
            return None
        self.status.setText(f"{len(df)} rows written to {out}")
        return out

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the table", "nuclei.csv", "CSV (*.csv);;Parquet (*.parquet)")
        if path:
            self.export(path)
