"""The whole-cell paper's self-supervised patch network (SPEC §5): cells learned from nuclear markers
with no labels.

Around every marker (a nucleus centroid) a ``k x k`` patch of the cell channel is cut, with a second
channel holding a Gaussian disk (sigma 15 px) at the marker, which tells the translation-equivariant
network *which* cell of the patch is meant. A small U-Net maps each patch to one cell-probability map
``y_i``; it is trained, per field or in advance, by minimising over all pixels ``p`` and patches ``i``
(``y_i`` zero outside its patch)::

    L = - sum_p sum_i y_i(p)
        - lambda sum_p sum_{i != j} y_i(p) log10(1 - y_j(p))
        + beta   sum_p sum_i y_i(p) (1 - M(p))

an area term, a cross-patch consistency term (with ``lambda = 1 / log10 2 = 3.32`` a pixel claimed by
another patch at probability 0.5 cancels the area gain) and a penalty for cell pixels outside the
foreground mask ``M`` (the graph cut, :mod:`.foreground`). The sum is divided by the number of patch
pixels in the batch so the learning rate does not depend on how many cells a batch holds. Integration:
each pixel goes to the patch with the highest probability there, background where all are below 0.5.

Scale: the paper's 64 px patches are "bigger than a single cell". Fields are therefore worked at a
scale where the median nucleus is :attr:`SelfSupConfig.nucleus_diameter` px across (10 px: cells of
2-4 nucleus diameters are then 20-40 px (U2OS at 20x: median 25, largest about 65) and fit a 64 px patch with their neighbours' edges), so one
set of weights serves any magnification; the probabilities are sampled back to full resolution for the
integration.

Deviations from the paper, and why:

* Batches are the patches whose markers lie in one random ``area x area`` window (default 256 px at the
  working scale, about 50 cells) instead of 640 x 640 px at the paper's scale (about 100 cells): the same
  neighbourhoods, in CPU-sized steps. Windows are drawn at random each step, so a patch at a window's
  edge, which misses some neighbours there, sees them in other steps.
* The U-Net is small (widths 12-24-48, batch norm) so that fine-tuning on one field fits minutes on a CPU.
* Weights pretrained on synthetic fields are shipped (``cells_selfsup_v1``); a field is segmented with
  them as they are (the paper's transfer result) or after ``steps`` of fine-tuning on the field itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ... import InputError

__all__ = ["BETA", "DEFAULT_SELFSUP", "LAMBDA", "PatchField", "SelfSupConfig", "disk_channel", "integrate_patches",
           "load_selfsup", "new_network", "patch_field", "predict_patches", "save_selfsup", "segment_selfsup", "selfsup_loss",
           "train_selfsup", "working_scale"]

#: consistency weight: with it, a pixel another patch holds at 0.5 costs exactly what its area gains
LAMBDA = 1.0 / math.log10(2.0)
#: penalty on cell pixels outside the foreground mask (the paper's "stiff" choice)
BETA = 15.0
#: the bundled pretrained weights
DEFAULT_SELFSUP = "cells_selfsup_v1"
_EPS = 1e-4  # keeps log10(1 - y) finite; caps the cost of one doubly claimed pixel at 4 lambda
FORMAT = "nucleoscope-cells-selfsup"


@dataclass(frozen=True)
class SelfSupConfig:
    """Settings of the self-supervised patch network.

    Attributes
    ----------
    patch : int
        Patch side k (px at the working scale); the paper's 64.
    disk_sigma : float
        Sigma (px) of the marker's Gaussian disk channel; the paper's 15.
    lam, beta : float
        Loss weights (module docstring); the paper's 3.32 and 15.
    lr : float
        Adam learning rate; the paper's 0.005.
    area : int
        Side (px, working scale) of the window whose patches form one batch.
    max_batch : int
        At most this many patches per batch (the window's patches nearest its centre).
    nucleus_diameter : float
        Median nucleus diameter (px) at the working scale.
    steps : int
        Fine-tuning steps on the field itself before predicting; 0 uses the weights as they are.
    floor : float
        Integration: pixels where every patch is below this are background; the paper's 0.5.
    model : str or None
        Bundled name or path of the starting weights; ``None`` = :data:`DEFAULT_SELFSUP`.
    seed : int
        Seed of the fine-tuning's window draws, flips and transposes.
    """

    patch: int = 64
    disk_sigma: float = 15.0
    lam: float = LAMBDA
    beta: float = BETA
    lr: float = 0.005
    area: int = 256
    max_batch: int = 96
    nucleus_diameter: float = 10.0
    steps: int = 0
    floor: float = 0.5
    model: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch < 16 or self.patch % 8:
            raise ValueError(f"patch must be a multiple of 8 and >= 16, got {self.patch}")
        if not 0 < self.floor < 1:
            raise ValueError(f"floor must lie in (0, 1), got {self.floor}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.nucleus_diameter > 0:
            raise ValueError(f"nucleus_diameter must be > 0, got {self.nucleus_diameter}")


# ----------------------------------------------------------------------------------------------------
# Fields at the working scale, patches, disk
# ----------------------------------------------------------------------------------------------------

@dataclass
class PatchField:
    """One field at the working scale, padded by ``pad`` px on every side (image 0, mask 0 there).

    Attributes
    ----------
    image : (H, W) float32
        Normalised cell channel (0-1), padded.
    mask : (H, W) float32
        Foreground mask (1 = cell), padded.
    tops : (N, 2) int64
        Top-left corner of each marker's patch in the padded arrays.
    ids : (N,) int32
        Nucleus id of each patch.
    scale : (float, float)
        Working size / full size along Y and X.
    pad : int
    full_shape : (int, int)
    centers : (N, 2) float
        Markers at the working scale (unpadded).
    truth : (H, W) int32 or None
        True cell labels at the working scale, padded (synthetic fields: for pretraining only).
    """

    image: np.ndarray
    mask: np.ndarray
    tops: np.ndarray
    ids: np.ndarray
    scale: tuple[float, float]
    pad: int
    full_shape: tuple[int, int]
    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    truth: np.ndarray | None = None


def working_scale(nuclei: np.ndarray, nucleus_diameter: float = 10.0, *, lo: float = 1 / 8, hi: float = 2.0) -> float:
    """Factor that brings the median nucleus (equivalent diameter, px) to ``nucleus_diameter`` px.

    Nuclei under a tenth of the median area (micronuclei, fragments) do not count. Clipped to
    ``[lo, hi]``; 1.0 when there are no nuclei.
    """
    areas = np.bincount(np.asarray(nuclei, np.int64).ravel())[1:]
    areas = areas[areas > 0]
    if not len(areas):
        return 1.0
    areas = areas[areas >= 0.1 * np.median(areas)]
    d = 2.0 * math.sqrt(float(np.median(areas)) / math.pi)
    return float(np.clip(nucleus_diameter / d, lo, hi))


def disk_channel(k: int, sigma: float) -> np.ndarray:
    """(k, k) float32 Gaussian disk exp(-r^2 / 2 sigma^2), peak 1 at the patch centre (k // 2, k // 2)."""
    r2 = (np.arange(k) - k // 2)[:, None] ** 2 + (np.arange(k) - k // 2)[None, :] ** 2
    return np.exp(-r2 / (2.0 * sigma**2)).astype(np.float32)


def patch_field(unit: np.ndarray, mask: np.ndarray, nuclei: np.ndarray, config: SelfSupConfig = SelfSupConfig(),
                scale: float | None = None, truth: np.ndarray | None = None) -> PatchField:
    """Bring a field to the working scale and place one patch on every nucleus centroid.

    Parameters
    ----------
    unit : (Y, X) float array in [0, 1]
        Normalised cell channel (:func:`~.foreground.normalize_unit`).
    mask : (Y, X) bool
        Foreground mask.
    nuclei : (Y, X) int array
        Nucleus labels; each nucleus is one marker (its centroid) and names its patch.
    scale : float, optional
        Working scale; default :func:`working_scale` of ``nuclei``.
    truth : (Y, X) int array, optional
        True cell labels with the nuclei's ids (synthetic fields), kept for :func:`train_selfsup`'s
        ``objective="truth"``.
    """
    from scipy import ndimage as ndi

    from ...rescale import rescale_image, resize_labels

    nuclei = np.asarray(nuclei, np.int32)
    s = working_scale(nuclei, config.nucleus_diameter) if scale is None else float(scale)
    img = rescale_image(np.asarray(unit, np.float32), s)
    msk = rescale_image(np.asarray(mask, np.float32) if mask is not None else np.ones(nuclei.shape, np.float32), s)
    msk = (msk >= 0.5).astype(np.float32)
    sy, sx = img.shape[0] / nuclei.shape[0], img.shape[1] / nuclei.shape[1]
    ids = np.unique(nuclei[nuclei > 0]).astype(np.int32)
    if len(ids):
        c = np.asarray(ndi.center_of_mass(np.ones(nuclei.shape, np.float32), nuclei, ids), np.float64).reshape(-1, 2)
    else:
        c = np.zeros((0, 2))
    centers = np.stack([(c[:, 0] + 0.5) * sy - 0.5, (c[:, 1] + 0.5) * sx - 0.5], axis=1) if len(c) else c
    k = config.patch
    pad = k
    tops = np.rint(centers).astype(np.int64) - k // 2 + pad
    t = None if truth is None else np.pad(resize_labels(np.asarray(truth, np.int32), img.shape), pad)
    return PatchField(image=np.pad(img, pad), mask=np.pad(msk, pad), tops=tops.reshape(-1, 2), ids=ids,
                      scale=(sy, sx), pad=pad, full_shape=tuple(nuclei.shape), centers=centers, truth=t)


def _gather(arr: np.ndarray, tops: np.ndarray, k: int) -> np.ndarray:
    """(N, k, k) windows of ``arr`` at ``tops``."""
    from numpy.lib.stride_tricks import sliding_window_view

    if not len(tops):
        return np.zeros((0, k, k), arr.dtype)
    return sliding_window_view(arr, (k, k))[tops[:, 0], tops[:, 1]].copy()


def _inputs(f: PatchField, sel: np.ndarray, disk: np.ndarray) -> np.ndarray:
    """(n, 3, k, k) network inputs of patches ``sel``: image window, the disk, and the mask window."""
    k = disk.shape[0]
    x = _gather(f.image, f.tops[sel], k)
    return np.stack([x, np.broadcast_to(disk, x.shape), _gather(f.mask, f.tops[sel], k)], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------

def selfsup_loss(y, tops, mask, *, lam: float = LAMBDA, beta: float = BETA, normalize: bool = True):
    """The paper's loss of one batch of patch predictions on a shared canvas.

    Parameters
    ----------
    y : torch.Tensor, (N, k, k), values in (0, 1)
        Cell probability of each patch.
    tops : (N, 2) int array
        Each patch's top-left corner on the canvas.
    mask : torch.Tensor, (H, W)
        Foreground mask M of the canvas (1 = cell); every patch lies inside the canvas.
    lam, beta : float
    normalize : bool
        Divide by ``N k^2`` (the number of patch pixels).

    Returns
    -------
    loss : torch.Tensor (scalar)
    terms : dict
        ``area`` (sum y), ``consistency`` (sum_{i != j} y_i(p) * -log10(1 - y_j(p))) and ``outside``
        (sum y (1 - M)), unweighted and unnormalised, as floats.
    """
    import torch

    n, k, _ = y.shape
    h, w = mask.shape
    tops_t = torch.as_tensor(np.asarray(tops, np.int64).reshape(-1, 2))
    offs = (torch.arange(k)[:, None] * w + torch.arange(k)[None, :]).reshape(1, k, k)
    idx = (tops_t[:, 0] * w + tops_t[:, 1]).reshape(n, 1, 1) + offs
    yc = y.clamp(0.0, 1.0 - _EPS)
    a = -torch.log10(1.0 - yc)
    total = torch.zeros(h * w, dtype=y.dtype).index_add(0, idx.reshape(-1), a.reshape(-1))
    others = total[idx] - a  # sum over j != i of -log10(1 - y_j) at each of patch i's pixels
    area = y.sum()
    consistency = (y * others).sum()
    outside = (y * (1.0 - mask.reshape(-1)[idx])).sum()
    loss = -area + lam * consistency + beta * outside
    if normalize:
        loss = loss / max(n * k * k, 1)
    return loss, {"area": float(area.detach()), "consistency": float(consistency.detach()),
                  "outside": float(outside.detach())}


# ----------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------

def _net(width: int = 12, depth: int = 3):
    """A small U-Net, 3 input channels (image, disk, mask) -> 1 logit map of the same size."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class PatchUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**i for i in range(depth)]
            self.down = nn.ModuleList([block(3 if i == 0 else chans[i - 1], c) for i, c in enumerate(chans)])
            self.mid = block(chans[-1], chans[-1] * 2)
            self.up = nn.ModuleList([nn.ConvTranspose2d(c * 2, c, 2, stride=2) for c in reversed(chans)])
            self.dec = nn.ModuleList([block(c * 2, c) for c in reversed(chans)])
            self.out = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for b in self.down:
                x = b(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.mid(x)
            for up, dec, s in zip(self.up, self.dec, reversed(skips)):
                x = dec(torch.cat([up(x), s], dim=1))
            return self.out(x)[:, 0]

    return PatchUNet()


def new_network(width: int = 12, depth: int = 3, seed: int = 0):
    """A freshly initialised patch U-Net (deterministic for a seed)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _net(width, depth)


def save_selfsup(stem, net, meta: dict) -> None:
    """``stem.safetensors`` + ``stem.json`` (architecture, settings, provenance, SHA-256), atomically."""
    from ..nuset.weights import save_model

    save_model(stem, net.state_dict(), {"format": FORMAT, **meta})


def load_selfsup(name_or_path=None):
    """The patch U-Net (eval mode) and its metadata; default the bundled :data:`DEFAULT_SELFSUP`.

    Raises
    ------
    InputError
        Missing or corrupted files, or a model of another kind (named).
    """
    from ...models import model_paths
    from ..nuset.weights import load_weights

    name_or_path = name_or_path or DEFAULT_SELFSUP
    tensors, meta = load_weights(name_or_path)
    if meta.get("format") != FORMAT:
        raise InputError(f"not a self-supervised cell model (format {meta.get('format')!r})",
                         path=model_paths(name_or_path)[1])
    arch = meta.get("architecture", {})
    net = _net(int(arch.get("width", 12)), int(arch.get("depth", 3)))
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the architecture: {str(exc).splitlines()[0]}",
                         path=model_paths(name_or_path)[0]) from None
    return net.eval(), meta


# ----------------------------------------------------------------------------------------------------
# Training and prediction
# ----------------------------------------------------------------------------------------------------

def _transform(x, code: int, inverse: bool = False):
    """Flip Y (bit 0), flip X (bit 1), transpose (bit 2) of (..., k, k); ``inverse`` undoes it."""
    ops = [(1, lambda t: t.flip(-2)), (2, lambda t: t.flip(-1)), (4, lambda t: t.transpose(-1, -2))]
    for bit, op in (reversed(ops) if inverse else ops):
        if code & bit:
            x = op(x)
    return x


def _batch(f: PatchField, rng: np.random.Generator, config: SelfSupConfig) -> np.ndarray:
    """Indices of the patches of one random window (at most ``max_batch``, nearest the window's centre)."""
    n = len(f.tops)
    h, w = f.image.shape
    a = config.area
    oy = rng.uniform(-a / 2, max(h - a / 2, -a / 2 + 1))
    ox = rng.uniform(-a / 2, max(w - a / 2, -a / 2 + 1))
    c = f.tops + config.patch // 2
    inside = np.flatnonzero((c[:, 0] >= oy) & (c[:, 0] < oy + a) & (c[:, 1] >= ox) & (c[:, 1] < ox + a))
    if len(inside) > config.max_batch:
        d = np.hypot(c[inside, 0] - (oy + a / 2), c[inside, 1] - (ox + a / 2))
        inside = inside[np.argsort(d, kind="stable")[: config.max_batch]]
    return inside if len(inside) else rng.integers(0, n, size=1)


def train_selfsup(net, fields: list[PatchField], config: SelfSupConfig = SelfSupConfig(), *, steps: int,
                  optimizer=None, on_step: Callable[[int, float, dict], None] | None = None,
                  rng: np.random.Generator | None = None, objective: str = "selfsup") -> list[float]:
    """Minimise the loss over batches of ``fields`` for ``steps`` Adam steps (in place).

    Parameters
    ----------
    net : torch.nn.Module
        The patch U-Net (:func:`new_network` or :func:`load_selfsup`).
    fields : list of PatchField
        Fields with at least one marker (others are skipped).
    steps : int
    optimizer : torch.optim.Optimizer, optional
        Default Adam at ``config.lr`` (pass one to resume a training).
    on_step : callable, optional
        ``on_step(step, loss, terms)`` after every step.
    objective : {"selfsup", "truth"}
        The paper's label-free loss, or binary cross-entropy against each patch's own true cell
        (fields with ``truth``: the synthetic pretraining, which gives the network the notion "the cell
        under the disk" that the label-free loss alone reaches only slowly from a random start, where
        every patch sits at the coin-toss 0.5 its neighbours allow).

    Returns
    -------
    list of float
        The loss of every step.
    """
    import torch

    if objective not in ("selfsup", "truth"):
        raise ValueError(f"objective must be 'selfsup' or 'truth', got {objective!r}")
    fields = [f for f in fields if len(f.tops) and (objective == "selfsup" or f.truth is not None)]
    if not fields or steps <= 0:
        return []
    rng = np.random.default_rng(config.seed) if rng is None else rng
    opt = optimizer or torch.optim.Adam(net.parameters(), lr=config.lr)
    disk = disk_channel(config.patch, config.disk_sigma)
    masks = [torch.from_numpy(f.mask) for f in fields]
    losses = []
    net.train()
    for step in range(steps):
        fi = int(rng.integers(len(fields)))
        f = fields[fi]
        sel = _batch(f, rng, config)
        code = int(rng.integers(8))
        x = _transform(torch.from_numpy(_inputs(f, sel, disk)), code)
        logits = _transform(net(x), code, inverse=True)
        if objective == "truth":
            target = torch.from_numpy((_gather(f.truth, f.tops[sel], config.patch)
                                       == f.ids[sel][:, None, None]).astype(np.float32))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
            terms = {}
        else:
            loss, terms = selfsup_loss(torch.sigmoid(logits), f.tops[sel], masks[fi], lam=config.lam,
                                       beta=config.beta)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1], terms)
    net.eval()
    return losses


def predict_patches(net, f: PatchField, config: SelfSupConfig = SelfSupConfig(), batch: int = 64) -> np.ndarray:
    """(N, k, k) float32 cell probabilities of every patch of ``f``."""
    import torch

    disk = disk_channel(config.patch, config.disk_sigma)
    out = np.zeros((len(f.tops), config.patch, config.patch), np.float32)
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(f.tops), batch):
            sel = np.arange(s, min(s + batch, len(f.tops)))
            out[sel] = torch.sigmoid(net(torch.from_numpy(_inputs(f, sel, disk)))).numpy()
    return out


