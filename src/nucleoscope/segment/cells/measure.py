"""Per-cell and per-cytoplasm measurements, keyed by the parent nucleus (CellProfiler-style columns).

Every cell and cytoplasm carries its nucleus's id, so the table joins the nuclei table one-to-one on
``ObjectNumber``; ``Cells_Parent_Nuclei`` / ``Cytoplasm_Parent_Cells`` are the parent links (0 for a
nucleus that got no cell, e.g. one outside the foreground).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CELL_COLUMNS", "measure_cells"]

_SHAPE = ["Area", "Perimeter", "Eccentricity", "Solidity", "MajorAxisLength", "MinorAxisLength"]
_INTENSITY = ["MeanIntensity", "IntegratedIntensity", "StdIntensity"]

CELL_COLUMNS = (["ObjectNumber", "Cells_Parent_Nuclei", "Cytoplasm_Parent_Cells"]
                + [f"Cells_AreaShape_{c}" for c in _SHAPE] + [f"Cells_Intensity_{c}" for c in _INTENSITY]
                + ["Cytoplasm_AreaShape_Area"] + [f"Cytoplasm_Intensity_{c}" for c in _INTENSITY]
                + ["Cells_Intensity_MeanIntensityNucleus", "Cells_NucleusToCytoplasmRatio",
                   "Cells_NucleusAreaFraction", "Cells_TouchesBorder"])


def _props(labels: np.ndarray, image: np.ndarray, shape: bool) -> pd.DataFrame:
    from skimage.measure import regionprops_table

    props = ["label", "area", "intensity_mean", "intensity_std"]
    if shape:
        props += ["perimeter", "eccentricity", "solidity", "axis_major_length", "axis_minor_length"]
    t = pd.DataFrame(regionprops_table(labels, intensity_image=image, properties=props))
    t["integrated"] = t["intensity_mean"] * t["area"]
    return t.set_index("label")


def measure_cells(cell_image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray, cytoplasm: np.ndarray) -> pd.DataFrame:
    """One row per nucleus id present in ``nuclei``: its cell's and cytoplasm's measurements.

    Parameters
    ----------
    cell_image : (Y, X) float array
        Cell channel, values as acquired (intensities are in its units).
    nuclei, cells, cytoplasm : (Y, X) int arrays
        Labels with shared ids (cell ``i`` and cytoplasm ``i`` belong to nucleus ``i``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CELL_COLUMNS`; areas and lengths in px, intensities in the image's units.
        Rows of nuclei without a cell have parent 0 and NaN measurements; the ratio is the mean
        intensity of the cell channel over the nucleus divided by that over the cytoplasm.
    """
    img = np.asarray(cell_image, np.float32)
    nuclei, cells, cytoplasm = (np.asarray(a).astype(np.int32, copy=False) for a in (nuclei, cells, cytoplasm))
    ids = np.unique(nuclei[nuclei > 0])
    out = pd.DataFrame({"ObjectNumber": ids.astype(np.int64)})
    c = _props(cells, img, True).reindex(ids)
    y = _props(cytoplasm, img, False).reindex(ids)
    n = _props(nuclei, img, False).reindex(ids)
    out["Cells_Parent_Nuclei"] = np.where(c["area"].notna(), ids, 0).astype(np.int64)
    out["Cytoplasm_Parent_Cells"] = np.where(y["area"].notna(), ids, 0).astype(np.int64)
    for col, src in zip(_SHAPE, ["area", "perimeter", "eccentricity", "solidity", "axis_major_length",
                                 "axis_minor_length"]):
        out[f"Cells_AreaShape_{col}"] = c[src].to_numpy(float)
    for col, src in zip(_INTENSITY, ["intensity_mean", "integrated", "intensity_std"]):
        out[f"Cells_Intensity_{col}"] = c[src].to_numpy(float)
    out["Cytoplasm_AreaShape_Area"] = y["area"].fillna(0).to_numpy(float)
    out.loc[out["Cells_Parent_Nuclei"] == 0, "Cytoplasm_AreaShape_Area"] = np.nan
    for col, src in zip(_INTENSITY, ["intensity_mean", "integrated", "intensity_std"]):
        out[f"Cytoplasm_Intensity_{col}"] = y[src].to_numpy(float)
    out["Cells_Intensity_MeanIntensityNucleus"] = n["intensity_mean"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["Cells_NucleusToCytoplasmRatio"] = (out["Cells_Intensity_MeanIntensityNucleus"]
                                                / out["Cytoplasm_Intensity_MeanIntensity"])
        out["Cells_NucleusAreaFraction"] = n["area"].to_numpy(float) / out["Cells_AreaShape_Area"]
    border = np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))
    out["Cells_TouchesBorder"] = np.isin(ids, border[border > 0])
    return out[CELL_COLUMNS]
