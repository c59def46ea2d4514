"""The model store: bundled trained models, where model files are, what they are, and their hashes.

A model is two files side by side: ``NAME.safetensors`` (the weights; safetensors never executes
code, unlike pickle) and ``NAME.json`` (architecture, normalization, thresholds, training provenance,
validation scores and the SHA-256 of the weights file). :func:`verify_weights` recomputes the hash and
refuses a weights file that does not match its JSON, so a corrupted or tampered file fails loudly.

This package is torch-free and knows nothing of the networks: reading the tensors and building a
network is the segmenter's job (:mod:`nucleoscope.segment.nuset.weights`: ``load_nuset``,
``load_weights``, ``save_model``).

Names and paths (:func:`model_paths`): a bare name (no directory part, no suffix) is a bundled model
and resolves only inside this package's folder, never in the current working directory (a stray
``nuset_v5.safetensors`` there must not replace the bundled model); a user's model is given by a path,
anything with a directory part or a suffix (``./my_model``, ``runs/nuset``, ``my_model.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .._errors import InputError

__all__ = ["DEFAULT_NUSET", "MODELS_DIR", "bundled_models", "model_identity", "model_paths", "read_metadata",
           "sha256_file", "verify_weights"]

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_NUSET = "nuset_v5"
#: JSON keys that identify a model (:func:`model_identity`)
IDENTITY_KEYS = ("name", "version", "sha256")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_paths(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights.safetensors, meta.json)`` of a model.

    Parameters
    ----------
    name_or_path : str or path
        A bundled model name (no directory part and no suffix: looked up in :data:`MODELS_DIR` only),
        or a path: a ``.safetensors`` or ``.json`` file, or a stem without suffix (``./m``, ``runs/m``).

    Returns
    -------
    (Path, Path)
        The two files; they need not exist (the loaders check).
    """
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    elif not p.suffix and str(name_or_path) == p.name:
        # a bare name: the bundled model, whatever the current working directory holds
        p = MODELS_DIR / p.name
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def read_metadata(name_or_path: str | os.PathLike) -> dict:
    """The model's JSON metadata.

    Raises
    ------
    InputError
        The JSON is missing or unreadable.
    """
    _, jpath = model_paths(name_or_path)
    if not jpath.is_file():
        raise InputError("model metadata (.json) not found beside the weights", path=jpath)
    try:
        return json.loads(jpath.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read model metadata: {exc}", path=jpath) from None


def verify_weights(name_or_path: str | os.PathLike, meta: dict | None = None) -> str:
    """Check that the weights file's SHA-256 is the one its JSON (or ``meta``) records; returns it.

    Raises
    ------
    InputError
        Missing weights, a JSON without ``sha256``, or a different hash (corrupted or tampered).
    """
    wpath, jpath = model_paths(name_or_path)
    if not wpath.is_file():
        raise InputError("model weights not found", path=wpath)
    meta = read_metadata(name_or_path) if meta is None else meta
    want = meta.get("sha256")
    if not want:
        raise InputError("model metadata has no 'sha256' of the weights; refusing to load", path=jpath)
    got = sha256_file(wpath)
    if got != want:
        raise InputError(f"SHA-256 of the weights is {got}, but the model metadata says {want}: "
                         "the file is corrupted or was modified; reinstall the package or retrain", path=wpath)
    return got


def model_identity(name_or_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a model is, from its JSON: ``name``, ``version`` and ``sha256`` (those it records).

    The loaders refuse weights whose hash differs from the JSON's ``sha256``, so this is the identity
    of what a segmenter given the same ``name_or_path`` loads (record it with results). Reads the JSON
    only: no hashing, no torch.

    Parameters
    ----------
    name_or_path : str or path, optional
        As for :func:`model_paths`; default :data:`DEFAULT_NUSET`.

    Returns
    -------
    dict

    Examples
    --------
    >>> model_identity("nuset_v5")["name"]
    'nuset_v5'
    """
    meta = read_metadata(name_or_path or DEFAULT_NUSET)
    return {k: meta[k] for k in IDENTITY_KEYS if k in meta}


def bundled_models() -> list[str]:
    """Names of the models shipped in :data:`MODELS_DIR` (those :func:`model_paths` resolves by name)."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json") if p.with_suffix(".safetensors").is_file())
