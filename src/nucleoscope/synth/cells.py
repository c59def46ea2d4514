"""Whole cells: a nucleus channel and a cell channel (cytoplasm + membrane, or bright-field-like) with
cell labels that contain their nucleus, cells touching in clumps and cells at clump edges."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, watershed

from .._errors import InputError
from ._artifacts import render_artifacts
from ._field import add_hc_ec, object_table, render_nuclei, touching_pairs, with_spacing
from ._nucleus import Chromatin, Geometry, _rho_at, place, random_geometry, rho_local
from ._optics import DType, as_rng, camera, full_scale, illumination, psf_blur, uniform
from ._sample import SynthSample

__all__ = ["cells_field"]


def _nuclei_inside(
    gc: Geometry, rng: np.random.Generator, ratio: tuple[float, float], aspect: float, shape: tuple[int, int]
) -> Geometry:
    """One nucleus per cell, wholly inside its cell, clear of every other cell's outline, centre in the image
    (so every labelled cell has its nucleus labelled)."""
    n = len(gc)
    gn = random_geometry(n, rng, diameter=(1.0, 1.0), aspect=aspect, irregularity=0.03)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    d_cell = 2 * np.sqrt(gc.a * gc.b)
    for i in range(n):
        scale = rng.uniform(*ratio) * d_cell[i]  # nucleus equivalent diameter (px)
        gn.a[i], gn.b[i] = gn.a[i] * scale, gn.b[i] * scale
        gn.angle[i] = gc.angle[i] + rng.normal(0, 0.4)
        near = np.flatnonzero(np.hypot(gc.cy - gc.cy[i], gc.cx - gc.cx[i]) < 1.2 * (gc.reach() + gc.reach()[i]))
        near = near[near != i]
        for attempt in range(30):
            shift = 0.35 * (1 - attempt / 30)  # start off-centre, fall back towards the cell centre
            off = rng.uniform(-1, 1, 2) * shift * gc.b[i]
            gn.cy[i], gn.cx[i] = gc.cy[i] + off[0], gc.cx[i] + off[1]
            # outline points of the nucleus (its reach along each direction, irregularity included)
            c, s = np.cos(gn.angle[i]), np.sin(gn.angle[i])
            rad = gn.a[i] * gn.b[i] / np.hypot(gn.b[i] * np.cos(t), gn.a[i] * np.sin(t))
            rad = rad * (1 + np.abs(gn.amps[i]).sum())
            py = gn.cy[i] + rad * (np.cos(t) * s + np.sin(t) * c)
            px = gn.cx[i] + rad * (np.cos(t) * c - np.sin(t) * s)
            ok = 0 <= gn.cy[i] < shape[0] and 0 <= gn.cx[i] < shape[1]
            ok = ok and _rho_at(gc, np.full(t.size, i), py, px).max() < 0.85
            if ok and near.size:
                ok = all(_rho_at(gc, np.full(t.size, j), py, px).min() > 1.05 for j in near)
            if ok:
                break
        else:  # shrink until it fits at the centre
            gn.cy[i], gn.cx[i] = gc.cy[i], gc.cx[i]
            gn.a[i] *= 0.7
            gn.b[i] *= 0.7
    return gn


def _cell_labels(gc: Geometry, nuc_labels: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell labels from the cell outlines, each cell containing its nucleus, ids 1..N kept for cells that
    reach the image.

    Returns
    -------
    cell_labels, nuc_labels : ndarray of int32, (Y, X)
        Renumbered so that the nucleus of cell ``i`` is labelled ``i``.
    present : ndarray of int, (N,)
        The cells' original ids (1-based index into ``gc`` + 1), in label order.
    """
    # cells: unshared outline pixels and the nucleus seed each cell; shared pixels go by a watershed on the
    # smallest normalised radius, so cell i always contains nucleus i
    rho_min = np.full(shape, np.inf, np.float32)
    owner = np.zeros(shape, np.int32)
    covered = np.zeros(shape, np.uint8)
    for i in range(len(gc)):
        box = rho_local(gc, i, shape)
        if box is None:
            continue
        sl, rho = box
        inside = rho <= 1
        covered[sl] += inside
        better = inside & (rho < rho_min[sl])
        rho_min[sl][better] = rho[better]
        owner[sl][better] = i + 1
    markers = np.where(covered == 1, owner, 0)
    markers[nuc_labels > 0] = nuc_labels[nuc_labels > 0]
    union = (covered > 0) | (nuc_labels > 0)
    elevation = np.where(np.isfinite(rho_min), rho_min, 0.0).astype(np.float32)
    cell_labels = watershed(elevation, markers, mask=union).astype(np.int32)
    lost = (cell_labels == 0) & union
    cell_labels[lost] = owner[lost]

    # keep ids 1..N for cells that reach the image, with the nucleus of cell i labelled i
    present = np.unique(cell_labels)
    present = present[present > 0]
    remap = np.zeros(len(gc) + 1, np.int32)
    remap[present] = np.arange(1, present.size + 1)
    cell_labels = remap[cell_labels]
    nuc_labels = remap[nuc_labels]
    return cell_labels, nuc_labels, present


