"""Training of the NuSeT network: sample preparation, GPU-side augmentation, the loop, checkpoints,
validation F1, early stopping and threshold tuning.

Everything here takes arrays; reading files is the CLI's job (``nucleoscope train-segmenter``).

Design notes
------------
* Each training image is stored once at a *storage scale* where its median nucleus is at most
  ``max_zoom x`` the model's diameter (never enlarged), together with its border weight map.
* A training crop is drawn by one affine resampling (``grid_sample``) that does the scale jitter
  (nucleus diameter log-uniform in ``scale_range x`` the model's), a 90° rotation plus a small
  rotation, a mirror flip and the crop; labels are resampled with nearest neighbour so boxes for the
  RPN come from the augmented labels exactly. All of it runs on the training device.
* Intensity jitter (gamma, gain, offset, noise, blur) is applied to the whole stored image before the
  normalization, so the foreground statistics see the same jitter as the pixels. Optionally
  (``brightness_spread``) each nucleus's signal is scaled by its own factor, as in images where DNA
  content or a reporter's expression varies from cell to cell, and (``ramp``) a background gradient
  is added, as under uneven illumination.
* Foreground normalization uses the ground-truth mask, randomly eroded or dilated, so the network also
  copes with the imperfect coarse mask of inference pass 1 (one checkpoint serves both passes, where
  NuSeT trained two).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...preprocess import estimate_diameter, normalize_percentile, rescale_image, resize_labels
from .infer import PASS1_FRACTION, Thresholds, check_image, labels_from_maps, predict_nuset
from .losses import border_weight_map, boundary_loss, seg_loss, small_object_weights
from .network import NusetConfig, NusetNet
from .rpn import boxes_from_labels, make_anchors, rpn_loss, rpn_targets

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainSample", "ValImage", "prepare_sample", "train_nuset", "tune_thresholds",
           "evaluate_model"]


@dataclass
class TrainSample:
    """One training image at its storage scale."""

    image: np.ndarray    #: (Y, X) float32, percentile-normalized to ~[0, 1]
    labels: np.ndarray   #: (Y, X) int32
    weight: np.ndarray   #: (Y, X) float32 border weight map
    diameter: float      #: median nucleus diameter (px) at this scale
    name: str = ""
    source: str = "real"


@dataclass
class ValImage:
    """A validation image at its original resolution."""

    image: np.ndarray    #: (Y, X) raw intensities
    labels: np.ndarray   #: (Y, X) int32 truth
    name: str = ""
    dataset: str = ""


@dataclass
class TrainConfig:
    """Training hyper-parameters (see :func:`train_nuset`)."""

    crop: int = 256
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 60                      #: one epoch = as many crops as training images
    steps: int | None = None              #: overrides ``epochs``
    max_minutes: float = 60.0
    eval_every: int = 200                 #: steps between validations
    patience: int = 8                     #: validations without improvement before stopping
    scale_range: tuple[float, float] = (0.55, 1.8)
    max_rotation_deg: float = 10.0
    fg_norm: bool = True                  #: foreground normalization (False: whole-image percentiles)
    rpn: bool = True                      #: train the RPN head
    rpn_weight: float = 1.0
    border_w0: float = 10.0               #: U-Net border weight between touching nuclei (recorded here)
    small_weight: float = 1.0             #: loss weight on nuclei < 1/4 of the median area (1: off)
    boundary_weight: float = 1.0          #: weight of the boundary-channel loss (models with ``boundary``)
    #: per-nucleus brightness augmentation: on half of the crops each nucleus's signal above the background
    #: is multiplied by a factor log-uniform in [1 / spread, 1] (1: off)
    brightness_spread: float = 1.0
    #: what a nucleus's factor scales: ``"cell"`` all of its light (each pixel goes with its nearest
    #: nucleus out to half a diameter, the factor map smoothed over 2 px), with noise added back to keep
    #: the image's background noise level (a dimmer stain under the same camera); or ``"halo2"`` its
    #: pixels and a 2 px halo, noise included (how nuset_v3 to nuset_v5 were trained: a dimmed nucleus
    #: kept its undimmed glow beyond 2 px and got a ring of lowered noise)
    brightness_scope: str = "cell"
    #: background-ramp augmentation: on 30% of the crops a linear gradient of up to this fraction of the
    #: nuclei's median level, in a random direction, is added (0: off)
    ramp: float = 0.0
    amp: bool = True                      #: bfloat16 autocast on CUDA
    seed: int = 0
    val_max_images: int | None = None

    def __post_init__(self) -> None:
        if self.brightness_scope not in ("cell", "halo2"):
            raise ValueError(f"brightness_scope must be 'cell' or 'halo2', got {self.brightness_scope!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_sample(image: np.ndarray, labels: np.ndarray, *, model_diameter: float, max_zoom: float = 2.0,
                   name: str = "", source: str = "real", border_w0: float = 10.0) -> TrainSample | None:
    """Normalize, rescale to the storage scale and compute the border weight map of one image.

    Returns ``None`` for an image without nuclei (nothing to learn scale from)."""
    image = check_image(image)
    labels = np.asarray(labels).astype(np.int32)
    d = estimate_diameter(labels, min_area=10)
    if not np.isfinite(d):
        return None
    f = min(1.0, max_zoom * model_diameter / d)
    img = normalize_percentile(image, low=1.0, high=99.8)
    if f < 1.0:
        img = rescale_image(img, f)
        labels = resize_labels(labels, img.shape)
    # sigma^2 = 5 px at the model's scale -> in storage px
    s2 = 5.0 * (f * d / model_diameter) ** 2
    w = border_weight_map(labels, w0=border_w0, sigma2=s2)
    return TrainSample(img.astype(np.float32), labels, w, float(d * f), name, source)


# ----------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------

BOUNDARY_RADIUS = 2  #: px (at the model's scale) on each side of a border between touching nuclei


def boundary_target(labels: torch.Tensor, radius: int = BOUNDARY_RADIUS) -> torch.Tensor:
    """Targets ``(2, H, W)`` float: foreground, and pixels of a nucleus within ``radius`` px (square
    neighbourhood) of a pixel of *another* nucleus -- the borders between touching nuclei, not the
    outlines against the background, which the foreground channel already gives."""
    lab = labels[None, None].float()
    k = 2 * radius + 1
    hi = F.max_pool2d(lab, k, stride=1, padding=radius)
    # smallest nonzero id in the window: background raised above every id before a min-pool
    lo = -F.max_pool2d(-torch.where(lab > 0, lab, torch.full_like(lab, 3e38)), k, stride=1, padding=radius)
    fg = lab > 0
    border = fg & ((hi > lab) | (lo < lab))
    return torch.cat([fg.float(), border.float()], 1)[0]


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (H, W) tensor, ``sigma`` px, edges replicated."""
    r = int(math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    ker = torch.exp(-t * t / (2 * sigma * sigma))
    ker = ker / ker.sum()
    y = F.conv2d(F.pad(x[None, None], (r, r, 0, 0), mode="replicate"), ker.view(1, 1, 1, -1))
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), ker.view(1, 1, -1, 1))[0, 0]


