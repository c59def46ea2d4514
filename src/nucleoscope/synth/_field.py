"""Render placed nuclei into a field: summed intensity, exact labels split by a marker watershed."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import label as measure_label
from skimage.segmentation import watershed

from ._nucleus import Chromatin, Geometry, render_chromatin, rho_local

__all__ = ["render_nuclei", "object_table", "touching_pairs", "hc_ec", "add_hc_ec", "with_spacing"]

_LENGTHS = ("diameter", "major_axis", "minor_axis", "cell_diameter")
_AREAS = ("area", "cell_area")


def add_hc_ec(objects: pd.DataFrame, labels, clean, background, hc_mask) -> pd.DataFrame:
    """HC/EC truth columns: on ``clean`` as is (hc_sum, ec_sum, hc_ec_ratio) and on ``clean - background``
    (the same with a ``_signal`` suffix: what a background-subtracted measurement should recover)."""
    n = len(objects)
    objects["hc_sum"], objects["ec_sum"], objects["hc_ec_ratio"] = hc_ec(labels, clean, hc_mask, n)
    sig = hc_ec(labels, clean - background, hc_mask, n)
    objects["hc_sum_signal"], objects["ec_sum_signal"], objects["hc_ec_ratio_signal"] = sig
    return objects


def with_spacing(objects: pd.DataFrame, spacing: float | None, params: dict) -> pd.DataFrame:
    """Add physical-unit columns (``<length>_um``, ``<area>_um2``) for a pixel size ``spacing`` (µm/px)."""
    if spacing is None:
        return objects
    if not (np.isfinite(spacing) and spacing > 0):
        from .._errors import InputError

        raise InputError(f"spacing must be a positive number of µm per pixel, got {spacing!r}")
    params["spacing"] = float(spacing)
    for c in _LENGTHS:
        if c in objects:
            objects[f"{c}_um"] = objects[c] * spacing
    for c in _AREAS:
        if c in objects:
            objects[f"{c}_um2"] = objects[c] * spacing**2
    return objects


def render_nuclei(
    g: Geometry,
    chroma: list[Chromatin],
    shape: tuple[int, int],
    rng: np.random.Generator,
    ec_field: np.ndarray | None = None,
):
    """Render every nucleus of ``g`` (already placed) into a (Y, X) field.

    Overlapping nuclei add up (fluorescence is additive). Labels: a pixel covered by one nucleus belongs
    to it; pixels covered by several are split by a marker watershed on the smallest normalised radius,
    flooded from the unshared part of each nucleus (which holds its centre, see ``place``) as NuSeT split
    overlapping blobs. ``ec_field`` (Y, X), unit-variance smooth noise, gives every nucleus its
    euchromatin texture from one image-wide field (much faster than one filter per nucleus).

    Returns
    -------
    sharp : float32 (Y, X)
        Noise-free intensity before illumination and blur.
    labels : int32 (Y, X)
        ``i + 1`` for nucleus ``i`` of ``g`` (not yet relabelled; a nucleus off the image has no pixels).
    hc_mask : bool (Y, X)
        Heterochromatin pixels of the nucleus that owns each pixel.
    covered : uint8 (Y, X)
        How many rendered nuclei cover each pixel.
    """
    sharp = np.zeros(shape, np.float32)
    rho_min = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.int32)
    covered = np.zeros(shape, np.uint8)
    hc_parts = []
    for i in range(len(g)):
        box = rho_local(g, i, shape)
        if box is None:
            hc_parts.append(None)
            continue
        sl, rho = box
        ec = None if ec_field is None else ec_field[sl]
        inten, inside, hc = render_chromatin(rho, chroma[i], rng, float(np.sqrt(g.a[i] * g.b[i])), ec)
        sharp[sl] += inten
        covered[sl] += inside
        rm = rho_min[sl]
        better = inside & (rho < rm)
        rm[better] = rho[better]
        owner[sl][better] = i + 1
        hc_parts.append((sl, hc))
    labels = owner
    shared = covered > 1
    if shared.any():
        markers = np.where(covered == 1, owner, 0)
        elevation = np.where(np.isfinite(rho_min), rho_min, 2.0).astype(np.float32)
        labels = watershed(elevation, markers, mask=covered > 0).astype(np.int32)
        lost = (labels == 0) & (covered > 0)  # an island of shared pixels cut off from every core
        labels[lost] = owner[lost]
        _merge_fragments(labels)
    hc_mask = np.zeros(shape, bool)
    for i, part in enumerate(hc_parts):
        if part is not None:
            sl, hc = part
            hc_mask[sl] |= hc & (labels[sl] == i + 1)
    return sharp, labels, hc_mask, covered


def _merge_fragments(labels: np.ndarray) -> None:
    """Give stray pieces of a label (rarely left by the watershed, e.g. one pixel joined only diagonally)
    to the neighbouring label that borders them most, so that every label is one 4-connected piece.
    Pieces bordered only by background (a nucleus cut by the image edge) are left alone. In place."""
    comp = measure_label(labels, connectivity=1, background=0)
    n_comp = int(comp.max())
    if n_comp == len(np.unique(labels)) - 1:
        return
    size = np.bincount(comp.ravel())
    value = np.zeros(n_comp + 1, labels.dtype)
    value[comp.ravel()] = labels.ravel()
    # the largest piece of each label stays; the others are fragments
    order = np.lexsort((-size[1:], value[1:])) + 1
    first = np.r_[True, value[order][1:] != value[order][:-1]]
    boxes = ndi.find_objects(comp)
    for f in order[~first]:
        sl = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in boxes[f - 1])
        piece = comp[sl] == f
        ring = ndi.binary_dilation(piece, ndi.generate_binary_structure(2, 1)) & ~piece
        around = labels[sl][ring]
        around = around[(around > 0) & (around != value[f])]
        if around.size:
            labels[sl][piece] = np.bincount(around).argmax()


def touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique pairs ``(i, j)``, ``i < j``, of labels that share an edge (4-connectivity), shape (P, 2)."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            pairs.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs).astype(np.int64), axis=0)


def hc_ec(labels: np.ndarray, clean: np.ndarray, hc_mask: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Exact HC/EC truth per label 1..n.

    HC = summed ``clean`` intensity of the nucleus's heterochromatin pixels, EC = summed intensity of the
    whole nucleus (its label pixels) minus HC, on the noise-free image as rendered (background included,
    like a measurement on a real image). Returns ``(hc, ec, hc / ec)``, each of shape (n,).
    """
    flat = labels.ravel()
    total = np.bincount(flat, weights=clean.ravel().astype(np.float64), minlength=n + 1)[1:]
    hc = np.bincount(flat, weights=np.where(hc_mask, clean, 0).ravel().astype(np.float64), minlength=n + 1)[1:]
    ec = total - hc
    return hc, ec, hc / np.where(ec > 0, ec, np.nan)


