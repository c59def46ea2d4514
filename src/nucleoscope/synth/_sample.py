"""The record every generator returns: image(s) plus their exact truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SynthSample"]


@dataclass(frozen=True)
class SynthSample:
    """A synthetic image and its exact ground truth.

    Attributes
    ----------
    image : ndarray, (Y, X) or (N, Y, X) for crop stacks
        The rendered, noisy image in the requested ``dtype`` (uint8, uint16 or float32).
    labels : ndarray of int32, same shape as ``image``
        Nucleus instance labels, 0 = background, ids 1..N (per crop for stacks).
    objects : pandas.DataFrame
        One row per labelled nucleus (``label`` is its id in ``labels``); the columns depend on the kind
        (see the generator's docstring). Positions and lengths in pixels, angles in radians.
    clean : ndarray of float32, optional
        The noise-free rendering (after illumination and PSF blur, before noise and quantisation) in the
        same intensity units as ``image``.
    artifact_mask : ndarray of bool, optional
        Pixels of non-cellular artifacts (debris, fibres, polygons, out-of-focus blobs); never labelled.
    hc_mask : ndarray of bool, optional
        Heterochromatin pixels of the noise-free truth (inside labelled nuclei only).
    noise_mask : ndarray of bool, optional
        Unlabelled "noise regions" of super-resolution renderings.
    cell_image : ndarray, optional
        The cell (membrane/cytoplasm) channel of whole-cell fields, same dtype as ``image``.
    cell_labels : ndarray of int32, optional
        Cell instance labels; cell ``i`` contains nucleus ``i`` of ``labels``.
    params : dict
        The image-level parameters actually used (after drawing the random defaults).
    """

    image: np.ndarray
    labels: np.ndarray
    objects: pd.DataFrame
    clean: np.ndarray | None = None
    artifact_mask: np.ndarray | None = None
    hc_mask: np.ndarray | None = None
    noise_mask: np.ndarray | None = None
    cell_image: np.ndarray | None = None
    cell_labels: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
