"""Shape of one nucleus from its binary mask: size, moments-based ellipse, convexity, Feret diameters."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import perimeter_crofton

__all__ = ["SHAPE_COLUMNS", "shape_features", "feret_diameters"]

# Pixel-unit columns, then their physical twins (NaN without a pixel size: the schema never changes).
_PIXEL_COLUMNS = [
    "Location_Center_X",
    "Location_Center_Y",
    "AreaShape_BoundingBoxMinimum_X",
    "AreaShape_BoundingBoxMinimum_Y",
    "AreaShape_BoundingBoxMaximum_X",
    "AreaShape_BoundingBoxMaximum_Y",
    "AreaShape_Area",
    "AreaShape_ConvexArea",
    "AreaShape_Perimeter",
    "AreaShape_EquivalentDiameter",
    "AreaShape_MajorAxisLength",
    "AreaShape_MinorAxisLength",
    "AreaShape_Eccentricity",
    "AreaShape_Orientation",
    "AreaShape_Solidity",
    "AreaShape_Extent",
    "AreaShape_Roundness",
    "AreaShape_FormFactor",
    "AreaShape_MaxFeretDiameter",
    "AreaShape_MinFeretDiameter",
]
# column -> power of the pixel size that converts it (1 = length, 2 = area)
_PHYSICAL = {
    "AreaShape_Area": 2,
    "AreaShape_ConvexArea": 2,
    "AreaShape_Perimeter": 1,
    "AreaShape_EquivalentDiameter": 1,
    "AreaShape_MajorAxisLength": 1,
    "AreaShape_MinorAxisLength": 1,
    "AreaShape_MaxFeretDiameter": 1,
    "AreaShape_MinFeretDiameter": 1,
}
SHAPE_COLUMNS: list[str] = _PIXEL_COLUMNS + [f"{c}_{'um2' if p == 2 else 'um'}" for c, p in _PHYSICAL.items()]

# The four corners of a pixel (half a pixel either side of its centre).
_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def _corner_hull(mask: np.ndarray, offsets: np.ndarray = _CORNERS) -> tuple[np.ndarray, ConvexHull | None]:
    """Convex hull of the corners (or other offsets) of the mask's boundary pixels, as (row, col)."""
    # Only boundary pixels can contribute hull vertices; this keeps qhull's input small.
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    edge = np.argwhere(mask & ~inner).astype(np.float64)
    pts = (edge[:, None, :] + offsets[None]).reshape(-1, 2)
    try:
        hull = ConvexHull(pts)
    except QhullError:  # pragma: no cover - four corners of one pixel are never degenerate
        return pts, None
    return pts[hull.vertices], hull


def feret_diameters(mask: np.ndarray) -> tuple[float, float]:
    """Maximum and minimum Feret (caliper) diameters of a binary mask, in pixels.

    Pixels are unit squares: the calipers touch pixel corners, so a single pixel has Feret
    diameters (sqrt(2), 1) and an n x n square (n sqrt(2), n). scikit-image offers only the
    maximum (on a marching-squares contour), and CellProfiler's minimum uses a different hull,
    so both come from one hull here for consistency.

    Parameters
    ----------
    mask : (Y, X) bool ndarray
        One object (need not be connected).

    Returns
    -------
    (max_feret, min_feret) : tuple of float
        Largest distance between two hull vertices, and the smallest width over all directions
        (attained perpendicular to a hull edge, by the rotating-calipers argument).
    """
    mask = np.pad(np.asarray(mask, dtype=bool), 1)
    if not mask.any():
        return float("nan"), float("nan")
    verts, hull = _corner_hull(mask)
    if hull is None:  # pragma: no cover
        return float("nan"), float("nan")
    d = verts[:, None, :] - verts[None, :, :]
    max_feret = float(np.sqrt((d**2).sum(-1).max()))
    # Width perpendicular to each hull edge: max distance of the vertices to that edge's line.
    normals = hull.equations[:, :2]  # unit outward normals
    offsets = hull.equations[:, 2]
    dist = -(verts @ normals.T + offsets)  # >= 0 inside
    min_feret = float(dist.max(axis=0).min())
    return max_feret, min_feret


_DIAGONALS = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]) / np.sqrt(2)
_AXES = np.array([[1.0, 0.0], [0.0, 1.0]])


def _hull_measures(padded: np.ndarray, area: int) -> tuple[float, float, float]:
    """(max Feret, min Feret, convex area) of a mask with a background border, from one hull.

    The hull of the pixel corners is the Minkowski sum of the hull C of the pixel centres with the
    unit square, and the hull of the edge midpoints (scikit-image's convex image) is C plus the diamond
    |dy| + |dx| <= 1/2. A Minkowski sum's vertices are sums of vertices and its edge normals are the
    union of both shapes' edge normals, so one qhull call on the centres gives everything (two calls
    on 4x as many points before).
    """
    inner = padded.copy()
    inner[1:-1, 1:-1] &= padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge = np.argwhere(padded & ~inner).astype(np.float64)
    try:
        hull = ConvexHull(edge)
    except QhullError:  # collinear centres (a line of pixels): hull the corners directly
        verts, corner_hull = _corner_hull(padded)
        normals = corner_hull.equations[:, :2]
        v_centres = edge
    else:
        v_centres = edge[hull.vertices]
        verts = (v_centres[:, None, :] + _CORNERS[None]).reshape(-1, 2)
        normals = np.vstack([hull.equations[:, :2], _AXES])
    d = verts[:, None, :] - verts[None, :, :]
    max_feret = float(np.sqrt((d**2).sum(-1).max()))
    proj = verts @ normals.T
    min_feret = float((proj.max(axis=0) - proj.min(axis=0)).min())
    # Convex area: pixel centres inside C + diamond; mask pixels are inside by construction.
    mid_normals = np.vstack([normals, _DIAGONALS])
    support = (v_centres @ mid_normals.T).max(axis=0) + 0.5 * np.abs(mid_normals).max(axis=1)
    others = np.argwhere(~padded).astype(np.float64)
    inside = (others @ mid_normals.T <= support + 1e-9).all(axis=1)
    return max_feret, min_feret, float(area + inside.sum())


