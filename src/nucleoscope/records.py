"""Plain records handed between the faces (io) and the core (training), so neither imports the other."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["LabelledImage"]


class LabelledImage(NamedTuple):
    """One image with its truth, as read from a data set folder (unpacks as a 4-tuple)."""

    image: np.ndarray    #: (Y, X) float32, values as acquired
    labels: np.ndarray   #: (Y, X) int32 instance labels, 0 = background
    name: str            #: the image's file name
    dataset: str         #: the data set folder's name (or, e.g., ``"synthetic"``)