class _Sampler:
    """Draws augmented, normalized crops from the stored samples on ``device``."""

    def __init__(self, samples: Sequence[TrainSample], synthetic: Sequence[TrainSample], model_cfg: NusetConfig,
                 cfg: TrainConfig, device: torch.device, synthetic_ratio: float) -> None:
        self.dev = device
        self.cfg, self.mcfg = cfg, model_cfg
        self.real = [self._to_dev(s) for s in samples]
        self.synth = [self._to_dev(s) for s in synthetic]
        self.p_synth = synthetic_ratio / (1 + synthetic_ratio) if self.synth and self.real else (1.0 if self.synth else 0.0)
        c = cfg.crop
        self.anchors = make_anchors(c // model_cfg.stride, c // model_cfg.stride, stride=model_cfg.stride,
                                    diameter=model_cfg.diameter, scales=model_cfg.anchor_scales,
                                    ratios=model_cfg.anchor_ratios, device=device)

    def _to_dev(self, s: TrainSample):
        from scipy import ndimage as ndi

        g = np.random.default_rng(len(s.image.ravel()))
        fg = s.labels > 0
        grown, noise_sd = None, 0.0
        if self.cfg.brightness_spread > 1 and self.cfg.brightness_scope == "cell":
            from skimage.segmentation import expand_labels

            # each pixel belongs to its nearest nucleus out to half a diameter: that nucleus's light
            g_np = expand_labels(s.labels, max(2, int(round(s.diameter / 2))))
            grown = torch.from_numpy(g_np.astype(np.int64)).to(self.dev)
            from scipy.stats import median_abs_deviation

            far = s.image[g_np == 0] if (g_np == 0).sum() > 100 else s.image[~fg]
            noise_sd = float(median_abs_deviation(far, scale="normal")) if far.size else 0.0
        # Pixel-value samples for the normalization statistics: under the truth mask, an eroded and a
        # dilated one (an imperfect coarse mask), and the whole image. The intensity jitter is applied
        # to these samples too, so statistics and pixels stay consistent without touching the whole image.
        masks = [fg, ndi.binary_erosion(fg, iterations=2), ndi.binary_dilation(fg, iterations=2),
                 np.ones_like(fg)]
        samples = []
        for m in masks:
            v = s.image[m] if m.any() else s.image.ravel()
            samples.append(torch.from_numpy(g.choice(v, size=min(4096, v.size), replace=False)).to(self.dev))
        lab = torch.from_numpy(s.labels.astype(np.float32)).to(self.dev)
        return dict(img=torch.from_numpy(s.image).to(self.dev), lab=lab, w=torch.from_numpy(s.weight).to(self.dev),
                    fg=torch.nonzero(lab > 0), d=s.diameter, samples=samples, grown=grown,
                    noise_sd=noise_sd,
                    bg=float(np.median(s.image[~fg])) if (~fg).any() else 0.0)

    def _heterogeneity(self, img: torch.Tensor, lab: torch.Tensor, vals: torch.Tensor, bg: float,
                       g: np.random.Generator, grown: torch.Tensor | None = None, noise_sd: float = 0.0):
        """Per-nucleus brightness factors and a background ramp (``brightness_spread``, ``ramp``).

        The statistics' samples carry no positions, so each sample gets a factor drawn from the same
        distribution as the nuclei's, and the ramp's value at a random position: their median and
        spread then move as those of the augmented window's foreground do. ``bg``: the image's median
        background level, about which the nuclei's signal is scaled; ``grown``: the window's labels
        expanded to half a diameter (``brightness_scope="cell"``), ``noise_sd`` the image's background
        noise (its standard deviation)."""
        cfg = self.cfg
        if cfg.brightness_spread > 1 and g.random() < 0.5:
            lo = math.log(1.0 / cfg.brightness_spread)
            n = int(max(lab.max().item(), grown.max().item() if grown is not None else 0)) + 1
            f = torch.from_numpy(np.exp(g.uniform(lo, 0.0, n)).astype(np.float32)).to(img.device)
            f[0] = 1.0
            if grown is not None:
                # all of a nucleus's light scales (its glow reaches well past its outline); the pixel noise
                # scales with it, so noise of the image's own level is added back to keep it at that level
                fmap = _blur(f[grown], 2.0)
                img = bg + (img - bg) * fmap
                if noise_sd > 0:
                    img = img + torch.randn_like(img) * noise_sd * (1 - fmap * fmap).clamp(min=0).sqrt()
            else:
                # each nucleus's halo (2 px of background around it, where its blur spills) scales with it
                ids = lab[None, None]
                grown = torch.where(ids > 0, ids, F.max_pool2d(ids, 5, stride=1, padding=2))[0, 0].long()
                img = bg + (img - bg) * f[grown]
            fv = torch.from_numpy(np.exp(g.uniform(lo, 0.0, vals.numel())).astype(np.float32)).to(vals.device)
            vals = bg + (vals - bg) * fv
        if cfg.ramp > 0 and g.random() < 0.3:
            a = float(g.uniform(0, cfg.ramp)) * float((vals.median() - bg).clamp(min=0))
            phi = float(g.uniform(0, 2 * math.pi))
            h, w = img.shape
            yy = torch.linspace(-0.5, 0.5, h, device=img.device)[:, None]
            xx = torch.linspace(-0.5, 0.5, w, device=img.device)[None, :]
            img = img + a * (math.sin(phi) * yy + math.cos(phi) * xx)
            vals = vals + a * (torch.rand_like(vals) - 0.5)
        return img, vals

    def _intensity(self, img: torch.Tensor, vals: torch.Tensor, g: np.random.Generator):
        """Gamma, gain, offset, defocus blur and noise on a window and on the statistics' samples."""
        gamma = float(np.exp(g.uniform(np.log(0.6), np.log(1.6))))
        gain = float(np.exp(g.uniform(np.log(0.5), np.log(2.0))))
        off = float(g.uniform(-0.1, 0.1))
        x = img.clamp(min=0) ** gamma * gain + off
        vals = vals.clamp(min=0) ** gamma * gain + off
        if g.random() < 0.3 and min(x.shape) > 8:  # defocus
            x = _blur(x, float(g.uniform(0.5, 1.5)))
        if g.random() < 0.7:
            sd = float(g.uniform(0, 0.08))
            x = x + torch.randn_like(x) * sd
            vals = vals + torch.randn_like(vals) * sd
        return x, vals

    def _stats(self, vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.fg_norm:
            return vals.median(), vals.std().clamp(min=1e-6)
        lo, hi = torch.quantile(vals, torch.tensor([0.01, 0.998], device=vals.device))
        return lo, (hi - lo).clamp(min=1e-6)

    def batch(self, g: np.random.Generator):
        c, cfg = self.cfg.crop, self.cfg
        xs, ys, ws, vs, boxes = [], [], [], [], []
        for _ in range(cfg.batch):
            pool = self.synth if g.random() < self.p_synth else self.real
            s = pool[int(g.integers(len(pool)))]
            H, W = s["img"].shape
            d_t = self.mcfg.diameter * float(np.exp(g.uniform(*np.log(cfg.scale_range))))
            step = s["d"] / d_t  # storage px per crop px
            theta = float(g.integers(4)) * math.pi / 2 + math.radians(float(g.uniform(-1, 1)) * cfg.max_rotation_deg)
            flip = -1.0 if g.random() < 0.5 else 1.0
            if len(s["fg"]) and g.random() < 0.7:
                cy, cx = s["fg"][int(g.integers(len(s["fg"])))].tolist()
            else:
                cy, cx = float(g.uniform(0, H)), float(g.uniform(0, W))
            # only the window the crop can reach is augmented (the crop's half-diagonal + 2 px)
            r = int(step * c * 0.7072) + 2
            y0, y1 = max(0, int(cy) - r), min(H, int(cy) + r + 1)
            x0, x1 = max(0, int(cx) - r), min(W, int(cx) + r + 1)
            if self.cfg.fg_norm:
                u = g.random()
                vals = s["samples"][0 if u < 0.5 else (1 if u < 0.75 else 2)]
            else:
                vals = s["samples"][3]
            win = s["img"][y0:y1, x0:x1]
            if cfg.brightness_spread > 1 or cfg.ramp > 0:  # off: no draws, so earlier runs' crops are unchanged
                gw = s["grown"][y0:y1, x0:x1] if s["grown"] is not None else None
                win, vals = self._heterogeneity(win, s["lab"][y0:y1, x0:x1], vals, s["bg"], g, gw, s["noise_sd"])
            win, vals = self._intensity(win, vals, g)
            centre, scale = self._stats(vals)
            win = (win - centre) / scale
            h, w = win.shape
            cy, cx = cy - y0, cx - x0
            # output pixel (u, v) -> source (y, x) = centre + step * R(theta) diag(flip, 1) (u, v);
            # normalized coords (align_corners=False): n = (2 p + 1) / size - 1; grid rows are (x, y)
            cos, sin = math.cos(theta), math.sin(theta)
            ax = torch.tensor([[step * cos * flip * c / w, -step * sin * c / w, (2 * cx + 1) / w - 1],
                               [step * sin * flip * c / h, step * cos * c / h, (2 * cy + 1) / h - 1]],
                              device=self.dev, dtype=torch.float32)
            grid = F.affine_grid(ax[None], (1, 1, c, c), align_corners=False)
            both = torch.stack([win, s["w"][y0:y1, x0:x1], torch.ones_like(win)])[None]
            out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
            lab = F.grid_sample(s["lab"][y0:y1, x0:x1][None, None], grid, mode="nearest", padding_mode="zeros",
                                align_corners=False)[0, 0]
            valid = (out[2] > 0.999).float()
            # outside the image: the background level (normalized value of the 5th percentile)
            bg = float(((torch.quantile(vals, 0.05) - centre) / scale))
            xs.append(out[0] * valid + (1 - valid) * bg)
            ws.append(out[1].clamp(min=1.0))
            ys.append(boundary_target(lab) if self.mcfg.boundary else (lab > 0).float()[None])
            vs.append(valid)
            boxes.append(boxes_from_labels(lab.long()))
        st = lambda t: torch.stack(t)[:, None]
        return st(xs), torch.stack(ys), st(ws), st(vs), boxes


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------

def _gt_diameter(labels: np.ndarray) -> float:
    d = estimate_diameter(labels, min_area=10)
    return d if np.isfinite(d) else float("nan")


def evaluate_model(net: NusetNet, val: Sequence[ValImage], *, thresholds: Thresholds = Thresholds(),
                   device: str | torch.device = "cpu", use_rpn: bool = True, two_pass: bool = True,
                   known_diameter: bool = False, maps_cache: list | None = None, norm: str = "foreground") -> dict:
    """F1 at IoU 0.5 and 0.7 (mean over images, then over data sets) of ``net`` on ``val``.

    Returns ``{"f1_50", "f1_70", "per_dataset": {name: {"f1_50", "f1_70", "n"}}}``.
    With ``known_diameter`` the truth's median diameter sets the scale (faster, for early stopping).
    """
    from ...metrics import evaluate_image

    net.eval()
    per: dict[str, list] = {}
    for i, v in enumerate(val):
        if maps_cache is not None and i < len(maps_cache):
            maps = maps_cache[i]
        else:
            img = check_image(v.image)
            d = _gt_diameter(v.labels) if known_diameter else None
            maps = predict_nuset(img, net, thresholds=thresholds, diameter=d if d and np.isfinite(d) else None,
                                 two_pass=two_pass, device=device, norm=norm,
                                 use_rpn=use_rpn)
            if maps_cache is not None:
                maps_cache.append(maps)
        pred, _, _, _ = labels_from_maps(maps, net.config, thresholds, use_rpn=use_rpn)
        sc = evaluate_image(v.labels, pred, thresholds=(0.5, 0.7), hausdorff=False)
        per.setdefault(v.dataset or "val", []).append(
            (sc.objects[0.5].f1, sc.objects[0.7].f1, sc.errors.merge, sc.errors.split))
    out = {"per_dataset": {}}
    for k, rows in per.items():
        a = np.array(rows, dtype=float)
        out["per_dataset"][k] = {"f1_50": float(a[:, 0].mean()), "f1_70": float(a[:, 1].mean()),
                                 "merges": int(a[:, 2].sum()), "splits": int(a[:, 3].sum()), "n": len(rows)}
    out["f1_50"] = float(np.mean([d["f1_50"] for d in out["per_dataset"].values()])) if per else 0.0
    out["f1_70"] = float(np.mean([d["f1_70"] for d in out["per_dataset"].values()])) if per else 0.0
    return out


def tune_thresholds(net: NusetNet, val: Sequence[ValImage], *, device: str | torch.device = "cpu",
                    probs=(0.4, 0.5, 0.6), scores=(0.7, 0.9), nmss=(0.2, 0.4), merges=(0.0, 0.2),
                    norm: str = "foreground", use_rpn: bool = True) -> tuple[Thresholds, dict]:
    """Grid search of (prob, score, NMS[, merge]) maximizing (F1@0.5 + F1@0.7) / 2 on ``val`` (full
    inference, automatic diameter); ``merges`` only for models with a boundary channel. Network
    outputs are computed once per image and probability threshold."""
    best, best_sc, best_th = -1.0, None, Thresholds()
    for p in probs:
        cache: list = []
        for s in (scores if use_rpn else scores[:1]):
            for n in (nmss if use_rpn else nmss[:1]):
                for mg in (merges if net.config.boundary else (0.0,)):
                    th = Thresholds(prob=p, score=s, nms=n, merge=mg)
                    sc = evaluate_model(net, val, thresholds=th, device=device, maps_cache=cache, norm=norm,
                                        use_rpn=use_rpn)
                    obj = (sc["f1_50"] + sc["f1_70"]) / 2
                    log.info("thresholds %s: F1@0.5 %.4f F1@0.7 %.4f", th, sc["f1_50"], sc["f1_70"])
                    if obj > best:
                        best, best_sc, best_th = obj, sc, th
    return best_th, best_sc


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------

def _save_checkpoint(path: Path, net: NusetNet, opt: torch.optim.Optimizer, state: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in osd["param_groups"]]
    path.with_suffix(".json").write_text(json.dumps({**state, "param_groups": groups}, indent=1))


def _load_checkpoint(path: Path, net: NusetNet, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state = json.loads(path.with_suffix(".json").read_text())
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ost: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            ost.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": ost, "param_groups": state.pop("param_groups")})
    return state


def _load_init(net: NusetNet, init: NusetNet) -> None:
    """Copy ``init``'s weights into ``net`` (same widths); head channels ``init`` lacks start at zero."""
    a, b = net.config, init.config
    if (a.widths, a.rpn_level, a.anchor_scales, a.anchor_ratios) != (b.widths, b.rpn_level, b.anchor_scales,
                                                                      b.anchor_ratios):
        raise ValueError(f"init model architecture {b} does not match {a}")
    sd = {k: v.detach().clone() for k, v in init.state_dict().items()}
    own = net.state_dict()
    for k in ("head.weight", "head.bias"):
        if sd[k].shape != own[k].shape:
            t = torch.zeros_like(own[k])
            n = min(t.shape[0], sd[k].shape[0])
            t[:n] = sd[k][:n]
            if k == "head.bias" and t.shape[0] > n:
                t[n:] = -3.0  # borders are rare: start near probability 0.05
            sd[k] = t
    net.load_state_dict(sd)


def _plot(csv_path: Path, png_path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import pandas as pd
    except ImportError:  # pragma: no cover
        return
    df = pd.read_csv(csv_path)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for col in ("loss", "bce", "dice", "rpn_cls", "rpn_box", "boundary"):
        if col in df:
            a1.plot(df["step"], df[col].rolling(5, min_periods=1).mean(), label=col)
    a1.set_xlabel("step"), a1.set_ylabel("training loss"), a1.set_yscale("log"), a1.legend()
    v = df.dropna(subset=["val_f1_50"])
    a2.plot(v["step"], v["val_f1_50"], "o-", label="F1@0.5")
    a2.plot(v["step"], v["val_f1_70"], "o-", label="F1@0.7")
    a2.set_xlabel("step"), a2.set_ylabel("validation F1"), a2.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------

def train_nuset(samples: Sequence[TrainSample], *, synthetic: Sequence[TrainSample] = (),
                val: Sequence[ValImage] = (), out_dir: str | Path, model_config: NusetConfig = NusetConfig(),
                config: TrainConfig = TrainConfig(), synthetic_ratio: float = 1.0, device: str = "auto",
                resume: bool = False, tune: bool = True, meta: dict | None = None,
                on_step: Callable[[int, dict], None] | None = None, init: NusetNet | None = None) -> dict:
    """Train a NuSeT network and write ``out_dir/nuset.safetensors`` + ``nuset.json`` (best on validation).

    Also writes ``checkpoint.safetensors`` (+ ``.json``, resumable with ``resume=True``),
    ``log.csv`` and ``curves.png``. Returns the model metadata written to ``nuset.json``.

    ``init`` fine-tunes an exported network (batch norm folded, so training goes on without batch
    norm); its widths must match ``model_config``. Output channels missing from it (the boundary
    channel, when ``model_config.boundary`` and ``init`` has none) start from zero weights.
    """
    from ...models import save_model

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    torch.manual_seed(config.seed)
    g = np.random.default_rng(config.seed)
    ck = out / "checkpoint.safetensors"
    resuming = resume and ck.exists()
    # a fine-tune of an exported (folded) network trains without batch norm; a resume rebuilds what it saved
    bn = json.loads(ck.with_suffix(".json").read_text()).get("batchnorm", True) if resuming else init is None
    net = NusetNet(NusetConfig.from_dict({**model_config.to_dict(), "batchnorm": bn}))
    if init is not None and not resuming:
        _load_init(net, init)
    net = net.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.small_weight != 1:
        samples, synthetic = ([replace(s, weight=s.weight * small_object_weights(s.labels, factor=config.small_weight))
                               for s in group] for group in (samples, synthetic))
    n_img = max(1, len(samples) + len(synthetic))
    total = config.steps or max(1, config.epochs * n_img // config.batch)
    sampler = _Sampler(samples, synthetic, net.config, config, dev, synthetic_ratio)
    state = {"step": 0, "best": -1.0, "best_step": 0, "bad_evals": 0, "elapsed_s": 0.0, "batchnorm": bn}
    csv_path = out / "log.csv"
    if resuming:
        state = _load_checkpoint(ck, net, opt)
        g = np.random.default_rng([config.seed, state["step"]])
        log.info("resumed at step %d (best %.4f)", state["step"], state["best"])
    elif csv_path.exists():
        csv_path.unlink()
    fields = ["step", "epoch", "time_s", "lr", "loss", "bce", "dice", "rpn_cls", "rpn_box", "boundary",
              "val_f1_50", "val_f1_70"]
    new_csv = not csv_path.exists()
    fh = open(csv_path, "a", newline="")
    writer = csv.DictWriter(fh, fieldnames=fields)
    if new_csv:
        writer.writeheader()
    budget_s = config.max_minutes * 60
    warmup = max(1, min(100, total // 10))

    def sched(s: int) -> float:
        # warm-up, then cosine decay over whichever ends first: the steps or the time budget
        progress = min(1.0, max(s / total, (time.time() - t0) / budget_s))
        return config.lr * (min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress)) + 0.02)
    amp = config.amp and dev.type == "cuda"
    norm = "foreground" if config.fg_norm else "percentile"
    best_path = out / "best.safetensors"
    t0 = time.time() - state["elapsed_s"]
    stop_reason = "steps"
    acc: dict[str, list] = {}

    def _export(path: Path) -> None:
        folded = net.eval().fold_batchnorm()
        from safetensors.torch import save_file
        save_file({k: v.detach().cpu().contiguous() for k, v in folded.state_dict().items()}, str(path))
        net.train()

    while state["step"] < total:
        step = state["step"]
        for pg in opt.param_groups:
            pg["lr"] = sched(step)
        net.train()
        x, y, w, v, boxes = sampler.batch(g)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits, cls, box = net(x, rpn=config.rpn)
        logits = logits.float()
        bce, dice = seg_loss(logits[:, :1], y[:, :1], w, v)
        loss = bce + dice
        bl = torch.zeros((), device=dev)
        if net.config.boundary:
            bl = boundary_loss(logits[:, 1:2], y[:, 1:2], v)
            loss = loss + config.boundary_weight * bl
        rc = rb = torch.zeros((), device=dev)
        if config.rpn:
            cls, box = cls.float(), box.float()
            B, A = cls.shape[:2]
            valid_anchor = F.max_pool2d(v, net.config.stride).permute(0, 2, 3, 1).reshape(B, -1)
            for b in range(B):
                lab, tgt = rpn_targets(sampler.anchors, boxes[b])
                c = cls[b].permute(1, 2, 0).reshape(-1)
                d = box[b].reshape(A, 4, *box.shape[2:]).permute(2, 3, 0, 1).reshape(-1, 4)
                va = valid_anchor[b].repeat_interleave(A) > 0
                l1, l2 = rpn_loss(c, d, lab, tgt, va)
                rc, rb = rc + l1 / B, rb + l2 / B
            loss = loss + config.rpn_weight * (rc + rb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        state["step"] = step = step + 1
        for k, val_ in (("loss", loss), ("bce", bce), ("dice", dice), ("rpn_cls", rc), ("rpn_box", rb),
                        ("boundary", bl)):
            acc.setdefault(k, []).append(float(val_.detach()))
        if on_step is not None:
            on_step(step, {k: vv[-1] for k, vv in acc.items()})
        elapsed = time.time() - t0
        out_of_time = elapsed > config.max_minutes * 60
        if step % config.eval_every == 0 or step == total or out_of_time:
            row = {"step": step, "epoch": round(step * config.batch / n_img, 2), "time_s": round(elapsed, 1),
                   "lr": sched(step), **{k: float(np.mean(vv)) for k, vv in acc.items()}}
            acc = {}
            if val:
                sub = val if config.val_max_images is None else val[: config.val_max_images]
                folded = net.eval().fold_batchnorm().to(dev)
                sc = evaluate_model(folded, sub, device=dev, use_rpn=config.rpn, known_diameter=True, norm=norm)
                row["val_f1_50"], row["val_f1_70"] = sc["f1_50"], sc["f1_70"]
                objective = (sc["f1_50"] + sc["f1_70"]) / 2
                log.info("step %d loss %.4f val F1@0.5 %.4f F1@0.7 %.4f", step, row["loss"], sc["f1_50"], sc["f1_70"])
                if objective > state["best"]:
                    state.update(best=objective, best_step=step, bad_evals=0)
                    _export(best_path)
                else:
                    state["bad_evals"] += 1
            else:
                state.update(best=-row["loss"], best_step=step)
                _export(best_path)
            writer.writerow(row)
            fh.flush()
            state["elapsed_s"] = elapsed
            _save_checkpoint(ck, net, opt, state)
            if val and state["bad_evals"] >= config.patience:
                stop_reason = "early stopping"
                break
            if out_of_time:
                stop_reason = "time budget"
                break
    fh.close()
    try:
        _plot(csv_path, out / "curves.png")
    except Exception as exc:  # a plot must never lose a trained model
        log.warning("could not plot the curves: %s", exc)

    # final model: best weights, thresholds tuned on validation
    from safetensors.torch import load_file

    final = NusetNet(NusetConfig.from_dict({**net.config.to_dict(), "batchnorm": False}))
    final.load_state_dict(load_file(str(best_path)))
    final = final.to(dev).eval()
    th, scores = Thresholds(), {}
    if val and tune:
        th, scores = tune_thresholds(final, val, device=dev, norm=norm, use_rpn=config.rpn)
    elif val:
        scores = evaluate_model(final, val, device=dev, use_rpn=config.rpn, norm=norm)
    cfg_out = {**net.config.to_dict(), "batchnorm": False}
    model_meta = {
        "model": "nuset",
        "format": 1,
        "architecture": cfg_out,
        "pass1_diameter": PASS1_FRACTION * net.config.diameter,
        "norm": norm,
        "use_rpn": config.rpn,
        "normalization": {"train": "foreground (x - median_fg) / std_fg with the truth mask, randomly eroded/dilated"
                          if config.fg_norm else "whole-image percentiles (1, 99.8)",
                          "inference": "two-pass: Otsu foreground at reduced scale, then the coarse mask"},
        "thresholds": asdict(th),
        "training": {**(meta or {}), "config": config.to_dict(), "steps": state["step"], "best_step": state["best_step"],
                     "stop_reason": stop_reason, "wall_time_s": round(time.time() - t_start, 1),
                     "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                     "n_real": len(samples), "n_synthetic": len(synthetic), "synthetic_ratio": synthetic_ratio},
        "validation": scores,
    }
    save_model(out / "nuset", final.cpu().state_dict(), model_meta)
    return model_meta
