"""The Segment widget: ``nucleoscope run``'s analysis of one image layer, off the GUI thread.

The work is :func:`nucleoscope.pipeline.analyze`, the function every image of ``nucleoscope run`` goes
through (segment -> QC -> measure), with the same options; the widget only turns its controls into the
keyword arguments and the result into layers.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..models import DEFAULT_NUSET
from ..pipeline import DEFAULT_TILE_SIZE, AnalysisResult, analyze
from ..qc import QCConfig
from ..segment import METHODS, resolve_method
from ._common import MODELS, LayerChoice, add_result_layers, image_array, layer_spacing, report_error

log = logging.getLogger(__name__)

__all__ = ["SegmentWidget"]


def _spin(low: float, high: float, value: float, step: float, special: str | None = None,
          decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setValue(value)
    if special:
        box.setSpecialValueText(special)  # shown at the minimum, which means "not set"
    return box


class Cancelled(Exception):
    """Raised inside :func:`analyze` (by its progress hook) when the user cancels."""


class _Relay(QObject):
    """Carries :func:`analyze`'s progress from the worker thread to the GUI thread (a queued signal)."""

    step = Signal(int, int, str)


def _analyze_steps(image: np.ndarray, kwargs: dict, on_progress: Any = None):
    """The worker: one :func:`analyze` call, reporting its steps (tiles, QC, measuring) through
    ``on_progress``, which raises :class:`Cancelled` to stop it between two of them."""
    yield "segmenting"
    t0 = time.perf_counter()
    result = analyze(image, **kwargs, on_progress=on_progress)
    yield "done"
    return result, time.perf_counter() - t0


