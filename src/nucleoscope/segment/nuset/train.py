"""Training of the NuSeT network: the training data (:class:`TrainSample`, :class:`ValImage`,
:func:`prepare_sample`), the hyper-parameters (:class:`TrainConfig`) and the loop (:func:`train_nuset`)
with early stopping.

The loop's parts live beside it: the augmented crops in :mod:`.augment`, validation and threshold
tuning in :mod:`.tune` (:func:`evaluate_model` and :func:`tune_thresholds` are re-exported here), the
checkpoints in :mod:`.checkpoint`, and the training-curves figure in :mod:`nucleoscope.report.figures`.
Everything here takes arrays: reading data set folders is :func:`nucleoscope.io.read_datasets`'s
job, the NPZ pack :mod:`.pack`'s.

Design notes
------------
* Each training image is stored once at a *storage scale* where its median nucleus is at most
  ``max_zoom x`` the model's diameter (never enlarged), together with its border weight map.
* A training crop is drawn by one affine resampling (``grid_sample``) that does the scale jitter
  (nucleus diameter log-uniform in ``scale_range x`` the model's), a 90° rotation plus a small
  rotation, a mirror flip and the crop; labels are resampled with nearest neighbour so boxes for the
  RPN come from the augmented labels exactly. All of it runs on the training device.
* Intensity jitter (gamma, gain, offset, noise, blur) is applied to the stored image before the
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

from ...preprocess import normalize_percentile
from ...rescale import estimate_diameter, rescale_image, resize_labels
from .augment import _Sampler
from .checkpoint import _export_folded, _load_checkpoint, _load_init, _save_checkpoint
from .infer import PASS1_FRACTION, Thresholds, check_image
from .losses import border_weight_map, boundary_loss, seg_loss, small_object_weights
from .network import NusetConfig, NusetNet
from .rpn import rpn_loss, rpn_targets
from .tune import evaluate_model, tune_thresholds

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainSample", "ValImage", "prepare_sample", "set_threads", "train_nuset",
           "tune_thresholds", "evaluate_model"]

#: columns of ``log.csv``: one row per validation (every ``eval_every`` steps, and at the end)
_LOG_FIELDS = ["step", "epoch", "time_s", "lr", "loss", "bce", "dice", "rpn_cls", "rpn_box", "boundary",
               "val_f1_50", "val_f1_70"]


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

    Parameters
    ----------
    image : np.ndarray
        ``(Y, X)`` raw intensities.
    labels : np.ndarray
        ``(Y, X)`` integer instance labels, 0 = background.
    model_diameter : float
        Nucleus diameter (px) the model works at.
    max_zoom : float
        The image is shrunk until its median nucleus is at most ``max_zoom x model_diameter`` (never
        enlarged): the stored images stay small and still hold what the scale jitter reaches.
    name, source : str
        Recorded with the sample (image name; data set, or ``"synthetic"``).
    border_w0 : float
        U-Net border weight between touching nuclei.

    Returns
    -------
    TrainSample or None
        ``None`` for an image without nuclei (nothing to learn the scale from).
    """
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
# The loop
# ----------------------------------------------------------------------------------------------------

def _resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _build_net(model_config: NusetConfig, init: NusetNet | None, checkpoint: Path | None,
               dev: torch.device) -> tuple[NusetNet, bool]:
    """The network to train on ``dev`` and whether it has batch norm.

    A fine-tune of an exported (folded) ``init`` trains without batch norm; a resume from
    ``checkpoint`` rebuilds what it saved (its weights are loaded later, with the optimizer's).
    """
    if checkpoint is not None:
        bn = json.loads(checkpoint.with_suffix(".json").read_text()).get("batchnorm", True)
    else:
        bn = init is None
    net = NusetNet(NusetConfig.from_dict({**model_config.to_dict(), "batchnorm": bn}))
    if init is not None and checkpoint is None:
        _load_init(net, init)
    return net.to(dev), bn


