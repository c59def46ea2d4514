"""SCENMED's VGG-style CNN on nucleus crops (SPEC §8), as a scikit-learn-style classifier.

The network: batch norm on the input, 10 convolutions 3x3 with PReLU in five blocks of two, a 2x2 max
pool after each of the first four blocks, filters ``width`` doubling after each pool (SCENMED: 32), two
fully connected layers (ReLU, dropout) and a softmax; He initialisation; class-weighted cross-entropy,
Adam, early stopping with patience 20. Departures from SCENMED, each measured on synthetic crops
(docs/classify.md): batch norm after every convolution, global average pooling before the fully
connected layers (the flattened map left the small-data trainings stuck at chance), dropout 0.2 and
Adam at 3e-4 (8e-5 was too slow for a CPU budget, 1e-3 unstable).

The input is two channels: the crop's intensities mapped so that the background is 0 and the reference
level 1 (``normalize``), zeroed outside the nucleus with ``use_mask``, and the nucleus mask itself (its
shape and size, at the crop's pixel scale). Crops are resized to ``input_size`` (area averaging) so a
128 px crop trains at 64 px on a CPU. Training augments with the 8 rotations/flips: a nucleus has no
orientation.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .._errors import InputError
from ._net import (
    NetClassifier,
    apply_reference,
    check_normalize,
    he_init,
    nucleus_reference,
    one_thread,
    predict_logits,
    softmax,
)

__all__ = ["CNNClassifier", "VGGNet", "CNN_FORMAT"]

CNN_FORMAT = "nucleoscope-crop-cnn"


class VGGNet(nn.Module):
    """(B, C, S, S) -> (B, K) logits; S a multiple of 16.

    Parameters
    ----------
    n_classes : int
    width : int
        Filters of the first block (SCENMED: 32), doubling after each of the 4 pools.
    input_size : int
    in_channels : int
    hidden : int
        Units of the first fully connected layer (the embedding).
    dropout : float
    """

    def __init__(self, n_classes: int, *, width: int = 32, input_size: int = 64, in_channels: int = 2,
                 hidden: int = 128, dropout: float = 0.5, block_norm: bool = True, pool: str = "average"):
        super().__init__()
        if input_size % 16:
            raise InputError(f"the CNN's input size must be a multiple of 16 (4 pools), got {input_size}")
        self.input_norm = nn.BatchNorm2d(in_channels)
        layers: list[nn.Module] = []
        c_in = in_channels
        for b in range(5):
            c_out = width * 2 ** min(b, 4)
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not block_norm)]
                layers += [nn.BatchNorm2d(c_out)] if block_norm else []
                layers.append(nn.PReLU(c_out))
                c_in = c_out
            if b < 4:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        if pool not in ("average", "flatten"):
            raise InputError(f"pool must be average or flatten, got {pool!r}")
        side = input_size // 16 if pool == "flatten" else 1
        gather = [nn.Flatten()] if pool == "flatten" else [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.fc1 = nn.Sequential(*gather, nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        he_init(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The first fully connected layer's activations (B, hidden)."""
        return self.fc1(self.features(self.input_norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.embed(x))


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) -> (N, size, size) by area averaging (down) or bilinear (up)."""
    if x.shape[-1] == size:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
    mode = "area" if x.shape[-1] > size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return nn.functional.interpolate(t, size=(size, size), mode=mode, **kw)[:, 0].numpy()


class CNNClassifier(NetClassifier):
    """Crop CNN with the scikit-learn conventions (``fit``, ``predict_proba``, ``classes_``).

    Parameters
    ----------
    width : int
        First block's filters. SCENMED: 32; default 8, measured in docs/benchmarks.md (``classify``),
        which keeps a training within minutes on a laptop CPU.
    input_size : int
        Side the crops are resized to (multiple of 16).
    hidden : int
        Units of the fully connected layers.
    dropout : float
    lr : float
        Adam learning rate (SCENMED: 8e-5).
    pool : {"average", "flatten"}
        Global average pooling before the fully connected layers, or SCENMED's flattened map.
    batch_size : int
        SCENMED: 32.
    max_epochs, patience : int
        Early stopping after ``patience`` epochs without a lower validation loss (SCENMED: 20).
    time_limit_s : float, optional
        Stop a training after this many seconds (the best weights so far are kept).
    use_mask : bool
        Zero the pixels outside the nucleus (neighbours and background cannot be learned).
    normalize : {"image", "nucleus"}
        Intensity level crops are divided by: the median nucleus of their image (keeps each nucleus's
        brightness relative to its neighbours; ``classify train`` passes it as ``reference``) or the
        crop's own nucleus. Without a ``reference`` the own nucleus is used.
    augment : bool
        Random rotations/flips.
    checkpoint_dir : path, optional
        Save the training after every epoch; a training with the same settings and data resumes there.
    random_state : int
    show_progress : bool
    """

    FORMAT = CNN_FORMAT
    NAME = "CNN"

    def __init__(self, *, width: int = 8, input_size: int = 64, hidden: int = 128, dropout: float = 0.5,
                 lr: float = 3e-4, batch_size: int = 32, max_epochs: int = 100, patience: int = 20,
                 time_limit_s: float | None = None, use_mask: bool = True, augment: bool = True,
                 normalize: str = "image", pool: str = "average",
                 checkpoint_dir: str | os.PathLike | None = None, random_state: int = 0, show_progress: bool = False):
        self.width, self.input_size, self.hidden, self.dropout = int(width), int(input_size), int(hidden), float(dropout)
        self.lr, self.batch_size, self.max_epochs, self.patience = float(lr), int(batch_size), int(max_epochs), int(patience)
        self.time_limit_s = time_limit_s
        self.use_mask, self.augment = bool(use_mask), bool(augment)
        self.normalize = check_normalize(normalize)
        self.pool = pool
        self.checkpoint_dir, self.random_state, self.show_progress = checkpoint_dir, int(random_state), show_progress
        self.net_: VGGNet | None = None
        self.classes_: np.ndarray | None = None
        self.history_: list[dict] = []
        self.fit_info_: dict = {}

    # -- inputs ---------------------------------------------------------------------------------------
    def _inputs(self, images: np.ndarray, masks: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray:
        """(N, S, S) crops + masks -> (N, 2, input_size, input_size) float32 network input."""
        images = np.asarray(images, np.float32)
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise InputError(f"crops must be (N, S, S), got {images.shape}")
        if masks is None:
            masks = np.ones(images.shape, bool)
        masks = np.asarray(masks, bool)
        if masks.shape != images.shape:
            raise InputError(f"masks {masks.shape} do not match crops {images.shape}")
        ref = nucleus_reference(images, masks) if reference is None else np.asarray(reference, np.float32)
        if ref.shape != (len(images), 2):
            raise InputError(f"reference must be (N, 2) (background, level), got {ref.shape}")
        x = apply_reference(images, ref)
        if self.use_mask:
            x = np.where(masks, x, 0.0).astype(np.float32)
        return np.stack([_resize(x, self.input_size), _resize(masks.astype(np.float32), self.input_size)], axis=1)

    def _new_net(self, k: int) -> VGGNet:
        torch.manual_seed(self.random_state)
        return VGGNet(k, width=self.width, input_size=self.input_size, hidden=self.hidden, dropout=self.dropout,
                      pool=self.pool)

    def _settings(self) -> dict:
        return {"width": self.width, "input_size": self.input_size, "hidden": self.hidden, "dropout": self.dropout,
                "lr": self.lr, "batch_size": self.batch_size, "max_epochs": self.max_epochs,
                "patience": self.patience, "time_limit_s": self.time_limit_s, "use_mask": self.use_mask,
                "augment": self.augment, "normalize": self.normalize, "pool": self.pool,
                "random_state": self.random_state}

    # -- estimator --------------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, y, *, masks: np.ndarray | None = None, val_images: np.ndarray | None = None,
            val_y=None, val_masks: np.ndarray | None = None, classes=None, reference: np.ndarray | None = None,
            val_reference: np.ndarray | None = None) -> CNNClassifier:
        """Train on crops.

        Parameters
        ----------
        images : (N, S, S) float ndarray
            Nucleus crops (raw intensities; normalised here).
        y : (N,) array
            Class of each crop (any labels; ``classes_`` is their sorted set).
        masks : (N, S, S) bool ndarray, optional
            Each crop's nucleus (default: the whole crop).
        val_images, val_y, val_masks : optional
            Held-out crops for early stopping; ``val_y`` in the same labels as ``y``.
        classes : array, optional
            Every class (default: those in ``y``), so a fold missing one keeps the columns aligned.
        reference, val_reference : (N, 2) float ndarray, optional
            Background and level each crop is mapped to 0 and 1 (default: its own nucleus's).
        """
        yi = self._set_classes(np.asarray(y), classes)
        x = self._inputs(images, masks, reference)
        xv = None
        if val_images is not None and val_y is not None and len(val_y):
            xv = self._inputs(val_images, val_masks, val_reference)
        self._train(x, yi, xv, val_y, images)
        return self

    def predict_proba(self, images: np.ndarray, *, masks: np.ndarray | None = None,
                      reference: np.ndarray | None = None) -> np.ndarray:
        """(N, K) class probabilities, columns in ``classes_`` order."""
        net = self._check_fitted()
        return softmax(predict_logits(net, self._inputs(images, masks, reference)))

    def predict(self, images: np.ndarray, *, masks: np.ndarray | None = None,
                reference: np.ndarray | None = None) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(images, masks=masks, reference=reference), axis=1)]

    def embed(self, images: np.ndarray, *, masks: np.ndarray | None = None,
              reference: np.ndarray | None = None) -> np.ndarray:
        """(N, hidden) activations of the first fully connected layer (for t-SNE)."""
        net = self._check_fitted()
        x = self._inputs(images, masks, reference)
        net.eval()
        with torch.inference_mode(), one_thread():
            return np.concatenate([net.embed(torch.from_numpy(x[s : s + 256])).numpy()
                                   for s in range(0, len(x), 256)]) if len(x) else np.zeros((0, self.hidden))
