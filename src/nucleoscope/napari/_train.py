"""The Train widget: fine-tune the bundled NuSeT model on the user's image + corrected Labels layers.

The machinery is ``nucleoscope train-segmenter --init nuset_v5``'s: :func:`~nucleoscope.segment.nuset.weights.load_nuset`
for the model to start from, :func:`~nucleoscope.segment.nuset.trainset.prepare_training_set` for the
pairs, :func:`~nucleoscope.segment.nuset.train.train_nuset` for the loop (its ``on_step`` hook draws the
loss curve live), and the model folder it writes (``nuset.safetensors`` + ``nuset.json``, ``log.csv``,
``curves.png``) is offered to the Segment widgets at once.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                            QListWidget, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .. import InputError
from ..models import DEFAULT_NUSET
from ._common import MODELS, LayerChoice, image_array, report_error

log = logging.getLogger(__name__)

__all__ = ["TrainWidget", "finetune"]


class Cancelled(Exception):
    """Raised inside the training loop when the user cancels."""


class _Relay(QObject):
    """Carries each step's loss from the training thread to the GUI thread (a queued signal)."""

    step = Signal(int, float)


def finetune(pairs: list[tuple[np.ndarray, np.ndarray, str]], out_dir: str | Path, *, steps: int = 30,
             batch: int = 4, crop: int = 256, lr: float = 5e-4, init: str = DEFAULT_NUSET, seed: int = 0,
             on_step: Any = None) -> dict:
    """Fine-tune the NuSeT model ``init`` on ``(image, labels, name)`` pairs for ``steps`` steps.

    What ``nucleoscope train-segmenter --init INIT --steps STEPS --synthetic-ratio 0`` does on a data set
    of these pairs, without validation images: the weights after the last step are saved, with the
    thresholds ``init`` was tuned with.

    Parameters
    ----------
    pairs : list of (image, labels, name)
        (Y, X) raw intensities and their (corrected) int labels, 0 = background.
    out_dir : str or Path
        The model folder to write.
    steps, batch, crop, lr, seed
        As ``train-segmenter``'s ``--steps``, ``--batch``, ``--crop``, ``--lr``, ``--seed``.
    init : str
        The model to start from: a bundled name or a ``.safetensors`` path.
    on_step : callable, optional
        ``on_step(step, losses)`` after every step (in the calling thread); raising stops the training.

    Returns
    -------
    dict
        The model's metadata (``nuset.json``).

    Raises
    ------
    InputError
        No pair holds a nucleus.
    """
    from ..io import LabelledImage
    from ..report import write_training_curves
    from ..segment.nuset.infer import Thresholds
    from ..segment.nuset.train import TrainConfig, train_nuset
    from ..segment.nuset.trainset import prepare_training_set
    from ..segment.nuset.weights import load_nuset

    net, meta = load_nuset(init)
    items = [LabelledImage(np.asarray(i, np.float32), np.asarray(lab).astype(np.int32), n, "napari")
             for i, lab, n in pairs]
    samples, _, _ = prepare_training_set(items, [], [], model_diameter=net.config.diameter)
    if not samples:
        raise InputError("no nuclei in the training labels: segment the image and correct it first")
    config = TrainConfig(steps=steps, batch=batch, crop=crop, lr=lr, eval_every=steps, seed=seed,
                         max_minutes=60.0)
    th = Thresholds(**meta["thresholds"]) if meta.get("thresholds") else None
    record = {"data": {"napari": [n for _, _, n in pairs]}, "command": "napari: nucleoscope Train widget",
              "init": {"model": str(init), "sha256": meta.get("sha256")}}
    return train_nuset(samples, out_dir=out_dir, model_config=net.config, config=config, synthetic_ratio=0.0,
                       device="cpu", tune=False, meta=record, on_step=on_step, init=net,
                       plot_curves=write_training_curves, thresholds=th)


def _default_folder() -> str:
    return str(Path.home() / "nucleoscope-models" / time.strftime("nuset-finetuned-%Y%m%d-%H%M%S"))