def _cell_channel(rng: np.random.Generator, cell_labels: np.ndarray, nuc_labels: np.ndarray, n_cells: int,
                  p: dict, illum: np.ndarray, *, fs: float, dtype: DType) -> np.ndarray:
    """The cell channel (Y, X) ``dtype`` of ``n_cells`` labelled cells: cytoplasm and membrane
    (``p["cell_mode"] == "fluorescence"``) or bright-field-like, with its own camera noise."""
    level = np.r_[0.0, rng.lognormal(0, 0.3, n_cells)].astype(np.float32)
    tex = ndi.gaussian_filter(rng.standard_normal(cell_labels.shape).astype(np.float32), rng.uniform(1.5, 4.0))
    tex /= max(float(tex.std()), 1e-6)
    cyto = level[cell_labels] * np.clip(1 + p["cytoplasm_texture"] * tex, 0.1, None)
    cyto[nuc_labels > 0] *= p["nuclear_exclusion"]
    edges = find_boundaries(cell_labels, mode="inner").astype(np.float32)
    if p["cell_mode"] == "fluorescence":
        cell_sharp = (cyto + p["membrane"] * edges * level[cell_labels]) * np.float32(p["signal"] * fs)
        cell_sharp += np.float32(p["background"] * fs)
    else:
        # transmitted light: bright field, cells absorb a little, edges scatter (dark) with a faint halo
        cells = (cell_labels > 0).astype(np.float32)
        halo = ndi.gaussian_filter(cells, 3.0) - cells
        bright = 0.55 * fs
        dark_edge = 0.25 * edges * (0.5 + 0.5 * p["membrane"])
        cell_sharp = bright * (1 - 0.08 * cyto - dark_edge + 0.15 * np.clip(halo, 0, None))
        cell_sharp = cell_sharp.astype(np.float32)
    cell_clean = psf_blur(cell_sharp * illum, p["psf_sigma"]).astype(np.float32)
    return camera(cell_clean, rng, dtype=dtype, fs=fs, photons_full_scale=p["photons"],
                  read_noise=p["read_noise"] * fs)


def _add_cell_columns(objects: pd.DataFrame, cell_labels: np.ndarray, gc: Geometry, index: np.ndarray
                      ) -> pd.DataFrame:
    """The nucleus table with the cell columns added: area (px), centroid, diameter (px), touching, clump edge.

    ``index`` (N,) gives the row of ``gc`` of cell label ``k + 1``.
    """
    shape = cell_labels.shape
    m = index.size
    flat = cell_labels.ravel()
    cell_area = np.bincount(flat, minlength=m + 1)[1:]
    yy, xx = np.indices(shape)
    pairs = touching_pairs(cell_labels)
    n_touch = np.bincount(pairs.ravel(), minlength=m + 1)[1:] if len(pairs) else np.zeros(m, int)
    # a cell on a clump edge touches other cells and also the background
    bg_ring = ndi.binary_dilation(cell_labels == 0) & (cell_labels > 0)
    touches_bg = np.bincount(cell_labels[bg_ring], minlength=m + 1)[1:] > 0
    objects["cell_area"] = cell_area
    objects["cell_centroid_y"] = np.bincount(flat, weights=yy.ravel(), minlength=m + 1)[1:] / np.maximum(cell_area, 1)
    objects["cell_centroid_x"] = np.bincount(flat, weights=xx.ravel(), minlength=m + 1)[1:] / np.maximum(cell_area, 1)
    objects["cell_diameter"] = 2 * np.sqrt(gc.a[index] * gc.b[index])
    objects["cell_touching"] = n_touch > 0
    objects["cell_n_touching"] = n_touch
    objects["clump_edge"] = (n_touch > 0) & touches_bg
    return objects


