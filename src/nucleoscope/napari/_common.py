"""What the widgets share: layer pickers that follow the viewer, the image a layer holds, the result
layers of a segmentation, errors as notifications, and the models a session has trained."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox

from .. import InputError

log = logging.getLogger(__name__)

__all__ = ["FLAGGED_SUFFIX", "LABELS_SUFFIX", "LayerChoice", "ModelRegistry", "MODELS", "add_result_layers",
           "image_array", "layer_spacing", "report_error"]

#: the Labels layer of an image ``NAME`` is ``"NAME nuclei"``; its QC-flagged nuclei ``"NAME QC flagged"``
LABELS_SUFFIX = " nuclei"
FLAGGED_SUFFIX = " QC flagged"
#: QC-flagged nuclei are drawn as orange outlines, the colour of the overlays of ``nucleoscope run``
FLAGGED_COLOUR = "orange"


def report_error(what: str, exc: BaseException) -> str:
    """Show ``exc`` as a napari error notification naming ``what`` failed, and return the message.

    An :class:`InputError` already names the file and the problem; other exceptions get their type.
    """
    problem = str(exc) if isinstance(exc, (InputError, ValueError)) else f"{type(exc).__name__}: {exc}"
    message = f"{what} failed: {problem}"
    log.error(message)
    show_error(message)
    return message


class LayerChoice(QComboBox):
    """A combo box of the viewer's layers of one type, kept up to date as layers come, go and are renamed.

    Parameters
    ----------
    viewer : napari.components.ViewerModel
        The viewer (a :class:`napari.Viewer` or, in tests, its model).
    kind : type
        :class:`napari.layers.Image` or :class:`napari.layers.Labels`.
    exclude : tuple of str
        Layers whose names end so are listed but never chosen by default (overlays, results).
    """

    def __init__(self, viewer: Any, kind: type[Layer], parent: Any = None, *,
                 exclude: tuple[str, ...] = (FLAGGED_SUFFIX,)) -> None:
        super().__init__(parent)
        self.viewer, self.kind, self.exclude = viewer, kind, tuple(exclude)
        self._watched: set[int] = set()  # ids of the layers whose renames this box follows
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.moved.connect(self.refresh)
        self.refresh()

    def _layers(self) -> list[Layer]:
        return [la for la in self.viewer.layers if isinstance(la, self.kind)]

    def refresh(self, event: Any = None) -> None:
        """Rebuild the list, keeping the chosen layer when it is still there (else the newest one)."""
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        for la in self._layers():
            self.addItem(la.name)
            if id(la) not in self._watched:  # follow renames
                la.events.name.connect(self.refresh)
                self._watched.add(id(la))
        names = [self.itemText(i) for i in range(self.count())]
        if current in names:
            self.setCurrentIndex(names.index(current))
        elif names:
            self.setCurrentIndex(names.index(self._default(names)))
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def _default(self, names: list[str]) -> str:
        """The active layer when it is of this type, else the newest that is not an overlay (a QC-flagged
        one, or what ``exclude`` names)."""
        active = self.viewer.layers.selection.active
        if isinstance(active, self.kind) and active.name in names and not active.name.endswith(self.exclude):
            return active.name
        plain = [n for n in names if not n.endswith(self.exclude)]
        return (plain or names)[-1]

    def layer(self) -> Layer | None:
        """The chosen layer, or ``None`` when the viewer has none of this type."""
        name = self.currentText()
        return next((la for la in self._layers() if la.name == name), None)

    def choose(self, layer: Layer) -> None:
        """Make ``layer`` the chosen one."""
        i = self.findText(layer.name)
        if i >= 0:
            self.setCurrentIndex(i)


def layer_spacing(layer: Layer) -> float | None:
    """The pixel size (µm) of a layer: its ``metadata["spacing_um"]`` (set by our reader and widgets)."""
    s = (layer.metadata or {}).get("spacing_um")
    return float(s) if s else None


def image_array(layer: Image) -> np.ndarray:
    """The (Y, X) float32 data of an Image layer.

    Raises
    ------
    InputError
        The layer is RGB, multiscale-only data that is not 2D, or has more than two dimensions.
    """
    if layer.rgb:
        raise InputError(f"layer {layer.name!r} is an RGB image; nuclei are segmented on one channel "
                         "(split the channels: right-click the layer > Split RGB)")
    data = layer.data[0] if layer.multiscale else layer.data
    data = np.asarray(data)
    if data.ndim != 2:
        raise InputError(f"layer {layer.name!r} has shape {data.shape}; the widgets work on a 2D (Y, X) image "
                         "(pick one plane: right-click the layer > Split Stack)")
    arr = data.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"layer {layer.name!r} holds NaN or Inf values")
    return arr


def _flagged_colormap() -> DirectLabelColormap:
    return DirectLabelColormap(color_dict={None: FLAGGED_COLOUR, 0: "transparent"})


def _set_layer(viewer: Any, name: str, data: np.ndarray, **kwargs: Any) -> Labels:
    """Replace the data of the Labels layer ``name`` (keeping the user's display settings), or add it."""
    if name in viewer.layers and isinstance(viewer.layers[name], Labels):
        layer = viewer.layers[name]
        layer.data = data
        for k, v in kwargs.items():
            if k in ("features", "metadata", "scale"):
                setattr(layer, k, v)
        return layer
    return viewer.add_labels(data, name=name, **kwargs)


def add_result_layers(viewer: Any, image: Image, labels: np.ndarray, table: pd.DataFrame,
                      metadata: dict | None = None) -> tuple[Labels, Labels]:
    """Show a segmentation of ``image``: the Labels layer ``"<image> nuclei"`` with the table as its
    features, and the QC-flagged nuclei as orange outlines in ``"<image> QC flagged"``.

    Returns
    -------
    (Labels, Labels)
        The nuclei layer and the flagged layer.
    """
    meta = {**(metadata or {}), "source_image": image.name}
    if layer_spacing(image):
        meta["spacing_um"] = layer_spacing(image)
    nuclei = _set_layer(viewer, image.name + LABELS_SUFFIX, labels, features=table, metadata=meta,
                        scale=image.scale)
    flagged_ids = table.loc[table["QC_Flagged"].astype(bool), "ObjectNumber"].to_numpy(dtype=np.int64) \
        if "QC_Flagged" in table else np.zeros(0, np.int64)
    flagged = np.where(np.isin(labels, flagged_ids), labels, 0).astype(np.int32)
    fl = _set_layer(viewer, image.name + FLAGGED_SUFFIX, flagged, metadata={"source_image": image.name},
                    scale=image.scale)
    fl.colormap = _flagged_colormap()
    fl.contour = 2
    fl.opacity = 1.0
    viewer.layers.selection.active = nuclei
    return nuclei, fl


class ModelRegistry(QObject):
    """The NuSeT models a session can segment with: the bundled default and the ones trained (or picked)
    since; :attr:`added` fires with the new model's path so the Segment widgets can switch to it."""

    added = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def add(self, path: str | Path) -> str:
        """Register the model ``path`` (a ``.safetensors`` file or its folder) and announce it."""
        p = Path(path)
        if p.is_dir():
            p = p / "nuset.safetensors"
        if not p.is_file():
            raise InputError("no NuSeT model here (expected nuset.safetensors + nuset.json)", path=p)
        s = str(p)
        if s not in self.paths:
            self.paths.append(s)
        self.added.emit(s)
        return s


#: one registry per process: a model trained in the Train widget is offered to every Segment widget
MODELS = ModelRegistry()