def integrate_patches(probs: np.ndarray, f: PatchField, floor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution cell labels: each pixel to the patch most probable there, 0 below ``floor``.

    Each patch's map is sampled bilinearly at the full-resolution pixels it covers (pixel centres
    mapped to the working scale), so cell outlines are not blocky.

    Returns
    -------
    labels : (Y, X) int32
        The id of the winning patch's nucleus (``f.ids``), 0 = background.
    best : (Y, X) float32
        The winning probability.
    """
    from scipy.ndimage import map_coordinates

    h, w = f.full_shape
    sy, sx = f.scale
    k = probs.shape[-1]
    best = np.zeros((h, w), np.float32)
    lab = np.zeros((h, w), np.int32)
    for p, (ty, tx), i in zip(probs, f.tops - f.pad, f.ids):
        # full-res pixels whose centre maps onto the patch's pixels: ty - 0.5 <= (Y + 0.5) sy - 0.5 < ty + k - 0.5
        y0, y1 = max(0, math.ceil(ty / sy - 0.5)), min(h, math.ceil((ty + k) / sy - 0.5))
        x0, x1 = max(0, math.ceil(tx / sx - 0.5)), min(w, math.ceil((tx + k) / sx - 0.5))
        if y1 <= y0 or x1 <= x0:
            continue
        u = (np.arange(y0, y1) + 0.5) * sy - 0.5 - ty
        v = (np.arange(x0, x1) + 0.5) * sx - 0.5 - tx
        uu, vv = np.meshgrid(u, v, indexing="ij")
        q = map_coordinates(p, [uu.ravel(), vv.ravel()], order=1, mode="nearest").reshape(uu.shape)
        win = q > best[y0:y1, x0:x1]
        best[y0:y1, x0:x1][win] = q[win]
        lab[y0:y1, x0:x1][win] = i
    lab[best < floor] = 0
    return lab, best


def segment_selfsup(unit: np.ndarray, nuclei: np.ndarray, mask: np.ndarray,
                    config: SelfSupConfig = SelfSupConfig(), net=None) -> tuple[np.ndarray, dict]:
    """Cells of one field by the patch network: pretrained weights, optionally fine-tuned on the field.

    Parameters
    ----------
    unit : (Y, X) float array in [0, 1]
        Normalised cell channel.
    nuclei : (Y, X) int array
        Nucleus labels (markers; cell ``i`` gets nucleus ``i``'s id).
    mask : (Y, X) bool
        Foreground mask (the loss's M).
    net : torch.nn.Module, optional
        A loaded patch U-Net; default ``load_selfsup(config.model)`` (fine-tuning works on a copy).

    Returns
    -------
    cells : (Y, X) int32
        Cell labels before the nucleus clean-up of :func:`.segment_cells`.
    info : dict
        ``scale``, ``n_patches``, ``finetune_s``, ``predict_s``, ``loss`` (first and last fine-tuning loss).
    """
    import copy

    import torch

    if net is None:
        net, _ = load_selfsup(config.model)
    t0 = time.perf_counter()
    f = patch_field(unit, mask, nuclei, config)
    info = {"scale": round(float(np.mean(f.scale)), 4), "n_patches": int(len(f.tops))}
    if not len(f.tops):
        return np.zeros(np.shape(nuclei), np.int32), info
    if config.steps:
        net = copy.deepcopy(net)
        with torch.enable_grad():
            losses = train_selfsup(net, [f], config, steps=config.steps)
        info["loss"] = [round(losses[0], 5), round(losses[-1], 5)]
    t1 = time.perf_counter()
    probs = predict_patches(net, f, config)
    cells, _ = integrate_patches(probs, f, config.floor)
    info.update(finetune_s=round(t1 - t0, 3), predict_s=round(time.perf_counter() - t1, 3))
    return cells, info
