"""GPU-side training crops: the sampler that draws augmented, normalized crops from the stored
training images, and the targets it builds (foreground, borders between touching nuclei).

A crop is drawn by one affine resampling (``grid_sample``) that does the scale jitter (nucleus
diameter log-uniform in ``scale_range x`` the model's), a 90° rotation plus a small rotation, a mirror
flip and the crop; labels are resampled with nearest neighbour so the RPN's boxes come from the
augmented labels exactly. Intensity jitter (gamma, gain, offset, noise, blur) and the optional
per-nucleus brightness and background-ramp augmentations are applied to the window the crop can
reach *before* the normalization, so the foreground statistics see the same jitter as the pixels.
All of it runs on the training device.

Every random draw comes from the ``numpy.random.Generator`` passed to :meth:`_Sampler.batch` (plus
torch's global generator for the noise fields), in a fixed order: a training run is reproducible from
its seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .network import NusetConfig
from .rpn import boxes_from_labels, make_anchors

if TYPE_CHECKING:  # train imports this module; the dataclasses are needed for the annotations only
    from .train import TrainConfig, TrainSample

__all__ = ["BOUNDARY_RADIUS", "boundary_target"]

BOUNDARY_RADIUS = 2  #: px (at the model's scale) on each side of a border between touching nuclei


def boundary_target(labels: torch.Tensor, radius: int = BOUNDARY_RADIUS) -> torch.Tensor:
    """Training targets of a model with a boundary channel.

    Parameters
    ----------
    labels : torch.Tensor
        ``(H, W)`` instance labels (any dtype), 0 = background.
    radius : int
        Half-width (px, square neighbourhood) of the border band.

    Returns
    -------
    torch.Tensor
        ``(2, H, W)`` float: the foreground, and the pixels of a nucleus within ``radius`` px of a pixel
        of *another* nucleus -- the borders between touching nuclei, not the outlines against the
        background, which the foreground channel already gives.
    """
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
        """``cfg.batch`` crops: images, targets, border weights, valid masks ``(B, 1|2, crop, crop)``
        float and, per crop, its nuclei's boxes (px of the crop)."""
        xs, ys, ws, vs, boxes = zip(*(self._crop(g) for _ in range(self.cfg.batch)))
        st = lambda t: torch.stack(t)[:, None]
        return st(xs), torch.stack(ys), st(ws), st(vs), list(boxes)

    def _crop(self, g: np.random.Generator):
        """One augmented crop drawn from a random stored image (the draws' order fixes a run's crops)."""
        c, cfg = self.cfg.crop, self.cfg
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
        target = boundary_target(lab) if self.mcfg.boundary else (lab > 0).float()[None]
        return out[0] * valid + (1 - valid) * bg, target, out[1].clamp(min=1.0), valid, boxes_from_labels(lab.long())