def cells_field(
    shape: tuple[int, int] = (512, 512),
    *,
    rng: int | np.random.Generator | None = None,
    cell_diameter: tuple[float, float] | None = None,
    nucleus_ratio: tuple[float, float] | None = None,
    coverage: float | None = None,
    clump_fraction: float | None = None,
    overlap: float | None = None,
    aspect: float | None = None,
    irregularity: float | None = None,
    cell_mode: Literal["fluorescence", "brightfield"] = "fluorescence",
    membrane: float | None = None,
    cytoplasm_texture: float | None = None,
    nuclear_exclusion: float | None = None,
    artifacts: float | None = 0.0,
    illumination_strength: float | None = None,
    psf_sigma: float | None = None,
    background: float | None = None,
    signal: float | None = None,
    photons: float | None = None,
    read_noise: float | None = 0.001,
    dtype: DType = "uint16",
    bit_depth: int = 12,
    spacing: float | None = None,
) -> SynthSample:
    """Cells in clumps, each with one nucleus, rendered as a nucleus channel and a cell channel.

    Parameters
    ----------
    shape : (int, int)
        Image size (Y, X) in px.
    rng : int, Generator or None
        Seed or generator.
    cell_diameter : (float, float), optional
        Cell equivalent diameter range in px (default D ~ U(40, 90), range (0.8 D, 1.25 D)).
    nucleus_ratio : (float, float), optional
        Nucleus / cell diameter range (default (0.35, 0.55)).
    coverage : float, optional
        Fraction of the image covered by cells (default U(0.25, 0.6)).
    clump_fraction : float, optional
        Probability a cell is placed against another one (default U(0.4, 0.95)).
    overlap : float, optional
        Largest relative overlap of neighbouring cell outlines, split by a watershed (default U(0.05, 0.3)).
    aspect, irregularity : float, optional
        Smallest minor/major ratio (default U(0.5, 0.85)) and outline harmonics (default U(0.05, 0.15)) of
        the cells.
    cell_mode : {"fluorescence", "brightfield"}
        Cell channel: cytoplasm stain with a brighter membrane, or a bright-field-like transmitted image
        (bright background, darker cells with dark edges and a faint halo).
    membrane : float, optional
        Membrane brightness relative to the cytoplasm (default U(0, 2)).
    cytoplasm_texture : float, optional
        Relative SD of the cytoplasm texture (default U(0.1, 0.4)).
    nuclear_exclusion : float, optional
        Cell-channel intensity over the nucleus relative to the cytoplasm (default U(0.3, 1.0)).
    artifacts : float, optional
        Artifact level in the nucleus channel, as in ``nuclei_field`` (default 0).
    illumination_strength, psf_sigma, background, signal, photons, read_noise, dtype, bit_depth
        As in ``nuclei_field`` (applied to both channels).
    spacing : float, optional
        Pixel size in µm; when given, ``objects`` also has ``*_um`` lengths and ``*_um2`` areas and
        ``params["spacing"]`` records it (the rendering itself is in px).

    Returns
    -------
    SynthSample
        ``image`` nucleus channel and ``cell_image`` cell channel, (Y, X) ``dtype``; ``labels`` nuclei and
        ``cell_labels`` cells, (Y, X) int32, cell ``i`` contains nucleus ``i``; ``clean`` (nucleus
        channel, noise-free), ``hc_mask``, ``artifact_mask``; ``objects`` one row per cell: the nucleus
        columns of ``nuclei_field`` plus cell_area, cell_centroid_y/x, cell_diameter, cell_touching,
        cell_n_touching, clump_edge (the cell touches other cells and the background).
    """
    rng = as_rng(rng)
    if cell_mode not in ("fluorescence", "brightfield"):
        raise InputError(f"cell_mode must be 'fluorescence' or 'brightfield', got {cell_mode!r}")
    shape = (int(shape[0]), int(shape[1]))
    fs = full_scale(dtype, bit_depth)
    if cell_diameter is None:
        d0 = rng.uniform(40, 90)
        cell_diameter = (0.8 * d0, 1.25 * d0)
    nucleus_ratio = nucleus_ratio or (0.35, 0.55)
    if not 0 < nucleus_ratio[0] <= nucleus_ratio[1] < 0.8:
        raise InputError(f"nucleus_ratio must satisfy 0 < low <= high < 0.8, got {nucleus_ratio}")
    p = {
        "cell_diameter": tuple(float(v) for v in cell_diameter),
        "nucleus_ratio": tuple(float(v) for v in nucleus_ratio),
        "coverage": uniform(rng, coverage, 0.25, 0.6),
        "clump_fraction": uniform(rng, clump_fraction, 0.4, 0.95),
        "overlap": uniform(rng, overlap, 0.05, 0.3),
        "aspect": uniform(rng, aspect, 0.5, 0.85),
        "irregularity": uniform(rng, irregularity, 0.05, 0.15),
        "cell_mode": cell_mode,
        "membrane": uniform(rng, membrane, 0.0, 2.0),
        "cytoplasm_texture": uniform(rng, cytoplasm_texture, 0.1, 0.4),
        "nuclear_exclusion": uniform(rng, nuclear_exclusion, 0.3, 1.0),
        "illumination_strength": uniform(rng, illumination_strength, 0.0, 0.3),
        "psf_sigma": uniform(rng, psf_sigma, 0.6, 1.5),
        "background": uniform(rng, background, 0.003, 0.05),
        "signal": uniform(rng, signal, 0.08, 0.3),
        "photons": uniform(rng, photons, 500.0, 20000.0, log=True),
        "read_noise": uniform(rng, read_noise, 0.0003, 0.003),
        "dtype": dtype,
    }
    mean_area = np.pi / 4 * np.mean(cell_diameter) ** 2
    n = max(1, int(round(p["coverage"] * shape[0] * shape[1] / mean_area)))
    gc = random_geometry(n, rng, diameter=cell_diameter, aspect=p["aspect"], irregularity=p["irregularity"])
    gc = place(gc, shape, rng, clump_fraction=p["clump_fraction"], overlap=p["overlap"])
    gn = _nuclei_inside(gc, rng, nucleus_ratio, aspect=0.6, shape=shape)
    chroma = [
        Chromatin(brightness=float(rng.lognormal(0, 0.25)), ec_texture=rng.uniform(0.05, 0.15),
                  ec_scale=rng.uniform(0.15, 0.4), edge_drop=rng.uniform(0, 0.3),
                  hc_fraction=rng.uniform(0.03, 0.15), n_foci=int(1 + rng.poisson(8)),
                  hc_contrast=rng.uniform(0.2, 0.8))
        for _ in range(len(gn))
    ]
    sharp, nuc_labels, hc_mask, nuc_covered = render_nuclei(gn, chroma, shape, rng)

    cell_labels, nuc_labels, present = _cell_labels(gc, nuc_labels, shape)
    index = present - 1

    # nucleus channel
    counts = {"polygons": 0, "fibres": 0, "debris": 0, "blobs": 0}
    if artifacts:
        counts = {k: int(rng.poisson(artifacts * m)) for k, m in
                  {"polygons": 1.0, "fibres": 1.0, "debris": 5.0, "blobs": 1.5}.items()}
    art, art_mask = render_artifacts(shape, rng, diameter=float(np.mean(cell_diameter) * 0.45), brightness=1.0,
                                     counts=counts)
    illum = illumination(shape, rng, p["illumination_strength"])
    clean = ((sharp + art) * np.float32(p["signal"] * fs) + np.float32(p["background"] * fs)) * illum
    clean = psf_blur(clean, p["psf_sigma"]).astype(np.float32)
    image = camera(clean, rng, dtype=dtype, fs=fs, photons_full_scale=p["photons"], read_noise=p["read_noise"] * fs)

    cell_image = _cell_channel(rng, cell_labels, nuc_labels, present.size, p, illum, fs=fs, dtype=dtype)

    objects = object_table(nuc_labels, gn, chroma, index=index, hc_mask=hc_mask, covered=nuc_covered)
    background = psf_blur(np.float32(p["background"] * fs) * illum, p["psf_sigma"])
    objects = add_hc_ec(objects, nuc_labels, clean, background, hc_mask)
    objects = _add_cell_columns(objects, cell_labels, gc, index)
    p["artifact_counts"] = counts
    objects = with_spacing(objects, spacing, p)
    return SynthSample(image=image, labels=nuc_labels, objects=objects, clean=clean, artifact_mask=art_mask,
                       hc_mask=hc_mask, cell_image=cell_image, cell_labels=cell_labels, params=p)
