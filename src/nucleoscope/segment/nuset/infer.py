"""NuSeT inference: rescale to the training diameter, two-pass foreground normalization, RPN-seeded
watershed, labels mapped back to the input grid.

The steps (SPEC §2, §4):

1. **Scale.** A cheap first estimate of the nucleus diameter comes from an Otsu mask split at its
   distance-transform peaks (:func:`nucleoscope.rescale.estimate_diameter`) on a small copy of the
   image; ``diameter`` or ``scale`` override it.
2. **Pass 1** at a reduced resolution (nuclei at ``pass1_diameter`` px): the image is normalized by the
   Otsu foreground and the network gives a coarse mask and proposals; the median diameter of those
   coarse instances refines the scale (NuSeT sizes its anchors from the coarse mask the same way).
3. **Pass 2** at the training diameter: the image is re-normalized by the coarse foreground
   (``(x - median_fg) / std_fg``), the network predicts foreground probabilities and proposals, the
   proposals go through score threshold + NMS, and their box centres seed a watershed of the
   foreground mask.
4. Labels are mapped back: the probability map is upsampled bilinearly to the input grid and
   thresholded there, so outlines keep the input's resolution; each foreground pixel takes the id of
   the (1 px grown) instance under it.

The modules, one noun each: :mod:`.scale` (size, SNR and background unevenness of the input),
:mod:`.predict` (network -> dense maps, tiled), :mod:`.instances` (maps -> labels) and :mod:`.weights`
(model files -> a network on a device). This one holds the orchestration and its result types.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ... import InputError
from ...preprocess import _otsu_fg as _otsu_mask
from ...preprocess import foreground_normalize, normalize_percentile
from ...rescale import estimate_diameter
from ..details import SegmentDetails
from .instances import labels_from_maps, proposals
from .network import NusetNet
from .predict import DEFAULT_TILE, check_precision, predict_maps, resize_image
from .scale import EMPTY_SNR, _proposal_diameter, estimated_diameter, flatten_uneven
from .weights import _get_model, _resolve_device

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TILE", "PASS1_FRACTION", "NusetDetails", "NusetMaps", "Thresholds", "check_image",
           "labels_from_maps", "predict_nuset", "segment_nuset"]

#: Pass 1 runs with nuclei at this fraction of the training diameter (cheaper; the network is trained
#: down to 0.55 x), unless the model's JSON says otherwise.
PASS1_FRACTION = 0.625
#: Images are enlarged at most this much for the network (the nuclei of smaller images stay small).
MAX_UPSCALE = 4.0


@dataclass(frozen=True)
class Thresholds:
    """Post-processing thresholds, tuned on validation data and stored with the model."""

    prob: float = 0.5      #: foreground probability
    score: float = 0.9     #: proposal score
    nms: float = 0.3       #: NMS IoU
    min_relative_area: float = 0.2  #: NuSeT: remove objects below 1/5 of the mean area
    #: weight of the mask's distance transform (in nucleus diameters) added to the probability in
    #: the watershed relief: a tie-break on the probability's saturated plateau (see
    #: :func:`instances_from_maps`); 0 floods the probability alone (nuset_v1 before 2026-11-22)
    relief_dt: float = 0.01
    #: models with a boundary channel: its weight in the watershed relief, so cuts follow the predicted
    #: borders between touching nuclei (0.5 tuned with nuset_v3; 1 and 2 scored 0.001 lower)
    boundary: float = 0.5
    #: models with a boundary channel: neighbours whose shared border scores below this mean boundary
    #: probability are one nucleus that two proposals over-seeded, and are merged (0: never)
    merge: float = 0.0
    #: touching pieces whose union has at least this solidity, the smaller piece at most half and the
    #: union at most 1.3 x the median nucleus, are one nucleus cut by a spurious seed, and are merged
    #: (:func:`nucleoscope.postprocess.merge_convex_pairs`; 0: never)
    convex: float = 0.0
    #: models with a boundary channel: ``convex`` merges a pair only where the mean boundary probability
    #: on its shared edge is below this (1: no condition). Between ``merge`` and this the predicted
    #: border is ambiguous and the shape decides; above it the network's border is trusted (without
    #: this, touching dim nuclei were merged)
    convex_border: float = 1.0


@dataclass
class NusetDetails(SegmentDetails):
    """What :func:`segment_nuset` did (and :class:`nucleoscope.segment.SegmentDetails`' shared fields:
    ``diameter_px``, the nucleus diameter in px of the input image it was rescaled from; ``flattened``,
    the background was uneven (a ramp, vignetting) and a fitted quadratic surface was subtracted first,
    see :data:`.scale.UNEVEN_BACKGROUND`; ``timings``, seconds per stage).

    Attributes
    ----------
    diameter_source : str
        ``"given"``, ``"scale"``, ``"estimated"``, ``"estimated (sparse rendering)"`` (a localisation
        rendering, see :func:`nucleoscope.segment.sizing.estimate_diameter_sparse`), ``"default"`` (nothing to
        measure) or ``"empty"``
        (no foreground above the noise: no nuclei, the network did not run).
    scale : float
        Factor applied to the input for pass 2 (``model diameter / diameter``).
    n_proposals : int
        Proposals kept after score threshold and NMS (pass 2).
    n_seeds : int
        Watershed seeds (proposal centres inside the mask, plus one per seedless component).
    thresholds : Thresholds
    prob : ndarray or None
        Foreground probability map on the input grid (only with ``return_prob=True``).
    """

    diameter_source: str
    scale: float
    n_proposals: int
    n_seeds: int
    thresholds: Thresholds
    prob: np.ndarray | None = None

    @property
    def diameter(self) -> float:
        """Alias of ``diameter_px`` (the name before the shared details base)."""
        return self.diameter_px



def _shape(image_shape, f: float) -> tuple[int, int]:
    return max(16, int(round(image_shape[0] * f))), max(16, int(round(image_shape[1] * f)))


@dataclass
class NusetMaps:
    """Network outputs of the second pass (at the model's scale) and how the image was rescaled."""

    prob: np.ndarray          #: (h, w) foreground probability at the network's scale
    cls: np.ndarray           #: (A, h/s, w/s) proposal logits
    box: np.ndarray           #: (4A, h/s, w/s) box deltas
    shape: tuple[int, int]    #: input image shape
    diameter: float           #: nucleus diameter in input px
    diameter_source: str
    scale: float              #: pass-2 factor
    timings: dict = field(default_factory=dict)
    empty: bool = False       #: no foreground above the noise: no nuclei
    boundary: np.ndarray | None = None  #: (h, w) border-between-nuclei probability (boundary models)
    flattened: bool = False   #: an uneven background was subtracted first (:data:`.scale.UNEVEN_BACKGROUND`)



def predict_nuset(image: np.ndarray, net: NusetNet, *, thresholds: Thresholds = Thresholds(),
                  pass1_diameter: float | None = None, diameter: float | None = None, scale: float | None = None,
                  two_pass: bool = True, device: str | torch.device = "cpu",
                  tile: tuple[int, int] | None = DEFAULT_TILE, norm: str = "foreground",
                  use_rpn: bool = True, precision: str = "float32") -> NusetMaps:
    """Rescale + pass 1 + pass 2 of :func:`segment_nuset` (everything before the instances).

    ``image`` must be a finite 2-D float32 array; ``norm`` is the normalization the model was trained
    with (``"foreground"``, or ``"percentile"`` for the ablation models); see :func:`segment_nuset` for
    the other parameters.
    """
    if norm not in ("foreground", "percentile"):
        raise ValueError(f"norm must be 'foreground' or 'percentile', got {norm!r}")
    t0 = time.perf_counter()
    cfg = net.config
    th = thresholds
    pass1_d = float(pass1_diameter or PASS1_FRACTION * cfg.diameter)
    timings: dict[str, float] = {}
    src_given = None
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        src_given = (cfg.diameter / scale, "scale")
    elif diameter is not None:
        if not diameter > 0:
            raise ValueError(f"diameter must be > 0 px, got {diameter}")
        src_given = (float(diameter), "given")
    image, coarse, flattened = flatten_uneven(image)
    d0, snr = coarse.diameter, coarse.snr
    if snr < EMPTY_SNR:
        # no nucleus stands out of the noise: a network normalized on noise would "find" thousands
        log.info("no foreground above the noise (SNR %.2f < %.1f): no nuclei", snr, EMPTY_SNR)
        d = cfg.diameter if src_given is None else src_given[0]
        return NusetMaps(np.zeros((16, 16), np.float32), np.zeros((cfg.n_anchors, 2, 2), np.float32),
                         np.zeros((4 * cfg.n_anchors, 2, 2), np.float32), tuple(image.shape), float(d), "empty",
                         1.0, {"estimate": time.perf_counter() - t0}, empty=True, flattened=flattened)
    if src_given is not None:
        d_src, src = src_given
    else:
        d_src, src = estimated_diameter(image, d0, default=cfg.diameter)
    timings["estimate"] = time.perf_counter() - t0

    # ---- pass 1: coarse, at reduced resolution, Otsu-foreground normalization
    t = time.perf_counter()
    f1 = min(pass1_d / d_src, MAX_UPSCALE)
    x1 = resize_image(image, _shape(image.shape, f1))
    x1n = foreground_normalize(x1, _otsu_mask(x1)) if norm == "foreground" else normalize_percentile(x1)
    prob1, cls1, box1, _ = predict_maps(net, x1n, device=device, tile=tile, precision=precision)
    if src.startswith("estimated"):
        # NuSeT sizes its anchors from the median nucleus of the coarse mask; we rescale the image to
        # the anchors instead. The median proposal box is that size without a watershed at this stage.
        if use_rpn:
            d1 = _proposal_diameter(proposals(cls1, box1, cfg, score_thresh=th.score, nms_thresh=th.nms)[0])
        else:
            d1 = estimate_diameter(prob1 > th.prob, min_area=4)
        if np.isfinite(d1):
            d_src = d1 / f1
    timings["pass1"] = time.perf_counter() - t

    # ---- pass 2: at the training diameter, re-normalized by the coarse foreground
    t = time.perf_counter()
    f2 = min(cfg.diameter / d_src, MAX_UPSCALE)
    x2 = resize_image(image, _shape(image.shape, f2))
    if norm == "percentile":
        x2n = normalize_percentile(x2)
    elif two_pass:
        coarse = resize_image(prob1, x2.shape) > th.prob
        x2n = foreground_normalize(x2, coarse)
    else:
        x2n = foreground_normalize(x2, _otsu_mask(x2))
    prob, cls, box, boundary = predict_maps(net, x2n, device=device, tile=tile, precision=precision)
    timings["pass2"] = time.perf_counter() - t
    return NusetMaps(prob, cls, box, tuple(image.shape), float(d_src), src, float(f2), timings, boundary=boundary,
                     flattened=flattened)



def check_image(image: np.ndarray) -> np.ndarray:
    """Validate a (Y, X) image and return it as float32 (raises :class:`nucleoscope.InputError`)."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(f"image must be 2-D (Y, X), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError("image is empty")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise InputError(f"image must be real-valued, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError("image contains NaN or infinite values")
    return arr


def segment_nuset(image: np.ndarray, *, spacing: float | None = None, diameter: float | None = None,
                  model: Any = None, tile: tuple[int, int] | None = DEFAULT_TILE, scale: float | None = None,
                  device: str = "auto", diameter_um: float | None = None, prob_thresh: float | None = None,
                  score_thresh: float | None = None, nms_thresh: float | None = None,
                  use_rpn: bool | None = None, two_pass: bool = True, return_prob: bool = False,
                  precision: str = "float32") -> tuple[np.ndarray, NusetDetails]:
    """Segment nuclei with the NuSeT network (U-Net + RPN-seeded watershed).

    Parameters
    ----------
    image : ndarray (Y, X)
        Fluorescence image, any real dtype; not modified.
    spacing : float, optional
        Pixel size in µm; needed only with ``diameter_um``.
    diameter : float, optional
        Typical nucleus diameter in px; skips the automatic estimate.
    model : optional
        ``None`` for the bundled model, a model name or ``.safetensors`` path, or a ``(net, meta)`` pair.
    tile : (core, margin) or None
        Internal tile size (px at the network's scale); ``None`` disables tiling.
    scale : float, optional
        Explicit rescale factor for pass 2 (downscale-segment-upscale); overrides ``diameter``.
    device : {"auto", "cpu", "cuda"}
    diameter_um : float, optional
        Nucleus diameter in µm (with ``spacing``).
    prob_thresh, score_thresh, nms_thresh : float, optional
        Override the model's tuned thresholds.
    use_rpn : bool, optional
        Seed the watershed with proposals (``False``: connected components of the mask). Default: as
        the model was trained.
    two_pass : bool
        Re-normalize by the coarse foreground and predict again (``False``: one pass normalized by
        the Otsu foreground).
    return_prob : bool
        Keep the foreground probability map (input grid) in the details.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network: ``"bfloat16"`` runs the convolutions ~2x faster on CPUs with native
        bfloat16 (AVX512-BF16, AMX; refused elsewhere) at a small cost in agreement (docs/nuset.md,
        "Speed"); the default gives the same labels on every machine.

    Returns
    -------
    labels : ndarray (Y, X) int32
        0 = background, nuclei 1..N.
    details : NusetDetails

    Examples
    --------
    >>> from nucleoscope.synth import nuclei_field            # doctest: +SKIP
    >>> sample = nuclei_field((256, 256), rng=0)              # doctest: +SKIP
    >>> labels, details = segment_nuset(sample.image)         # doctest: +SKIP
    """
    t0 = time.perf_counter()
    arr = check_image(image)
    dev = _resolve_device(device)
    check_precision(precision, dev)
    net, meta = _get_model(model, dev)
    th = Thresholds(**meta["thresholds"]) if meta.get("thresholds") else Thresholds()
    # only the given overrides change: every other stored threshold is kept as the model has it
    th = replace(th, **{k: v for k, v in (("prob", prob_thresh), ("score", score_thresh), ("nms", nms_thresh))
                        if v is not None})
    if diameter_um is not None:
        if not spacing:
            raise InputError("diameter_um needs the pixel size (spacing, µm per px)")
        diameter = diameter_um / spacing
    if use_rpn is None:
        use_rpn = bool(meta.get("use_rpn", True))
    maps = predict_nuset(arr, net, thresholds=th, pass1_diameter=meta.get("pass1_diameter"), diameter=diameter,
                         scale=scale, two_pass=two_pass, device=dev, tile=tile,
                         norm=meta.get("norm", "foreground"), use_rpn=use_rpn, precision=precision)
    t = time.perf_counter()
    labels, prob_up, n_prop, n_seeds = labels_from_maps(maps, net.config, th, use_rpn=use_rpn)
    timings = dict(maps.timings)
    timings["postprocess"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    warnings = []
    if not maps.empty and maps.diameter * MAX_UPSCALE < net.config.diameter:
        warnings.append(f"nuclei ~{maps.diameter:.1f} px across are below NuSeT's range (it enlarges images at "
                        f"most {MAX_UPSCALE:g}x, to nuclei of {net.config.diameter:g} px): small nuclei may be "
                        f"missed or merged; segment a higher magnification")
        log.warning("%s", warnings[-1])
    details = NusetDetails(diameter_px=maps.diameter, diameter_source=maps.diameter_source, scale=maps.scale,
                           n_proposals=n_prop, n_seeds=n_seeds, thresholds=th, timings=timings,
                           prob=prob_up if return_prob else None, flattened=maps.flattened, warnings=warnings)
    return labels, details