class SegmentWidget(QWidget):
    """Segment the nuclei of an Image layer into the Labels layer ``"<image> nuclei"``.

    Controls: the method (``auto`` is the bundled NuSeT model when torch is installed), the NuSeT model
    (the bundled one, one trained in the Train widget, or a model folder), the nucleus diameter (px,
    ``auto``: estimated), NuSeT's thresholds (``model``: as tuned with the model), the QC margins, the tile
    size for large images, and the measurement set of the table. QC-flagged nuclei are drawn as orange
    outlines in the layer ``"<image> QC flagged"``; the table is the Labels layer's ``features``.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    """

    #: emitted with the nuclei Labels layer when a segmentation has been shown
    finished = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.last_seconds: float | None = None
        self.steps: list[tuple[int, int, str]] = []  # the running analysis's progress reports
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.step.connect(self._on_progress)
        form = QFormLayout()
        self.image = LayerChoice(napari_viewer, Image)
        form.addRow("image", self.image)
        self.method = QComboBox()
        self.method.addItems(["auto", *METHODS])
        form.addRow("method", self.method)
        self.model = QComboBox()
        self.model.addItem(f"{DEFAULT_NUSET} (bundled)", DEFAULT_NUSET)
        for p in MODELS.paths:
            self._add_model(p)
        MODELS.added.connect(self.use_model)
        pick = QPushButton("folder…")
        pick.clicked.connect(self._pick_model)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(pick)
        form.addRow("NuSeT model", row)
        self.diameter = _spin(0, 2000, 0, 1, "auto", decimals=1)
        self.diameter.setSuffix(" px")
        form.addRow("diameter", self.diameter)
        self.prob = _spin(0, 0.99, 0, 0.05, "model")
        self.score = _spin(0, 0.99, 0, 0.05, "model")
        self.nms = _spin(0, 0.99, 0, 0.05, "model")
        form.addRow("probability threshold", self.prob)
        form.addRow("proposal score threshold", self.score)
        form.addRow("overlap (NMS) threshold", self.nms)
        self.edge = QSpinBox()
        self.edge.setRange(0, 10000)
        self.edge.setValue(QCConfig().edge_margin)
        self.edge.setSuffix(" px")
        form.addRow("QC edge margin", self.edge)
        self.max_box = QSpinBox()
        self.max_box.setRange(1, 100000)
        self.max_box.setValue(QCConfig().max_box)
        self.max_box.setSuffix(" px")
        form.addRow("QC largest box", self.max_box)
        self.tile = QSpinBox()
        self.tile.setRange(0, 65536)
        self.tile.setSingleStep(256)
        self.tile.setValue(DEFAULT_TILE_SIZE)
        self.tile.setSpecialValueText("never")
        self.tile.setSuffix(" px")
        form.addRow("tile images over", self.tile)
        self.features = QComboBox()
        self.features.addItems(["shape", "default", "all"])
        form.addRow("measurements", self.features)
        self.method.currentTextChanged.connect(self._method_changed)
        self._method_changed(self.method.currentText())

        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ------------------------------------------------------------------------------------------ models

    def _add_model(self, path: str) -> int:
        i = self.model.findData(path)
        if i < 0:
            self.model.addItem(str(Path(path).parent.name or path), path)
            i = self.model.count() - 1
        return i

    def use_model(self, path: str) -> None:
        """Segment with the NuSeT model ``path`` from now on (called when the Train widget saves one)."""
        self.model.setCurrentIndex(self._add_model(path))
        if self.method.currentText() not in ("auto", "nuset"):
            self.method.setCurrentText("nuset")

    def _pick_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "NuSeT model folder (nuset.safetensors + nuset.json)")
        if folder:
            try:
                MODELS.add(folder)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                self.status.setText(report_error("Choosing the model", exc))

    def _method_changed(self, method: str) -> None:
        nuset = method == "nuset" or (method == "auto" and resolve_method("auto") == "nuset")
        for w in (self.model, self.prob, self.score, self.nms):
            w.setEnabled(nuset)

    # ------------------------------------------------------------------------------------------ running

    def analyze_kwargs(self, layer: Image) -> dict:
        """The keyword arguments of :func:`nucleoscope.pipeline.analyze` that the controls say."""
        method = resolve_method(self.method.currentText())
        options: dict = {}
        if method == "nuset":
            model = self.model.currentData()
            if model != DEFAULT_NUSET:
                options["model"] = model
            for key, box in (("prob_thresh", self.prob), ("score_thresh", self.score), ("nms_thresh", self.nms)):
                if box.value() > box.minimum():
                    options[key] = float(box.value())
        saturation = (layer.metadata or {}).get("saturation")
        return dict(spacing=layer_spacing(layer), saturation=float(saturation) if saturation else None,
                    method=method, feature_set=self.features.currentText(),
                    qc=QCConfig(edge_margin=self.edge.value(), max_box=self.max_box.value()),
                    diameter=self.diameter.value() or None, segment_options=options,
                    tile_size=self.tile.value() or None)

    def run(self) -> Any:
        """Start segmenting the chosen image in a worker thread; returns the worker (``None`` on an error,
        which is shown as a notification)."""
        if self.worker is not None:
            return self.worker
        layer = self.image.layer()
        try:
            if layer is None:
                raise ValueError("no image layer: open an image (File > Open, or File > Open Sample)")
            data = image_array(layer)
            kwargs = self.analyze_kwargs(layer)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Segment", exc))
            return None
        self._stop.clear()
        self.steps = []
        worker = create_worker(_analyze_steps, data, kwargs, self._check_progress, _start_thread=False,
                               _ignore_errors=True)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda r, layer=layer, kw=kwargs: self._on_result(layer, kw, *r))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self.status.setText("cancelled"))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first step is done (one segmenter call reports nothing)
        self.status.setText(f"segmenting {layer.name} ({kwargs['method']}) …")
        worker.start()
        return worker

    def _check_progress(self, done: int, total: int, step: str) -> None:
        """``on_progress`` of :func:`analyze`, in the worker thread: report the step, honour a cancel."""
        self._relay.step.emit(done, total, step)
        if self._stop.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        """Stop the running segmentation at its next step (between tiles, before QC, before measuring);
        nothing is shown."""
        if self.worker is not None:
            self._stop.set()
            self.worker.quit()
            self.status.setText("cancelling …")

    def _on_progress(self, done: int, total: int, step: str) -> None:
        self.steps.append((done, total, step))
        if done == 0:  # a step started, none finished: stay busy
            return
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        if self.worker is not None and not self._stop.is_set():
            self.status.setText(f"{step} …")

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText("cancelled")
        else:
            self.status.setText(report_error("Segment", exc))

    def _on_step(self, step: str) -> None:
        if step == "done":
            self.progress.setRange(0, 1)
            self.progress.setValue(1)

    def _on_result(self, layer: Image, kwargs: dict, result: AnalysisResult, seconds: float) -> None:
        if layer not in self.viewer.layers:
            self.status.setText(f"the image layer {layer.name!r} was closed; result discarded")
            return
        d = result.details
        meta = {"method": kwargs["method"], "diameter_px": float(getattr(d, "diameter_px", np.nan)),
                "model": kwargs["segment_options"].get("model", DEFAULT_NUSET if kwargs["method"] == "nuset"
                                                      else None)}
        nuclei, _ = add_result_layers(self.viewer, layer, result.labels, result.table, meta)
        n = int(len(result.table))
        k = int(result.table["QC_Flagged"].sum()) if n else 0
        self.last_seconds = seconds
        self.status.setText(f"{n} nuclei ({k} QC-flagged, orange), method {kwargs['method']}, "
                            f"diameter {meta['diameter_px']:.1f} px, {seconds:.1f} s")
        log.info("segmented %s: %d nuclei in %.1f s", layer.name, n, seconds)
        self.finished.emit(nuclei)

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