def shape_features(
    mask: np.ndarray, *, offset: tuple[int, int] = (0, 0), spacing: float | None = None
) -> dict[str, float]:
    """Shape measurements of one nucleus.

    Parameters
    ----------
    mask : (Y, X) bool ndarray
        The nucleus (a crop of the label image is fine; ``offset`` places it).
    offset : (row, col)
        Position of ``mask[0, 0]`` in the full image, for the location and bounding box columns.
    spacing : float, optional
        Pixel size in µm; without it the ``_um``/``_um2`` columns are NaN.

    Returns
    -------
    dict
        ``SHAPE_COLUMNS`` -> value. Definitions (pixel units; X = column, Y = row):

        - ``Location_Center_X/Y``: centroid of the pixel centres.
        - ``AreaShape_BoundingBoxMinimum/Maximum_X/Y``: bounding box, maximum exclusive (as
          scikit-image and CellProfiler).
        - ``AreaShape_Area``: pixel count. ``ConvexArea``: pixels whose centres lie in the convex hull
          of the pixels' edge midpoints (scikit-image's ``convex_hull_image`` definition).
        - ``AreaShape_Perimeter``: Crofton perimeter, ``skimage.measure.perimeter_crofton`` with 4
          directions (within 2 % of 2 pi r for digital discs of radius >= 20 and of the true length of
          ellipses; scikit-image's ``perimeter``, which CellProfiler reports, is 4-5 % high on discs).
        - ``EquivalentDiameter``: sqrt(4 Area / pi).
        - ``MajorAxisLength``/``MinorAxisLength``: 4 sqrt(eigenvalues) of the covariance of the pixel
          coordinates (the ellipse with the same second moments, as scikit-image/CellProfiler);
          ``Eccentricity`` = sqrt(1 - minor^2/major^2); ``Orientation``: angle in degrees between
          the X axis and the major axis, counter-clockwise as displayed (Y down), in (-90, 90].
        - ``Solidity`` = Area / ConvexArea; ``Extent`` = Area / bounding-box area.
        - ``Roundness`` = 4 Area / (pi MajorAxisLength^2) (ImageJ's "Round"; 1 for a disc, b/a for
          an ellipse of semi-axes a >= b); it uses no perimeter, so it is robust to pixelation.
        - ``FormFactor`` = 4 pi Area / Perimeter^2 (CellProfiler's; "circularity" in ImageJ).
        - ``Max/MinFeretDiameter``: see :func:`feret_diameters`.
    """
    mask = np.asarray(mask, dtype=bool)
    out = dict.fromkeys(SHAPE_COLUMNS, float("nan"))
    rows, cols = np.nonzero(mask)
    area = rows.size
    if area == 0:
        return out
    y0, x0 = offset
    cy, cx = rows.mean(), cols.mean()
    out["Location_Center_X"] = cx + x0
    out["Location_Center_Y"] = cy + y0
    rmin, rmax, cmin, cmax = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    out["AreaShape_BoundingBoxMinimum_X"] = cmin + x0
    out["AreaShape_BoundingBoxMinimum_Y"] = rmin + y0
    out["AreaShape_BoundingBoxMaximum_X"] = cmax + x0
    out["AreaShape_BoundingBoxMaximum_Y"] = rmax + y0
    out["AreaShape_Area"] = float(area)

    dy, dx = rows - cy, cols - cx
    cyy, cxx, cxy = (dy * dy).mean(), (dx * dx).mean(), (dx * dy).mean()
    half_tr, det_part = (cyy + cxx) / 2, np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    l1, l2 = half_tr + det_part, max(half_tr - det_part, 0.0)
    major, minor = 4 * np.sqrt(l1), 4 * np.sqrt(l2)
    out["AreaShape_MajorAxisLength"] = major
    out["AreaShape_MinorAxisLength"] = minor
    out["AreaShape_Eccentricity"] = np.sqrt(1 - l2 / l1) if l1 > 0 else 0.0
    # Y grows downwards, so flip dy for a counter-clockwise-as-displayed angle.
    out["AreaShape_Orientation"] = np.degrees(0.5 * np.arctan2(-2 * cxy, cxx - cyy))

    box = mask[rmin:rmax, cmin:cmax]
    padded = np.pad(box, 1)
    max_feret, min_feret, convex_area = _hull_measures(padded, area)
    out["AreaShape_MaxFeretDiameter"] = max_feret
    out["AreaShape_MinFeretDiameter"] = min_feret
    out["AreaShape_ConvexArea"] = convex_area
    perim = float(perimeter_crofton(padded, directions=4))
    out["AreaShape_Perimeter"] = perim
    out["AreaShape_EquivalentDiameter"] = np.sqrt(4 * area / np.pi)
    out["AreaShape_Solidity"] = area / convex_area
    out["AreaShape_Extent"] = area / float((rmax - rmin) * (cmax - cmin))
    out["AreaShape_Roundness"] = 4 * area / (np.pi * major**2) if major > 0 else 1.0
    out["AreaShape_FormFactor"] = 4 * np.pi * area / perim**2 if perim > 0 else float("nan")
    if spacing is not None:
        for col, power in _PHYSICAL.items():
            out[f"{col}_{'um2' if power == 2 else 'um'}"] = out[col] * spacing**power
    return {k: float(v) for k, v in out.items()}
