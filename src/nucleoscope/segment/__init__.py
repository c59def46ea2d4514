"""Nucleus segmenters behind one call: the segmenter contract.

Every segmenter is a function ``f(image, *, spacing=None, diameter=None, **options) -> (labels, details)``
with ``image`` (Y, X) float32, ``spacing`` the pixel size (µm), ``diameter`` the typical nucleus diameter
in px of ``image`` (``None``: the segmenter estimates it), ``labels`` (Y, X) int32 (0 = background,
1..N) and ``details`` a dataclass extending :class:`SegmentDetails`. Units are converted (µm -> px,
``--scale``) once, by the caller (:func:`nucleoscope.pipeline.analyze`), never by a segmenter.
Methods are registered by name and imported only when used, so the deep ones (torch) cost nothing
until asked for; :func:`resolve_method` turns ``"auto"`` into a name, once per run.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from .details import SegmentDetails

__all__ = ["METHODS", "SegmentDetails", "available_methods", "get_segmenter", "resolve_method", "segment"]

# name -> "module:function"; modules are imported lazily.
METHODS: dict[str, str] = {
    "classic": "nucleoscope.segment.classic:segment_scenmed",
    "otsu": "nucleoscope.segment.classic:segment_otsu",
    "tissue": "nucleoscope.segment.classic:segment_tissue",
    "nuset": "nucleoscope.segment.nuset:segment_nuset",
}


def resolve_method(method: str) -> str:
    """``"auto"`` -> ``"nuset"`` when torch and a bundled NuSeT model are installed, else ``"otsu"``;
    any other name is checked against :data:`METHODS` and returned.

    Raises
    ------
    ValueError
        If ``method`` is neither ``"auto"`` nor a registered name.
    """
    if method != "auto":
        if method not in METHODS:
            raise ValueError(f"unknown segmentation method {method!r}; choose one of {sorted(METHODS)}")
        return method
    import importlib.util

    from ..models import bundled_models  # no torch import

    if importlib.util.find_spec("torch") is not None and any(n.startswith("nuset") for n in bundled_models()):
        return "nuset"
    return "otsu"


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
            diameter: float | None = None, **options: Any) -> tuple[np.ndarray, SegmentDetails]:
    """Segment nuclei in ``image`` (Y, X) with the named method; returns ``(labels, details)``.

    Parameters
    ----------
    image : (Y, X) float array
    method : str
        A registered name (:data:`METHODS`); resolve ``"auto"`` first with :func:`resolve_method`.
    spacing : float, optional
        Pixel size in µm.
    diameter : float, optional
        Typical nucleus diameter in px of ``image``; ``None`` lets the segmenter estimate it.
    **options
        The method's own keyword arguments (``config=ClassicConfig(...)``, ``model=...``).
    """
    return get_segmenter(method)(image, spacing=spacing, diameter=diameter, **options)
