"""Validation of a NuSeT network during and after training: F1 on validation images, and the grid
search of the post-processing thresholds saved with the model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ...rescale import estimate_diameter
from .infer import Thresholds, check_image, labels_from_maps, predict_nuset
from .network import NusetNet

if TYPE_CHECKING:  # train imports this module; the dataclass is needed for the annotations only
    from .train import ValImage

log = logging.getLogger(__name__)

__all__ = ["evaluate_model", "tune_thresholds"]


def _gt_diameter(labels: np.ndarray) -> float:
    """Median nucleus diameter (px) of the truth ``labels``, NaN for an image without nuclei."""
    d = estimate_diameter(labels, min_area=10)
    return d if np.isfinite(d) else float("nan")


def evaluate_model(net: NusetNet, val: Sequence[ValImage], *, thresholds: Thresholds = Thresholds(),
                   device: str | torch.device = "cpu", use_rpn: bool = True, two_pass: bool = True,
                   known_diameter: bool = False, maps_cache: list | None = None, norm: str = "foreground") -> dict:
    """F1 at IoU 0.5 and 0.7 of ``net`` on ``val``: the mean over images, then over data sets.

    Parameters
    ----------
    net : NusetNet
        The network, batch norm folded or not (it is put in eval mode).
    val : sequence of ValImage
        Validation images at their original resolution with their truth.
    thresholds : Thresholds
        Post-processing thresholds.
    device : str or torch.device
        Where the network runs.
    use_rpn, two_pass, norm
        As in :func:`~nucleoscope.segment.nuset.infer.predict_nuset`.
    known_diameter : bool
        The truth's median diameter sets the scale (faster than estimating it; for early stopping).
    maps_cache : list, optional
        Network outputs per image: read where present, appended where missing, so a threshold search
        runs the network once per image.

    Returns
    -------
    dict
        ``{"f1_50", "f1_70", "per_dataset": {name: {"f1_50", "f1_70", "merges", "splits", "n"}}}``
        (an image without a data set name counts as ``"val"``).
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
    """Grid search of the thresholds maximizing (F1@0.5 + F1@0.7) / 2 on ``val``.

    Full inference with the automatic diameter. The network runs once per image and probability
    threshold; the other thresholds only change the post-processing.

    Parameters
    ----------
    net : NusetNet
        The network to tune for.
    val : sequence of ValImage
        Validation images with their truth.
    device : str or torch.device
        Where the network runs.
    probs, scores, nmss, merges : sequence of float
        The grid: foreground probability, RPN score and NMS IoU (those two only with ``use_rpn``), and
        the weak-border merge (only for models with a boundary channel).
    norm, use_rpn
        As in :func:`evaluate_model`.

    Returns
    -------
    thresholds : Thresholds
        The best grid point (the first of equals).
    scores : dict
        Its :func:`evaluate_model` result.
    """
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

