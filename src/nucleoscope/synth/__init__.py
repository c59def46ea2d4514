"""Synthetic microscopy with exact ground truth.

Every generator takes ``rng`` (seed or ``numpy.random.Generator``) and returns a ``SynthSample``: the
image(s) and the truth (int32 labels, a per-object table, and extra masks where a kind has them). Used for
training (NuSeT-style synthetic data), tests (the only data whose truth is exact), sample data and
experiments the real data cannot support. Needs only numpy, scipy and scikit-image.

Kinds: ``nuclei_field`` (wide-field, crowded, artifacts), ``chromatin_crops`` / ``chromatin_field``
(heterochromatin conditions with exact HC/EC), ``storm_field`` (STORM-like localisation renderings, tiled
up to 5120 x 5120), ``cells_field`` (nucleus + cell channel with cell labels).
"""

from __future__ import annotations

from ._field import hc_ec
from ._sample import SynthSample
from .cells import cells_field
from .chromatin import PARAMETERS, chromatin_crops, chromatin_field
from .nuclei import ARTIFACT_KINDS, iter_nuclei_fields, nuclei_field
from .storm import storm_field

__all__ = [
    "SynthSample",
    "nuclei_field",
    "iter_nuclei_fields",
    "ARTIFACT_KINDS",
    "chromatin_crops",
    "chromatin_field",
    "PARAMETERS",
    "hc_ec",
    "storm_field",
    "cells_field",
]
