"""Per-nucleus quality-control flags (SCENMED, SPEC §6).

SCENMED discards nuclei that are overexposed (≥ 25% of the nucleus above 3700 on a 12-bit camera),
blurred by deconvolution at the frame edge (within 15 px of it), or larger than a 128 x 128 crop. The
flags are recorded as columns so a user can decide; ``nucleoscope run --drop-flagged`` drops them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .postprocess import object_areas

__all__ = ["QCConfig", "QC_COLUMNS", "qc_flags", "drop_flagged"]

QC_COLUMNS = ["QC_Overexposed", "QC_NearEdge", "QC_TooLarge", "QC_TooSmall", "QC_Flagged"]


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the QC flags.

    Attributes
    ----------
    overexposed_level : float
        Fraction of the detector's full scale above which a pixel counts as overexposed. SCENMED uses
        3700 on a 12-bit camera: 3700 / 4095 = 0.9035.
    overexposed_fraction : float
        A nucleus is overexposed when at least this fraction of its pixels is above the level (0.25).
    edge_margin : int
        A nucleus whose bounding box comes within this many px of the frame is flagged ``QC_NearEdge``
        (SCENMED crops 15 px of deconvolution blur; 0 flags only nuclei touching the frame).
    max_box : int
        A nucleus whose bounding box exceeds ``max_box`` px in height or width is too large for the
        classifiers' crops (128).
    min_area : float
        Nuclei with fewer pixels are flagged ``QC_TooSmall`` (debris, micronuclei fragments).
    """

    overexposed_level: float = 3700 / 4095
    overexposed_fraction: float = 0.25
    edge_margin: int = 15
    max_box: int = 128
    min_area: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.overexposed_level <= 1:
            raise ValueError(f"overexposed_level is a fraction of full scale in (0, 1], got {self.overexposed_level}")
        if not 0 < self.overexposed_fraction <= 1:
            raise ValueError(f"overexposed_fraction must be in (0, 1], got {self.overexposed_fraction}")
        if self.edge_margin < 0 or self.max_box <= 0 or self.min_area < 0:
            raise ValueError("edge_margin and min_area must be >= 0 and max_box > 0")


def qc_flags(image: np.ndarray, labels: np.ndarray, *, saturation: float,
             config: QCConfig = QCConfig()) -> pd.DataFrame:
    """QC flags of every nucleus.

    Parameters
    ----------
    image : (Y, X) array
        Intensities as acquired.
    labels : (Y, X) int array
        Nuclei, 0 = background.
    saturation : float
        The detector's full-scale value (e.g. 4095 for 12-bit, 255 for 8-bit); the overexposure level
        is ``config.overexposed_level * saturation``.
    config : QCConfig

    Returns
    -------
    pandas.DataFrame
        One row per label id present, ascending: ``ObjectNumber`` and the boolean columns of
        :data:`QC_COLUMNS` (``QC_Flagged`` = any flag).
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    # bincounts, not np.unique (a sorted copy of the image) nor boolean weights (cast to a float64 copy):
    # the memory of a 16k x 16k image's flags stays a few arrays of one number per nucleus
    area = object_areas(labels) if flat.size else np.zeros(1, np.int64)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    if ids.size == 0:
        return pd.DataFrame({"ObjectNumber": pd.Series([], dtype=np.int32),
                             **{c: pd.Series([], dtype=bool) for c in QC_COLUMNS}})
    n = area.size - 1
    level = config.overexposed_level * saturation
    pixels = np.asarray(image).reshape(-1)
    over = np.zeros(n + 1, np.int64)
    step = 1 << 24  # chunks: bincount's 64-bit copy of every overexposed pixel's id stays small
    for i in range(0, flat.size, step):
        over += np.bincount(flat[i:i + step][pixels[i:i + step] > level], minlength=n + 1)
    overexposed = (over[ids] >= config.overexposed_fraction * area[ids])
    slices = ndi.find_objects(labels.astype(np.int32, copy=False))
    H, W = labels.shape
    near = np.zeros(ids.size, bool)
    large = np.zeros(ids.size, bool)
    m = config.edge_margin
    for k, i in enumerate(ids):
        sy, sx = slices[i - 1]
        near[k] = sy.start < m or sx.start < m or sy.stop > H - m or sx.stop > W - m if m > 0 else (
            sy.start == 0 or sx.start == 0 or sy.stop == H or sx.stop == W)
        large[k] = (sy.stop - sy.start) > config.max_box or (sx.stop - sx.start) > config.max_box
    small = area[ids] < config.min_area
    return pd.DataFrame({
        "ObjectNumber": ids.astype(np.int32),
        "QC_Overexposed": overexposed,
        "QC_NearEdge": near,
        "QC_TooLarge": large,
        "QC_TooSmall": small,
        "QC_Flagged": overexposed | near | large | small,
    })


def drop_flagged(labels: np.ndarray, flags: pd.DataFrame) -> np.ndarray:
    """Set the nuclei with ``QC_Flagged`` to background (ids of the others are kept)."""
    bad = flags.loc[flags["QC_Flagged"], "ObjectNumber"].to_numpy()
    out = labels.astype(np.int32, copy=True)
    if bad.size:
        out[np.isin(out, bad)] = 0
    return out
