"""What every segmenter reports about one image, beside its labels.

Each segmenter returns ``(labels, details)``; its details dataclass extends :class:`SegmentDetails`, so
the batch engine reads the decisions it records per image (``images.csv``: the nucleus diameter worked
at, whether an uneven background was subtracted) from the same fields whatever the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SegmentDetails"]


@dataclass(kw_only=True)
class SegmentDetails:
    """The fields every segmenter's details share (keyword-only, so subclasses add positional fields).

    Attributes
    ----------
    diameter_px : float
        Typical nucleus diameter (px of the image the segmenter was given) it worked at; NaN when it
        did not size the nuclei (an empty image).
    flattened : bool
        An uneven background was fitted and subtracted before segmenting.
    timings : dict
        Seconds per stage.
    warnings : list of str
        What the user should know about this image's result (e.g. nuclei smaller than the segmenter
        handles); ``images.csv`` records them.
    """

    diameter_px: float = math.nan
    flattened: bool = False
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
