"""Synthetic microscopy with exact ground truth.

Every generator takes ``rng`` (seed or ``numpy.random.Generator``) and returns a ``SynthSample``: the
image(s) and the truth (int32 labels, a per-object table, and extra masks where a kind has them). Used for
training (NuSeT-style synthetic data), tests (the only data whose truth is exact), sample data and
experiments the real data cannot support. Needs only numpy, scipy and scikit-image.
"""

from __future__ import annotations

from ._sample import SynthSample
from .nuclei import ARTIFACT_KINDS, iter_nuclei_fields, nuclei_field

__all__ = ["SynthSample", "nuclei_field", "iter_nuclei_fields", "ARTIFACT_KINDS"]
