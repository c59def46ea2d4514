"""NuSeT weights: safetensors files -> a network on a device, and a small cache of loaded networks.

The model store (paths, JSON metadata, SHA-256 verification) is torch-free and lives in
:mod:`nucleoscope.models`; this module adds what needs torch: reading and writing the tensors
(:func:`load_weights`, :func:`save_model`), building the network (:func:`load_nuset`) and preparing it
for inference on a device (:func:`_get_model`).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..._errors import InputError
from ...models import DEFAULT_NUSET, model_paths, read_metadata, sha256_file, verify_weights
from .network import NusetConfig, NusetNet

__all__ = ["load_nuset", "load_weights", "save_model"]


def load_weights(name_or_path: str | os.PathLike, *, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a model's tensors and its metadata, verifying the weights' SHA-256.

    Parameters
    ----------
    name_or_path : str or path
        A bundled model name or a path (see :func:`nucleoscope.models.model_paths`).
    verify : bool
        Check the weights' SHA-256 against the JSON's ``sha256`` before reading them.

    Returns
    -------
    tensors : dict of str -> torch.Tensor
    meta : dict
        The model's JSON.

    Raises
    ------
    InputError
        Missing file, unreadable JSON, or a weights file whose hash differs from the JSON's
        ``sha256`` (corrupted or tampered).
    """
    wpath, _ = model_paths(name_or_path)
    if not wpath.is_file():
        raise InputError("model weights not found", path=wpath)
    meta = read_metadata(name_or_path)
    if verify:
        verify_weights(name_or_path, meta)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(wpath))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read safetensors weights: {exc}", path=wpath) from None
    return tensors, meta


def save_model(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> tuple[Path, Path]:
    """Write ``stem.safetensors`` and ``stem.json`` (``meta`` + the weights' ``sha256``), atomically.

    Returns the two paths written.
    """
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    wpath, jpath = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    tmp = wpath.with_suffix(".safetensors.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    meta = {**meta, "weights_file": wpath.name, "sha256": sha256_file(tmp)}
    os.replace(tmp, wpath)
    jtmp = jpath.with_suffix(".json.tmp")
    jtmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    os.replace(jtmp, jpath)
    return wpath, jpath


def load_nuset(name_or_path: str | os.PathLike | None = None) -> tuple[NusetNet, dict]:
    """The NuSeT network (eval mode, CPU) and its metadata; default: the bundled ``nuset_v5``."""
    name_or_path = name_or_path or DEFAULT_NUSET
    tensors, meta = load_weights(name_or_path)
    if meta.get("model") not in (None, "nuset"):
        raise InputError(f"not a NuSeT model (model = {meta.get('model')!r})", path=model_paths(name_or_path)[1])
    cfg = NusetConfig.from_dict(meta["architecture"])
    net = NusetNet(cfg)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         path=model_paths(name_or_path)[0])
    return net.eval(), meta


# ----------------------------------------------------------------------------------------------------
# Networks ready for inference
# ----------------------------------------------------------------------------------------------------

#: How many (model, device) pairs :func:`_get_model` keeps loaded. Two covers what a process does in
#: practice (one model, or the same model on the CPU and a GPU, or two models compared side by side)
#: while a loop over many checkpoint paths no longer keeps every network, and its device memory, alive.
CACHE_SIZE = 2
_CACHE: OrderedDict[tuple[str, str], tuple[NusetNet, dict]] = OrderedDict()


def _resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as :class:`torch.device` reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _prepare(net: NusetNet, device: torch.device) -> NusetNet:
    """Move ``net`` to ``device`` for inference; on the CPU in channels-last (NHWC) layout.

    oneDNN's CPU convolutions run this network 1.9x faster on NHWC than on NCHW tensors (0.28 vs
    0.53 s for a 1024² input on the 2-core benchmark machine); the results agree to float rounding.
    """
    net = net.to(device).eval()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return net


def _get_model(model: Any, device: torch.device) -> tuple[NusetNet, dict]:
    """``model``: None (bundled), a name/path understood by :func:`load_nuset`, a :class:`NusetNet` or a
    ``(net, meta)`` pair; names and paths are cached (least recently used first out, :data:`CACHE_SIZE`)."""
    if isinstance(model, tuple):
        net, meta = model
        return _prepare(net, device), meta
    if isinstance(model, NusetNet):
        return _prepare(model, device), {}
    key = (str(model), str(device))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    net, meta = load_nuset(model)
    _CACHE[key] = (_prepare(net, device), meta)
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return _CACHE[key]