def object_table(
    labels: np.ndarray,
    g: Geometry,
    chroma: list[Chromatin],
    *,
    index: np.ndarray,
    hc_mask: np.ndarray,
    covered: np.ndarray,
) -> pd.DataFrame:
    """Per-nucleus truth for relabelled ``labels``; ``index[k]`` is the nucleus of ``g`` behind label k+1."""
    n = len(index)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:]
    yy, xx = np.indices(labels.shape)
    cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:] / np.maximum(area, 1)
    hc_area = np.bincount(flat, weights=hc_mask.ravel(), minlength=n + 1)[1:]
    shared = np.bincount(flat, weights=(covered > 1).ravel(), minlength=n + 1)[1:]
    pairs = touching_pairs(labels)
    n_touch = np.bincount(pairs.ravel(), minlength=n + 1)[1:] if len(pairs) else np.zeros(n, int)
    h, w = labels.shape
    edge = np.zeros(n + 1, bool)
    edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    ratio = g.b / g.a
    return pd.DataFrame(
        {
            "label": np.arange(1, n + 1, dtype=np.int32),
            "centroid_y": cy,
            "centroid_x": cx,
            "center_y": g.cy[index],
            "center_x": g.cx[index],
            "area": area.astype(np.int64),
            "diameter": 2 * np.sqrt(g.a[index] * g.b[index]),
            "major_axis": 2 * g.a[index],
            "minor_axis": 2 * g.b[index],
            "aspect": ratio[index],
            "angle": g.angle[index],
            "brightness": [chroma[i].brightness for i in index],
            "hc_fraction": hc_area / np.maximum(area, 1),
            "n_foci": [chroma[i].n_foci for i in index],
            "hc_contrast": [chroma[i].hc_contrast for i in index],
            "touching": n_touch > 0,
            "n_touching": n_touch.astype(np.int64),
            "overlapping": shared > 0,
            "at_border": edge[1:],
        }
    )
