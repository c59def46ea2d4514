"""Bundled trained models and their loader.

A model is two files side by side: ``NAME.safetensors`` (the weights; safetensors never executes
code, unlike pickle) and ``NAME.json`` (architecture, normalization, thresholds, training provenance,
validation scores and the SHA-256 of the weights file). Loading recomputes the hash and refuses a
weights file that does not match its JSON, so a corrupted or tampered file fails loudly.

Importing this module does not import torch; the loaders do.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._errors import InputError

__all__ = ["MODELS_DIR", "DEFAULT_NUSET", "sha256_file", "model_paths", "load_weights", "save_model",
           "load_nuset"]

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_NUSET = "nuset_v5"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_paths(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights.safetensors, meta.json)`` of a bundled model name, a ``.safetensors``/``.json`` path,
    or a path without suffix."""
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    elif not p.parent.parts or str(p.parent) == ".":
        if not p.with_suffix(".safetensors").exists():
            p = MODELS_DIR / p.name
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def load_weights(name_or_path: str | os.PathLike, *, verify: bool = True) -> tuple[dict[str, Any], dict]:
    """Load a model's tensors (``torch.Tensor``) and its metadata, verifying the weights' SHA-256.

    Raises
    ------
    InputError
        Missing file, unreadable JSON, or a weights file whose hash differs from the JSON's
        ``sha256`` (corrupted or tampered).
    """
    wpath, jpath = model_paths(name_or_path)
    if not wpath.is_file():
        raise InputError("model weights not found", path=wpath)
    if not jpath.is_file():
        raise InputError("model metadata (.json) not found beside the weights", path=jpath)
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read model metadata: {exc}", path=jpath) from None
    if verify:
        want = meta.get("sha256")
        got = sha256_file(wpath)
        if not want:
            raise InputError("model metadata has no 'sha256' of the weights; refusing to load", path=jpath)
        if got != want:
            raise InputError(f"SHA-256 of the weights is {got}, but the model metadata says {want}: "
                             "the file is corrupted or was modified; reinstall the package or retrain", path=wpath)
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(wpath))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read safetensors weights: {exc}", path=wpath) from None
    return tensors, meta


def save_model(stem: str | os.PathLike, tensors: dict[str, Any], meta: dict) -> tuple[Path, Path]:
    """Write ``stem.safetensors`` and ``stem.json`` (``meta`` + the weights' ``sha256``), atomically."""
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


def load_nuset(name_or_path: str | os.PathLike | None = None):
    """The NuSeT network (eval mode, CPU) and its metadata; default: the bundled ``nuset_v5``."""
    from ..segment.nuset.network import NusetConfig, NusetNet

    tensors, meta = load_weights(name_or_path or DEFAULT_NUSET)
    if meta.get("model") not in (None, "nuset"):
        raise InputError(f"not a NuSeT model (model = {meta.get('model')!r})", path=model_paths(name_or_path or DEFAULT_NUSET)[1])
    cfg = NusetConfig.from_dict(meta["architecture"])
    net = NusetNet(cfg)
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         path=model_paths(name_or_path or DEFAULT_NUSET)[0])
    return net.eval(), meta