class _Schedule:
    """Learning rate: linear warm-up, then cosine decay over whichever ends first, the steps or the time
    budget (so a run cut by ``max_minutes`` still ends at a low rate)."""

    def __init__(self, config: TrainConfig, total: int, t0: float) -> None:
        self.lr, self.total, self.t0 = config.lr, total, t0
        self.budget_s = config.max_minutes * 60
        self.warmup = max(1, min(100, total // 10))

    def __call__(self, s: int) -> float:
        progress = min(1.0, max(s / self.total, (time.time() - self.t0) / self.budget_s))
        return self.lr * (min(1.0, (s + 1) / self.warmup) * 0.5 * (1 + math.cos(math.pi * progress)) + 0.02)


def _train_step(net: NusetNet, opt: torch.optim.Optimizer, sampler: _Sampler, g: np.random.Generator,
                config: TrainConfig, amp: bool) -> dict[str, float]:
    """One optimizer step on a fresh batch; returns the loss and its terms (the log's loss columns)."""
    dev = sampler.dev
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
        # an anchor counts where any pixel of its cell lies inside the image (crops reach past its edge)
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
    return {k: float(t.detach()) for k, t in (("loss", loss), ("bce", bce), ("dice", dice), ("rpn_cls", rc),
                                              ("rpn_box", rb), ("boundary", bl))}


def _validate(net: NusetNet, row: dict, state: dict, val: Sequence[ValImage], config: TrainConfig,
              dev: torch.device, norm: str, best_path: Path) -> None:
    """Score ``net`` on ``val`` into ``row`` and export it to ``best_path`` if it is the best so far
    (without validation images, the latest is the best); ``state`` tracks the best and the validations
    since it."""
    if not val:
        state.update(best=-row["loss"], best_step=row["step"])
        _export_folded(net, best_path)
        return
    sub = val if config.val_max_images is None else val[: config.val_max_images]
    folded = net.eval().fold_batchnorm().to(dev)
    # the truth's diameter sets the scale: faster than estimating it, and the same for every validation
    sc = evaluate_model(folded, sub, device=dev, use_rpn=config.rpn, known_diameter=True, norm=norm)
    row["val_f1_50"], row["val_f1_70"] = sc["f1_50"], sc["f1_70"]
    objective = (sc["f1_50"] + sc["f1_70"]) / 2
    log.info("step %d loss %.4f val F1@0.5 %.4f F1@0.7 %.4f", row["step"], row["loss"], sc["f1_50"], sc["f1_70"])
    if objective > state["best"]:
        state.update(best=objective, best_step=row["step"], bad_evals=0)
        _export_folded(net, best_path)
    else:
        state["bad_evals"] += 1


def _final_model(net: NusetNet, best_path: Path, val: Sequence[ValImage], config: TrainConfig, dev: torch.device,
                 norm: str, tune: bool, thresholds: Thresholds | None = None) -> tuple[NusetNet, Thresholds, dict]:
    """The best weights as an exported (folded) network, its thresholds (tuned on ``val`` with ``tune``,
    else ``thresholds`` or the defaults) and its validation scores (empty without validation images)."""
    from safetensors.torch import load_file

    final = NusetNet(NusetConfig.from_dict({**net.config.to_dict(), "batchnorm": False}))
    final.load_state_dict(load_file(str(best_path)))
    final = final.to(dev).eval()
    th, scores = thresholds or Thresholds(), {}
    if val and tune:
        th, scores = tune_thresholds(final, val, device=dev, norm=norm, use_rpn=config.rpn)
    elif val:
        scores = evaluate_model(final, val, device=dev, use_rpn=config.rpn, norm=norm)
    return final, th, scores


def _model_meta(net: NusetNet, config: TrainConfig, norm: str, th: Thresholds, scores: dict,
                training: dict) -> dict:
    """The content of ``nuset.json``: architecture, normalization, thresholds, training record, scores."""
    return {
        "model": "nuset",
        "format": 1,
        "architecture": {**net.config.to_dict(), "batchnorm": False},
        "pass1_diameter": PASS1_FRACTION * net.config.diameter,
        "norm": norm,
        "use_rpn": config.rpn,
        "normalization": {"train": "foreground (x - median_fg) / std_fg with the truth mask, randomly eroded/dilated"
                          if config.fg_norm else "whole-image percentiles (1, 99.8)",
                          "inference": "two-pass: Otsu foreground at reduced scale, then the coarse mask"},
        "thresholds": asdict(th),
        "training": training,
        "validation": scores,
    }


def set_threads(n: int) -> None:
    """Torch's CPU threads for training (the command line's ``--threads``)."""
    torch.set_num_threads(int(n))


def train_nuset(samples: Sequence[TrainSample], *, synthetic: Sequence[TrainSample] = (),
                val: Sequence[ValImage] = (), out_dir: str | Path, model_config: NusetConfig = NusetConfig(),
                config: TrainConfig = TrainConfig(), synthetic_ratio: float = 1.0, device: str = "auto",
                resume: bool = False, tune: bool = True, meta: dict | None = None,
                on_step: Callable[[int, dict], None] | None = None, init: NusetNet | None = None,
                plot_curves: Callable[[Path, Path], None] | None = None,
                thresholds: Thresholds | None = None) -> dict:
    """Train a NuSeT network and write ``out_dir/nuset.safetensors`` + ``nuset.json`` (best on validation).

    Also writes ``checkpoint.safetensors`` (+ ``.json``, resumable with ``resume=True``), ``best.safetensors``,
    ``log.csv`` and, with ``plot_curves`` (e.g. :func:`nucleoscope.report.write_training_curves`, which
    the command line passes; the core does not import the report), ``curves.png``.

    Parameters
    ----------
    samples, synthetic : sequence of TrainSample
        Real and synthetic training images (:func:`prepare_sample`); crops are drawn from the synthetic
        ones ``synthetic_ratio`` times as often as from the real ones.
    val : sequence of ValImage
        Validation images: early stopping and threshold tuning. Without them the latest weights are kept.
    out_dir : str or Path
        Output folder, created if needed.
    model_config : NusetConfig
        The architecture.
    config : TrainConfig
        Hyper-parameters, seed included: a run is reproducible from it.
    device : str
        ``"auto"`` | ``"cpu"`` | ``"cuda"``.
    resume : bool
        Continue from ``out_dir/checkpoint.safetensors`` when it exists.
    tune : bool
        Grid-search the thresholds on ``val`` at the end (:func:`tune_thresholds`).
    meta : dict, optional
        Extra entries for the model JSON's ``training`` record (the data, the command).
    on_step : callable, optional
        Called as ``on_step(step, losses)`` after every optimizer step, ``losses`` a dict of floats.
    init : NusetNet, optional
        Fine-tune this exported network (batch norm folded, so training goes on without batch norm); its
        widths must match ``model_config``. Output channels missing from it (the boundary channel, when
        ``model_config.boundary`` and ``init`` has none) start from zero weights.
    thresholds : Thresholds, optional
        The post-processing thresholds saved with the model when they are not tuned (no ``val``, or
        ``tune=False``); e.g. the fine-tuned model's own. Default: :class:`Thresholds`' defaults.

    Returns
    -------
    dict
        The model metadata written to ``nuset.json``.
    """
    # Longer than the other functions on purpose: the run's state (the step, the best so far, the random
    # streams, the log) reads top to bottom in one place; each step it takes is a named helper above.
    from .weights import save_model

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = _resolve_device(device)
    torch.manual_seed(config.seed)
    g = np.random.default_rng(config.seed)
    ck = out / "checkpoint.safetensors"
    resuming = resume and ck.exists()
    net, bn = _build_net(model_config, init, ck if resuming else None, dev)
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
        # a stream of its own per resume point: the crops after a resume do not repeat the first run's
        g = np.random.default_rng([config.seed, state["step"]])
        log.info("resumed at step %d (best %.4f)", state["step"], state["best"])
    elif csv_path.exists():
        csv_path.unlink()
    new_csv = not csv_path.exists()
    amp = config.amp and dev.type == "cuda"
    norm = "foreground" if config.fg_norm else "percentile"
    best_path = out / "best.safetensors"
    t0 = time.time() - state["elapsed_s"]
    sched = _Schedule(config, total, t0)
    stop_reason = "steps"
    acc: dict[str, list] = {}
    with open(csv_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_LOG_FIELDS)
        if new_csv:
            writer.writeheader()
        while state["step"] < total:
            step = state["step"]
            for pg in opt.param_groups:
                pg["lr"] = sched(step)
            net.train()
            for k, value in _train_step(net, opt, sampler, g, config, amp).items():
                acc.setdefault(k, []).append(value)
            state["step"] = step = step + 1
            if on_step is not None:
                on_step(step, {k: vv[-1] for k, vv in acc.items()})
            elapsed = time.time() - t0
            out_of_time = elapsed > config.max_minutes * 60
            if not (step % config.eval_every == 0 or step == total or out_of_time):
                continue
            row = {"step": step, "epoch": round(step * config.batch / n_img, 2), "time_s": round(elapsed, 1),
                   "lr": sched(step), **{k: float(np.mean(vv)) for k, vv in acc.items()}}
            acc = {}
            _validate(net, row, state, val, config, dev, norm, best_path)
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
    if plot_curves is not None:
        try:
            plot_curves(csv_path, out / "curves.png")
        except Exception as exc:  # a plot must never lose a trained model
            log.warning("could not plot the curves: %s", exc)

    final, th, scores = _final_model(net, best_path, val, config, dev, norm, tune, thresholds)
    training = {**(meta or {}), "config": config.to_dict(), "steps": state["step"], "best_step": state["best_step"],
                "stop_reason": stop_reason, "wall_time_s": round(time.time() - t_start, 1),
                "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                "n_real": len(samples), "n_synthetic": len(synthetic), "synthetic_ratio": synthetic_ratio}
    model_meta = _model_meta(net, config, norm, th, scores, training)
    save_model(out / "nuset", final.cpu().state_dict(), model_meta)
    return model_meta