class TrainWidget(QWidget):
    """Fine-tune the bundled NuSeT model on image + corrected Labels pairs, with a live loss curve.

    Pick an image and its corrected labels (**Add pair** for more than one), the number of steps and the
    model folder, and press **Train**. When it ends the folder holds the model, and every Segment widget
    switches to it, so the next image is segmented with the fine-tuned model.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Injected by napari.
    """

    finished = Signal(str)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.losses: list[float] = []
        self.model_path: str | None = None
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.step.connect(self._on_step)
        form = QFormLayout()
        self.image = LayerChoice(napari_viewer, Image)
        self.labels = LayerChoice(napari_viewer, Labels)
        form.addRow("image", self.image)
        form.addRow("corrected labels", self.labels)
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(70)
        add = QPushButton("Add pair")
        add.clicked.connect(self.add_pair)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.pairs.clear)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(clear)
        form.addRow("pairs", self.pairs)
        form.addRow("", row)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(30)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(4)
        self.crop = QSpinBox()
        self.crop.setRange(64, 1024)
        self.crop.setSingleStep(16)
        self.crop.setValue(256)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1e-1)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(5e-4)
        form.addRow("steps", self.steps)
        form.addRow("batch", self.batch)
        form.addRow("crop (px)", self.crop)
        form.addRow("learning rate", self.lr)
        self.folder = QLineEdit(_default_folder())
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        frow = QHBoxLayout()
        frow.addWidget(self.folder, 1)
        frow.addWidget(browse)
        form.addRow("model folder", frow)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, layout="constrained")
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(150)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.canvas, 1)
        self._draw()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the fine-tuned model")
        if folder:
            self.folder.setText(folder)

    def add_pair(self) -> None:
        """Add the chosen image + labels to the training pairs."""
        im, lab = self.image.layer(), self.labels.layer()
        if im is not None and lab is not None:
            self.pairs.addItem(f"{im.name}  +  {lab.name}")

    def _pairs(self) -> list[tuple[np.ndarray, np.ndarray, str]]:
        texts = [self.pairs.item(i).text() for i in range(self.pairs.count())]
        if not texts:
            im, lab = self.image.layer(), self.labels.layer()
            if im is None or lab is None:
                raise ValueError("pick an image and its corrected Labels layer")
            texts = [f"{im.name}  +  {lab.name}"]
        out = []
        for t in texts:
            iname, lname = t.split("  +  ")
            if iname not in self.viewer.layers or lname not in self.viewer.layers:
                raise ValueError(f"the layers of the pair {t!r} are not open any more")
            image = image_array(self.viewer.layers[iname])
            labels = np.asarray(self.viewer.layers[lname].data)
            if labels.shape != image.shape:
                raise ValueError(f"labels {lname!r} {labels.shape} and image {iname!r} {image.shape} differ in shape")
            out.append((image, labels.copy(), iname))
        return out

    def _check_step(self, step: int, losses: dict) -> None:
        """``on_step`` of the loop, in the training thread: report the loss, honour a cancel."""
        self._relay.step.emit(step, float(losses.get("loss", np.nan)))
        if self._stop.is_set():
            raise Cancelled()

    def run(self) -> Any:
        """Start fine-tuning in a worker thread; returns the worker (``None`` on an error, shown as a
        notification)."""
        if self.worker is not None:
            return self.worker
        try:
            pairs = self._pairs()
            folder = self.folder.text().strip()
            if not folder:
                raise ValueError("give a model folder")
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.status.setText(report_error("Train", exc))
            return None
        self._stop.clear()
        self.losses = []
        self._draw()
        steps = self.steps.value()
        worker = create_worker(finetune, pairs, folder, steps=steps, batch=self.batch.value(), crop=self.crop.value(),
                               lr=self.lr.value(), on_step=self._check_step, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(lambda meta, f=folder: self._on_result(f, meta))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"fine-tuning {DEFAULT_NUSET} on {len(pairs)} image(s) for {steps} steps …")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop after the current step; no model is saved."""
        self._stop.set()
        self.status.setText("cancelling …")

    def _on_step(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        self.progress.setValue(step)
        self._draw()

    def _draw(self) -> None:
        ax = self.axes
        ax.clear()
        if self.losses:
            ax.plot(np.arange(1, len(self.losses) + 1), self.losses, color="tab:blue", lw=1.2)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.status.setText(f"cancelled after {len(self.losses)} steps; no model saved")
        else:
            self.status.setText(report_error("Train", exc))

    def _on_result(self, folder: str, meta: dict) -> None:
        self.model_path = MODELS.add(folder)
        t = meta.get("training", {})
        self.status.setText(f"model saved to {folder} ({t.get('steps')} steps, {t.get('wall_time_s')} s, last loss "
                            f"{self.losses[-1]:.3f}); the Segment widget now uses it")
        self.folder.setText(_default_folder())
        self.finished.emit(self.model_path)

    def _on_finished(self) -> None:
        self.worker = None
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
