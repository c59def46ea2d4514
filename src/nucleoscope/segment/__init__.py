"""Nucleus segmenters behind one call.

Every segmenter is a function ``f(image, *, spacing=None, **options) -> (labels, details)`` with
``image`` (Y, X) float32, ``labels`` (Y, X) int32 (0 = background, 1..N) and ``details`` a dataclass.
Methods are registered by name and imported only when used, so the deep ones (torch) cost nothing
until asked for.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

__all__ = ["METHODS", "available_methods", "get_segmenter", "segment"]

# name -> "module:function"; modules are imported lazily.
METHODS: dict[str, str] = {
    "classic": "nucleoscope.segment.classic:segment_scenmed",
    "otsu": "nucleoscope.segment.classic:segment_otsu",
    "tissue": "nucleoscope.segment.classic:segment_tissue",
    "nuset": "nucleoscope.segment.nuset:segment_nuset",
}


def available_methods() -> list[str]:
    """Names of the segmenters whose modules import in this installation."""
    names = []
    for name in METHODS:
        try:
            get_segmenter(name)
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return names


def get_segmenter(method: str) -> Callable[..., tuple[np.ndarray, Any]]:
    """Return the segmentation function registered as ``method``.

    Raises
    ------
    ValueError
        If ``method`` is not a registered name.
    """
    try:
        target = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown segmentation method {method!r}; choose one of {sorted(METHODS)}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def segment(image: np.ndarray, *, method: str = "classic", spacing: float | None = None,
            **options: Any) -> tuple[np.ndarray, Any]:
    """Segment nuclei in ``image`` (Y, X) with the named method; returns ``(labels, details)``."""
    return get_segmenter(method)(image, spacing=spacing, **options)
