"""NuSeT dense prediction: a normalized image at the network's scale -> foreground, boundary and RPN maps.

:func:`predict_maps` pads the image to the U-Net's 16 px grid and runs the network, in tiles of
:data:`DEFAULT_TILE` when the image is larger than one; :func:`resize_image` is the fast (torch) resize
of the inference path. The maps become labels in :mod:`.instances`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..._errors import InputError
from ...tiling import TilingConfig, predict_tiled
from .network import NusetNet

__all__ = ["DEFAULT_TILE", "PRECISIONS", "check_precision", "predict_maps", "resize_image"]

#: Internal tiles (px at the network's scale): core size and margin on each side. With 64 px of
#: context (4 nucleus diameters) tiled labels differ from untiled ones in ~2 pixels per million
#: (measured on BBBC039 fields), for 27% overhead instead of 41% with 96 px.
DEFAULT_TILE = (1024, 96)

#: arithmetic of the network: float32 (default, the same labels on every machine) or bfloat16 (oneDNN
#: autocast: ~2x faster convolutions on CPUs with AVX512-BF16/AMX; labels differ slightly, docs/nuset.md)
PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and this device runs it natively, else an
    :class:`nucleoscope.InputError` (bfloat16 emulated on an older CPU is slower than float32)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bfloat16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise InputError("precision bfloat16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX); use float32")
    return precision


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (area-averaging when shrinking) with torch; float32 out.

    Used instead of :func:`nucleoscope.rescale.rescale_image` on the inference path for speed: the
    torch kernel with ``antialias=True`` is ~10x faster than scikit-image's Gaussian + spline resize
    on large images, and the result is equivalent for a network input.
    """
    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape) == shape:
        return np.asarray(image, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    shrink = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    return out[0, 0].numpy()


def _forward(net: NusetNet, x: np.ndarray, device: torch.device, precision: str = "float32"):
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(device)
    if device.type == "cpu":
        t = t.contiguous(memory_format=torch.channels_last)  # see weights._prepare
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        logits, cls, box = net(t)
    return torch.sigmoid(logits)[0].float().cpu().numpy(), cls[0].float().cpu().numpy(), box[0].float().cpu().numpy()


@torch.inference_mode()
def predict_maps(net: NusetNet, x: np.ndarray, *, device: str | torch.device = "cpu",
                 tile: tuple[int, int] | None = DEFAULT_TILE, precision: str = "float32"):
    """Foreground probability and RPN outputs of a normalized image at the network's scale.

    Parameters
    ----------
    net : NusetNet
    x : ndarray (H, W) float32
        Normalized image, already rescaled to the model's diameter.
    tile : (core, margin) or None
        Predict in tiles of ``core`` px with ``margin`` px of context on each side when the image is
        larger than one tile (bounded memory; :func:`nucleoscope.tiling.predict_tiled` with
        :func:`tiling_config`); ``None`` predicts the whole image at once.
    precision : {"float32", "bfloat16"}
        Arithmetic of the network (:data:`PRECISIONS`).

    Returns
    -------
    prob : ndarray (H, W) float32
    cls : ndarray (A, ceil(H/s), ceil(W/s)) float32
        Proposal logits per anchor at stride ``s`` (``H``, ``W`` padded to multiples of 16).
    box : ndarray (4A, ceil(H/s), ceil(W/s)) float32
        Box regression deltas.
    boundary : ndarray (H, W) float32 or None
        Probability of a border between touching nuclei (models with a boundary channel).
    """
    device = torch.device(device)
    h, w = x.shape
    H, W = -(-h // 16) * 16, -(-w // 16) * 16
    # reflect-pad to multiples of 16 (a 4-level U-Net); 'edge' when the image is too small to reflect
    mode = "reflect" if (H - h < h and W - w < w) else "edge"
    xp = np.pad(x, ((0, H - h), (0, W - w)), mode=mode) if (H, W) != (h, w) else x
    n_out = 2 if net.config.boundary else 1
    if tile is None or (H <= tile[0] + 2 * tile[1] and W <= tile[0] + 2 * tile[1]):
        maps, cls, box = _forward(net, xp, device, precision)
    else:
        maps, cls, box = predict_tiled(xp, lambda t: _forward(net, t, device, precision), tiling_config(tile),
                                       strides=(1, net.config.stride, net.config.stride))
    return maps[0, :h, :w], cls, box, (maps[1, :h, :w] if n_out > 1 else None)


def tiling_config(tile: tuple[int, int]) -> TilingConfig:
    """The :class:`nucleoscope.tiling.TilingConfig` of ``tile = (core, margin)`` px.

    Core and margin are rounded up to multiples of 16 and laid out as a ``"grid"`` from the origin, so
    every window starts on the U-Net's 16 px pooling grid and on the RPN's stride (8 or 16): a tile sees
    the same pooling cells and anchors as the whole image would.
    """
    core, margin = -(-int(tile[0]) // 16) * 16, -(-int(tile[1]) // 16) * 16
    return TilingConfig(tile=core + 2 * margin, overlap=2 * margin, layout="grid")
