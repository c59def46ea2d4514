"""Whole cells from nuclear markers (SPEC §5, the whole-cell paper): a graph-cut foreground mask and
cells grown from the nuclei inside it, each cell carrying its nucleus's id.

``segment_cells(cell_image, nuclei)`` is the entry point; ``method="propagate"`` is the classical
baseline (CellProfiler's IdentifySecondaryObjects, propagation). Column definitions and settings:
docs/cells.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import InputError
from .foreground import DEFAULT_ALPHA, DEFAULT_KAPPA, graph_cut_foreground, normalize_unit
from .measure import CELL_COLUMNS, measure_cells
from .propagate import DEFAULT_COMPACTNESS, cytoplasm_labels, keep_nucleus_component, propagate_cells

__all__ = ["CELL_COLUMNS", "CELL_METHODS", "CellConfig", "CellResult", "cytoplasm_labels", "graph_cut_foreground",
           "keep_nucleus_component", "measure_cells", "normalize_unit", "propagate_cells", "segment_cells"]

CELL_METHODS = ("propagate",)


@dataclass(frozen=True)
class CellConfig:
    """Settings of the whole-cell segmentation (defaults chosen on aits_u2os_wholecell/val).

    Attributes
    ----------
    method : {"propagate"}
    alpha, kappa : float
        Graph-cut foreground prior and cut penalty (:func:`graph_cut_foreground`).
    sigma : float
        Gaussian smoothing (px) of the cell channel before normalising.
    compactness : float
        Propagation's watershed compactness.
    """

    method: str = "propagate"
    alpha: float = DEFAULT_ALPHA
    kappa: float = DEFAULT_KAPPA
    sigma: float = 2.0
    compactness: float = DEFAULT_COMPACTNESS

    def __post_init__(self) -> None:
        if self.method not in CELL_METHODS:
            raise ValueError(f"cell method must be one of {', '.join(CELL_METHODS)}, got {self.method!r}")


@dataclass
class CellResult:
    """Cells, cytoplasm and the foreground mask of one field (ids shared with the nuclei)."""

    cells: np.ndarray
    cytoplasm: np.ndarray
    mask: np.ndarray
    timings: dict = field(default_factory=dict)


def segment_cells(cell_image: np.ndarray, nuclei: np.ndarray, config: CellConfig = CellConfig()) -> CellResult:
    """Segment whole cells from a cell-channel image and its nuclei.

    Parameters
    ----------
    cell_image : (Y, X) float array
        Whole-cell (cytoplasm) stain.
    nuclei : (Y, X) int array, 0 = background
        Nucleus labels of the same field.
    config : CellConfig

    Returns
    -------
    CellResult
        ``cells`` (Y, X) int32 (cell ``i`` contains nucleus ``i``), ``cytoplasm`` int32, ``mask`` bool.

    Raises
    ------
    InputError
        Shapes differ, or the cell channel is constant (empty).
    """
    import time

    img = np.asarray(cell_image, np.float32)
    if img.shape != np.shape(nuclei) or img.ndim != 2:
        raise InputError(f"cell image {img.shape} and nucleus labels {np.shape(nuclei)} must be the same 2-D shape")
    if not img.size or float(img.max()) == float(img.min()):
        raise InputError("the cell channel is empty (constant image)")
    t0 = time.perf_counter()
    unit = normalize_unit(img, sigma=config.sigma)
    mask = graph_cut_foreground(unit, alpha=config.alpha, kappa=config.kappa)
    t1 = time.perf_counter()
    cells = propagate_cells(unit, nuclei, mask, compactness=config.compactness, sigma=0.0)
    t2 = time.perf_counter()
    return CellResult(cells=cells, cytoplasm=cytoplasm_labels(cells, nuclei), mask=mask,
                      timings={"foreground_s": t1 - t0, "cells_s": t2 - t1})
