"""PatchNet (SCENMED, SPEC §8): a small CNN that classifies patches inside a nucleus; its decisions are
averaged per nucleus and per image, and, because it is fully convolutional, slid over a nucleus it draws a
global heat-map (the class probability of the patch centred on each pixel) and per-filter heat-maps (the
last convolution's activations).

The network has no padding: ``(P - 1) // 2`` convolutions 3x3 (plus one 2x2 when ``P`` is even) shrink a
``P x P`` patch to one pixel, where two 1x1 convolutions (the fully connected layers, ReLU and dropout)
give the class logits. Trained on patches (SCENMED: 11 px for NIH/3T3 vs BJ, 17 px for BJ vs MCF10A), it
is applied unchanged to a whole crop, so every pixel's value is exactly the decision on its patch.

Intensities are mapped as the crop CNN's (background 0, the nucleus's mean 1) with the level of the
patch's own nucleus (``reference``, :func:`nucleus_reference` of its crop); without it each patch is
divided by its own mean, which keeps contrast but loses the patch's brightness relative to its nucleus.
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
    image_reference,
    nucleus_reference,
    one_thread,
    predict_logits,
    softmax,
)

__all__ = ["PatchNetClassifier", "PatchConvNet", "PATCHNET_FORMAT"]

PATCHNET_FORMAT = "nucleoscope-patchnet"


class PatchConvNet(nn.Module):
    """Fully convolutional patch classifier: (B, 1, H, W) -> (B, K, H - P + 1, W - P + 1) logits.

    Parameters
    ----------
    n_classes : int
    patch_size : int
        Receptive field ``P`` (>= 3).
    width : int
        Filters of the first half of the convolutions; the second half has twice as many.
    hidden : int
        Units of the first 1x1 (fully connected) layer.
    dropout : float
    """

    def __init__(self, n_classes: int, *, patch_size: int = 17, width: int = 16, hidden: int = 64,
                 dropout: float = 0.3):
        super().__init__()
        if patch_size < 3:
            raise InputError(f"PatchNet's patch size must be >= 3 px, got {patch_size}")
        n3 = (patch_size - 1) // 2
        self.input_norm = nn.BatchNorm2d(1)
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(n3):
            c_out = width if i < (n3 + 1) // 2 else 2 * width
            layers += [nn.Conv2d(c_in, c_out, 3), nn.PReLU(c_out)]
            c_in = c_out
        if (patch_size - 1) % 2:
            layers += [nn.Conv2d(c_in, c_in, 2), nn.PReLU(c_in)]
        self.body = nn.Sequential(*layers)
        self.filters = c_in
        self.head = nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Conv2d(hidden, n_classes, 1))
        self.patch_size = patch_size
        he_init(self)

    def filter_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's activations (B, filters, H - P + 1, W - P + 1)."""
        return self.body(self.input_norm(x))

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.filter_maps(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, P, P) patches -> (B, K) logits."""
        z = self.dense(x)
        if z.shape[-2:] != (1, 1):
            raise InputError(f"PatchNet takes {self.patch_size} px patches here, got {tuple(x.shape[-2:])} "
                             "(use heatmap for larger windows)")
        return z[:, :, 0, 0]


class PatchNetClassifier(NetClassifier):
    """PatchNet with the scikit-learn conventions.

    Parameters
    ----------
    patch_size : int
        SCENMED: 11 or 17.
    width, hidden : int
    dropout : float
    lr : float
        Adam learning rate.
    batch_size : int
        SCENMED: 128 for patches.
    max_epochs, patience : int
    time_limit_s : float, optional
    augment : bool
        Random rotations/flips.
    crop_size : int
        Window cut around each nucleus by :meth:`image_heatmap`.
    normalize : {"image", "nucleus"}
        Level patches are divided by (as the crop CNN's): the median nucleus of the image or their own
        nucleus. ``classify train`` passes it as ``reference``; :meth:`image_heatmap` applies it.
    checkpoint_dir : path, optional
    random_state : int
    show_progress : bool
    """

    FORMAT = PATCHNET_FORMAT
    NAME = "PatchNet"

    def __init__(self, *, patch_size: int = 17, width: int = 16, hidden: int = 64, dropout: float = 0.3,
                 lr: float = 1e-3, batch_size: int = 128, max_epochs: int = 60, patience: int = 20,
                 time_limit_s: float | None = None, augment: bool = True, crop_size: int = 128,
                 normalize: str = "image",
                 checkpoint_dir: str | os.PathLike | None = None, random_state: int = 0, show_progress: bool = False):
        self.patch_size, self.width, self.hidden, self.dropout = int(patch_size), int(width), int(hidden), float(dropout)
        self.lr, self.batch_size, self.max_epochs, self.patience = float(lr), int(batch_size), int(max_epochs), int(patience)
        self.time_limit_s, self.augment, self.crop_size = time_limit_s, bool(augment), int(crop_size)
        self.normalize = check_normalize(normalize)
        self.checkpoint_dir, self.random_state, self.show_progress = checkpoint_dir, int(random_state), show_progress
        self.net_: PatchConvNet | None = None
        self.classes_: np.ndarray | None = None
        self.history_: list[dict] = []
        self.fit_info_: dict = {}
        self.filter_scores_: np.ndarray | None = None

    def _settings(self) -> dict:
        return {"patch_size": self.patch_size, "width": self.width, "hidden": self.hidden, "dropout": self.dropout,
                "lr": self.lr, "batch_size": self.batch_size, "max_epochs": self.max_epochs,
                "patience": self.patience, "time_limit_s": self.time_limit_s, "augment": self.augment,
                "crop_size": self.crop_size, "normalize": self.normalize, "random_state": self.random_state}

    def _new_net(self, k: int) -> PatchConvNet:
        torch.manual_seed(self.random_state)
        return PatchConvNet(k, patch_size=self.patch_size, width=self.width, hidden=self.hidden, dropout=self.dropout)

    def _inputs(self, patches: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        patches = np.asarray(patches, np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (self.patch_size, self.patch_size):
            raise InputError(f"patches must be (N, {self.patch_size}, {self.patch_size}), got {patches.shape}")
        if reference is None:
            reference = np.stack([np.zeros(len(patches), np.float32), patches.reshape(len(patches), -1).mean(1)], 1)
        reference = np.asarray(reference, np.float32)
        if reference.shape != (len(patches), 2):
            raise InputError(f"reference must be (N, 2) (background, nucleus level), got {reference.shape}")
        return apply_reference(patches, reference)[:, None]

    # -- estimator --------------------------------------------------------------------------------------
    def fit(self, patches: np.ndarray, y, *, reference: np.ndarray | None = None, val_patches: np.ndarray | None = None,
            val_y=None, val_reference: np.ndarray | None = None, classes=None) -> PatchNetClassifier:
        """Train on patches, each labelled with its nucleus's class.

        Parameters
        ----------
        patches : (N, P, P) float ndarray
            Raw intensities.
        y : (N,) array
        reference : (N, 2) float ndarray, optional
            Background and nucleus level of each patch's nucleus (:func:`nucleus_reference` of its crop).
        val_patches, val_y, val_reference : optional
            Held-out patches for early stopping.
        classes : array, optional
            Every class (default: those in ``y``).
        """
        yi = self._set_classes(np.asarray(y), classes)
        x = self._inputs(patches, reference)
        xv = None
        if val_patches is not None and val_y is not None and len(val_y):
            xv = self._inputs(val_patches, val_reference)
        self._train(x, yi, xv, val_y, patches)
        self.filter_scores_ = self._filter_scores(x, yi)
        return self

    def _filter_scores(self, x: np.ndarray, yi: np.ndarray, n_max: int = 20000) -> np.ndarray:
        """(K, filters): how much each filter's activation is higher on patches of class k than on the
        others, in pooled standard deviations (Cohen's d): the filters that mark a class."""
        net = self._check_fitted()
        sel = np.random.default_rng(self.random_state).permutation(len(x))[:n_max]
        with torch.inference_mode(), one_thread():
            net.eval()
            a = np.concatenate([net.filter_maps(torch.from_numpy(x[sel[s : s + 1024]]))[:, :, 0, 0].numpy()
                                for s in range(0, len(sel), 1024)])
        yk = yi[sel]
        out = np.zeros((len(self.classes_), a.shape[1]))
        for k in range(len(self.classes_)):
            i, o = a[yk == k], a[yk != k]
            if len(i) > 1 and len(o) > 1:
                sd = np.sqrt((i.var(0, ddof=1) + o.var(0, ddof=1)) / 2) + 1e-9
                out[k] = (i.mean(0) - o.mean(0)) / sd
        return out

    def predict_proba(self, patches: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
        """(N, K) class probabilities of each patch, columns in ``classes_`` order."""
        return softmax(predict_logits(self._check_fitted(), self._inputs(patches, reference), 1024))

    @staticmethod
    def aggregate(proba: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean probability over the patches of each group (nucleus or image): (groups (G,), (G, K))."""
        groups = np.asarray(groups)
        u, inv = np.unique(groups, return_inverse=True)
        sums = np.zeros((len(u), proba.shape[1]))
        np.add.at(sums, inv, proba)
        return u, sums / np.bincount(inv, minlength=len(u))[:, None]

    # -- heat-maps ------------------------------------------------------------------------------------
    def _dense(self, crop: np.ndarray, mask: np.ndarray | None, fn: str, reference=None) -> np.ndarray:
        net = self._check_fitted()
        crop = np.asarray(crop, np.float32)
        if crop.ndim != 2 or min(crop.shape) < self.patch_size:
            raise InputError(f"a heat-map needs a 2-D window of at least {self.patch_size} px, got {crop.shape}")
        m = np.ones(crop.shape, bool) if mask is None else np.asarray(mask, bool)
        ref = nucleus_reference(crop[None], m[None]) if reference is None else np.asarray(reference, np.float32)[None]
        x = apply_reference(crop[None], ref)[:, None]
        with torch.inference_mode(), one_thread():
            net.eval()
            t = torch.from_numpy(x)
            z = (torch.softmax(net.dense(t), dim=1) if fn == "proba" else net.filter_maps(t))[0].numpy()
        h = self.patch_size // 2
        out = np.full((z.shape[0], *crop.shape), np.nan, np.float32)
        out[:, h : h + z.shape[1], h : h + z.shape[2]] = z
        if mask is not None:
            out[:, ~m] = np.nan
        return out

    def heatmap(self, crop: np.ndarray, mask: np.ndarray | None = None, reference=None) -> np.ndarray:
        """Global heat-map of one nucleus crop.

        Parameters
        ----------
        crop : (S, S) float ndarray
        mask : (S, S) bool ndarray, optional
            The nucleus (its level normalises the crop; pixels outside it are NaN).
        reference : (2,) float, optional
            Background and level (default: the crop's own nucleus).

        Returns
        -------
        (K, S, S) float32 ndarray
            Probability of each class for the patch centred on each pixel; NaN within ``P // 2`` of the
            border and outside ``mask``.
        """
        return self._dense(crop, mask, "proba", reference)

    def filter_maps(self, crop: np.ndarray, mask: np.ndarray | None = None, reference=None) -> np.ndarray:
        """(filters, S, S) activations of the last convolution for the patch centred on each pixel (NaN as
        :meth:`heatmap`); :attr:`filter_scores_` says which filters mark which class."""
        return self._dense(crop, mask, "filters", reference)

    def top_filters(self, cls, n: int = 4) -> np.ndarray:
        """Indices of the ``n`` filters most indicative of class ``cls`` (highest Cohen's d)."""
        k = int(np.searchsorted(self.classes_, cls))
        if k >= len(self.classes_) or str(self.classes_[k]) != str(cls) or self.filter_scores_ is None:
            raise InputError(f"unknown class {cls!r} (classes: {list(self.classes_)})")
        return np.argsort(self.filter_scores_[k])[::-1][:n]

    def image_heatmap(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Global heat-map of every nucleus of an image.

        Parameters
        ----------
        image : (Y, X) float ndarray
        labels : (Y, X) int ndarray, 0 = background

        Returns
        -------
        (K, Y, X) float32 ndarray
            Class probabilities at nucleus pixels (intensities mapped as in training, ``normalize``),
            NaN elsewhere.
        """
        from ..features import nucleus_crops

        image = np.asarray(image, np.float32)
        labels = np.asarray(labels)
        self._check_fitted()
        out = np.full((len(self.classes_), *image.shape), np.nan, np.float32)
        c = nucleus_crops(image, labels, size=self.crop_size)
        ref = nucleus_reference(c.images, c.masks)
        if self.normalize == "image":
            ref = image_reference(ref, np.zeros(len(ref), int))
        for img, m, (y0, x0), r in zip(c.images, c.masks, c.origins, ref):
            hm = self.heatmap(img, m, reference=r)
            ys, xs = np.nonzero(m)
            out[:, ys + y0, xs + x0] = hm[:, ys, xs]
        return out

    # -- files ----------------------------------------------------------------------------------------
    def _extra_meta(self) -> dict:
        return {"filter_scores": None if self.filter_scores_ is None else self.filter_scores_.round(5).tolist()}

    def _restore(self, meta: dict) -> None:
        fs = meta.get("filter_scores")
        self.filter_scores_ = None if fs is None else np.asarray(fs, np.float64)
