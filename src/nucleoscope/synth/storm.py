"""STORM-like super-resolution renderings: nuclei as clouds of clustered localisations, built tile by tile.

A single-molecule localisation image is a 2D histogram of localisations: chromatin marks come as small
clusters (nanodomains) with sparse single localisations between them, so nuclei look fragmented with
broken borders, the background is almost empty, and out-of-focus or non-specific labelling leaves
unlabelled "noise regions" of localisations. Frames up to 5120 x 5120 are produced tile by tile: each
nucleus and noise region regenerates its localisations from its own seed whenever a tile needs it, so
only one tile of float data is held at a time and the result does not depend on the tile size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .._errors import InputError
from ._field import touching_pairs, with_spacing
from ._nucleus import Geometry, place, random_geometry, rho_local
from ._optics import as_rng, uniform
from ._sample import SynthSample

__all__ = ["storm_field"]

_CELL = 256  # grid of the background localisation seeds (px)


def _concat(a: Geometry, b: Geometry) -> Geometry:
    return Geometry(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in
                      ("cy", "cx", "a", "b", "angle", "amps", "phases")))


def _localisations(g: Geometry, i: int, frame: tuple[int, int], seed, p: dict, noise: bool):
    """All localisations (y, x in frame px, float64) of object ``i``, regenerated from ``seed``."""
    r = np.random.default_rng(seed)
    box = rho_local(g, i, frame)
    if box is None:
        return np.zeros(0), np.zeros(0)
    (sy, sx), rho = box
    inside = rho <= 1.0
    radius = float(np.sqrt(g.a[i] * g.b[i]))
    # smooth random field: where it is low, chromatin is absent (fragmented texture, broken border)
    blot = ndi.gaussian_filter(r.standard_normal(rho.shape).astype(np.float32), max(1.0, r.uniform(0.03, 0.1) * radius))
    blot /= max(float(blot.std()), 1e-6)
    if noise:
        # out-of-focus / non-specific cloud: diffuse, dimmer towards its rim, no clusters
        dens = np.where(inside, (1.0 - rho**2) * np.exp(0.5 * blot), 0.0) * p["noise_density"]
        clusters, single = 0.0, 1.0
    else:
        keep = blot > np.quantile(blot[inside], p["fragmentation"]) if inside.any() else inside
        rim = 1.0 + p["rim"] * np.exp(-np.clip(1.0 - rho, 0, None) * radius / 2.5)  # lamina enrichment
        # the border is broken where the texture is absent near the rim
        dens = np.where(inside & keep, rim, 0.0) * p["density"]
        for _ in range(r.poisson(p["nucleoli"])):  # nucleoli: dark holes
            core = np.flatnonzero(rho.ravel() < 0.6)
            if core.size == 0:
                break
            cy, cx = np.unravel_index(r.choice(core), rho.shape)
            yy, xx = np.ogrid[: rho.shape[0], : rho.shape[1]]
            dens[(yy - cy) ** 2 + (xx - cx) ** 2 < (radius * r.uniform(0.08, 0.2)) ** 2] = 0
        clusters, single = p["cluster_fraction"], 1.0 - p["cluster_fraction"]
    total = float(dens.sum())
    if total <= 0:
        return np.zeros(0), np.zeros(0)
    prob = (dens / total).ravel()
    ys, xs = [], []
    n_single = r.poisson(single * total)
    if n_single:
        k = r.choice(prob.size, n_single, p=prob)
        ys.append(k // rho.shape[1] + r.uniform(0, 1, n_single))
        xs.append(k % rho.shape[1] + r.uniform(0, 1, n_single))
    n_clusters = r.poisson(clusters * total / p["cluster_size"])
    if n_clusters:
        k = r.choice(prob.size, n_clusters, p=prob)
        per = r.poisson(p["cluster_size"], n_clusters)
        cyc = np.repeat(k // rho.shape[1] + r.uniform(0, 1, n_clusters), per)
        cxc = np.repeat(k % rho.shape[1] + r.uniform(0, 1, n_clusters), per)
        spread = np.repeat(r.uniform(0.5, 1.5, n_clusters) * p["cluster_sigma"], per)
        ys.append(cyc + r.normal(0, 1, cyc.size) * spread)
        xs.append(cxc + r.normal(0, 1, cxc.size) * spread)
    if not ys:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ys) + sy.start, np.concatenate(xs) + sx.start


def _storm_geometry(rng: np.random.Generator, frame: tuple[int, int], diameter: tuple[float, float],
                    p: dict) -> tuple[Geometry, np.ndarray]:
    """Outlines of the nuclei and noise regions that fit in ``frame`` (px), and which are noise, (n,) bool."""
    h, w = frame
    mean_area = np.pi / 4 * np.mean(diameter) ** 2
    n_nuc = max(1, int(round(p["coverage"] * h * w / mean_area)))
    n_noise = int(rng.poisson(p["noise_regions"] * n_nuc))
    nuc = random_geometry(n_nuc, rng, diameter=diameter, aspect=0.55, irregularity=0.06)
    noi = random_geometry(n_noise, rng, diameter=(0.3 * diameter[0], 1.2 * diameter[1]), aspect=0.4,
                          irregularity=0.15)
    g = _concat(nuc, noi)
    is_noise = np.r_[np.zeros(n_nuc, bool), np.ones(n_noise, bool)]
    order = rng.permutation(len(g))  # nuclei and noise regions compete for space fairly
    g = g.subset(order)
    is_noise = is_noise[order]
    # place() keeps the indices of the objects that fit, in order
    g, keep_idx = place(g, (h, w), rng, clump_fraction=p["clump_fraction"], overlap=0.0, return_index=True)
    return g, is_noise[keep_idx]


def _tile_objects(counts: np.ndarray, g: Geometry, hits: np.ndarray, frame: tuple[int, int],
                  tile_box: tuple[int, int, int, int], halo_origin: tuple[int, int], seeds: list, p: dict,
                  is_noise: np.ndarray, label_of: np.ndarray, n_locs: np.ndarray, counted: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Localisations of the objects ``hits`` reaching a tile, added to ``counts`` (the tile plus its halo,
    origin ``halo_origin`` in frame px), and the tile's truth.

    ``tile_box`` is ``(y0, y1, x0, x1)`` in frame px. Each object's localisation count is recorded in
    ``n_locs`` the first time it is generated (``counted``), in place.

    Returns
    -------
    lab_t : ndarray of int32, (y1 - y0, x1 - x0)
        Nucleus labels: where outlines overlap, the object of the smallest normalised radius.
    noise_t : ndarray of bool, same shape
        Inside a noise region.
    """
    y0, y1, x0, x1 = tile_box
    hy0, hx0 = halo_origin
    lab_t = np.zeros((y1 - y0, x1 - x0), np.int32)
    rho_t = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    noise_t = np.zeros((y1 - y0, x1 - x0), bool)
    for k in hits:
        ly, lx = _localisations(g, k, frame, seeds[k], p, bool(is_noise[k]))
        if not counted[k]:
            n_locs[k], counted[k] = ly.size, True
        _histogram(counts, ly - hy0, lx - hx0)
        box = rho_local(g, k, frame)
        if box is None:
            continue
        (sy, sx), rho = box
        # intersect the object's box with this tile
        iy0, iy1 = max(sy.start, y0), min(sy.stop, y1)
        ix0, ix1 = max(sx.start, x0), min(sx.stop, x1)
        if iy0 >= iy1 or ix0 >= ix1:
            continue
        sub = rho[iy0 - sy.start: iy1 - sy.start, ix0 - sx.start: ix1 - sx.start]
        tsl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        if is_noise[k]:
            noise_t[tsl] |= sub <= 1
        else:
            better = (sub <= 1) & (sub < rho_t[tsl])
            rho_t[tsl][better] = sub[better]
            lab_t[tsl][better] = label_of[k]
    return lab_t, noise_t


def _tile_background(counts: np.ndarray, base: int, p: dict, frame: tuple[int, int],
                     halo_box: tuple[int, int, int, int]) -> None:
    """Add the sparse background localisations of the tile plus halo ``halo_box`` (hy0, hy1, hx0, hx1) to
    ``counts``, in place."""
    hy0, hy1, hx0, hx1 = halo_box
    h, w = frame
    # drawn per fixed 256 px cell from the cell's own seed, so that they do not depend on the tile size
    for by in range(hy0 // _CELL * _CELL, hy1, _CELL):
        for bx in range(hx0 // _CELL * _CELL, hx1, _CELL):
            r = np.random.default_rng([base, 2, by, bx])
            bh, bw = min(_CELL, h - by), min(_CELL, w - bx)
            m = r.poisson(p["background_density"] * bh * bw)
            _histogram(counts, by + r.uniform(0, bh, m) - hy0, bx + r.uniform(0, bw, m) - hx0)


def _tile_pairs(labels: np.ndarray, lab_t: np.ndarray, y0: int, x0: int) -> list[np.ndarray]:
    """Touching label pairs within a tile ``lab_t`` at (y0, x0) and across its top and left seams with the
    tiles already written to ``labels``."""
    y1, x1 = y0 + lab_t.shape[0], x0 + lab_t.shape[1]
    pairs = [touching_pairs(lab_t)]
    if y0 > 0:
        pairs.append(touching_pairs(np.stack([labels[y0 - 1, x0:x1], lab_t[0]])))
    if x0 > 0:
        pairs.append(touching_pairs(np.stack([labels[y0:y1, x0 - 1], lab_t[:, 0]], axis=1)))
    return pairs


def _nucleus_table(labels: np.ndarray, g: Geometry, nuclei: np.ndarray, area: np.ndarray, n_locs: np.ndarray,
                   pairs: list[np.ndarray]) -> pd.DataFrame:
    """The per-nucleus truth table: rendered outline (px), label area (px), localisations, border, touching.

    ``nuclei`` (N,) are the rows of ``g`` labelled 1..N, ``area`` (N + 1,) the label areas (0 = background),
    ``n_locs`` the localisation count of every object of ``g``, ``pairs`` the touching pairs of every tile.
    """
    edge = np.zeros(len(nuclei) + 1, bool)
    edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    present = area[1:] > 0
    pairs_all = np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), np.int64)
    n_touch = np.bincount(pairs_all.ravel(), minlength=len(nuclei) + 1)[1:]
    objects = pd.DataFrame({
        "label": np.arange(1, len(nuclei) + 1, dtype=np.int32),
        "center_y": g.cy[nuclei], "center_x": g.cx[nuclei],
        "diameter": 2 * np.sqrt(g.a[nuclei] * g.b[nuclei]),
        "major_axis": 2 * g.a[nuclei], "minor_axis": 2 * g.b[nuclei], "angle": g.angle[nuclei],
        "area": area[1:], "n_localisations": n_locs[nuclei], "at_border": edge[1:],
        "touching": n_touch > 0, "n_touching": n_touch,
    })
    if not present.all():  # cannot happen with centres inside the frame; keep ids 1..N honest anyway
        raise RuntimeError("a STORM nucleus has no pixels")
    return objects


def storm_field(
    shape: tuple[int, int] = (512, 512),
    *,
    rng: int | np.random.Generator | None = None,
    tile: int = 512,
    diameter: tuple[float, float] | None = None,
    coverage: float | None = None,
    clump_fraction: float | None = None,
    density: float | None = None,
    cluster_fraction: float | None = None,
    cluster_size: float | None = None,
    cluster_sigma: float | None = None,
    fragmentation: float | None = None,
    rim: float | None = None,
    nucleoli: float | None = None,
    noise_regions: float | None = None,
    noise_density: float | None = None,
    background_density: float | None = None,
    render_sigma: float | None = None,
    level: float | None = None,
    dtype: str = "uint8",
    out_image: np.ndarray | None = None,
    out_labels: np.ndarray | None = None,
    out_noise: np.ndarray | None = None,
    spacing: float | None = None,
) -> SynthSample:
    """A STORM-like localisation rendering of nuclei with exact truth, generated tile by tile.

    Parameters
    ----------
    shape : (int, int)
        Frame size (Y, X) in px (up to 5120 x 5120 and beyond; memory is the outputs plus one tile).
    rng : int, Generator or None
        Seed or generator.
    tile : int
        Tile side (px) for generation; the output does not depend on it.
    diameter : (float, float), optional
        Nucleus diameter range in px (default D ~ U(50, 110), range (0.8 D, 1.25 D)).
    coverage : float, optional
        Fraction of the frame covered by nuclei (default U(0.15, 0.4)).
    clump_fraction : float, optional
        Probability a nucleus is placed touching another (default U(0, 0.4); no overlaps).
    density : float, optional
        Mean localisations per px^2 inside nuclei (default log-U(0.2, 2)).
    cluster_fraction, cluster_size, cluster_sigma : float, optional
        Share of localisations in clusters (default U(0.6, 0.95)), mean localisations per cluster
        (U(4, 15)) and cluster spread in px (U(0.6, 1.6)).
    fragmentation : float, optional
        Fraction of each nucleus without chromatin signal, in patches (default U(0.1, 0.6)).
    rim : float, optional
        Enrichment at the nuclear rim (lamina), relative (default U(0, 1.5)).
    nucleoli : float, optional
        Mean number of dark nucleolar holes per nucleus (default U(0, 1.5)).
    noise_regions : float, optional
        Noise regions (unlabelled clouds) per nucleus (default U(0, 0.3)).
    noise_density : float, optional
        Their peak localisation density relative to the nuclei's (default U(0.3, 1) x density).
    background_density : float, optional
        Uniform background localisations per px^2 (default log-U(3e-5, 1e-3)).
    render_sigma : float, optional
        Gaussian rendering kernel in px (default U(0.4, 0.9)).
    level : float, optional
        Output value of the mean nucleus localisation density (default U(20, 80) for uint8, x 257 uint16).
    dtype : {"uint8", "uint16"}
        Output type of the rendering (clipped at full scale, as real renderings saturate).
    out_image, out_labels, out_noise : ndarray, optional
        Preallocated outputs of ``shape`` (e.g. ``tifffile.memmap``): image ``dtype``, labels int32, noise
        mask bool. Allocated when not given.
    spacing : float, optional
        Pixel size in µm; when given, ``objects`` also has ``*_um`` lengths and ``*_um2`` areas and
        ``params["spacing"]`` records it (the rendering itself is in px).

    Returns
    -------
    SynthSample
        ``image`` (Y, X) ``dtype``; ``labels`` (Y, X) int32 1..N, the nucleus outlines (touching nuclei
        split by nearest normalised radius); ``noise_mask`` (Y, X) bool, the outlines of the noise regions
        (never labelled); ``objects`` with label, center_y/x, diameter, major_axis, minor_axis, angle,
        area (label px), n_localisations, at_border, touching, n_touching; ``params``.
    """
    rng = as_rng(rng)
    if dtype not in ("uint8", "uint16"):
        raise InputError(f"dtype must be 'uint8' or 'uint16' for STORM renderings, got {dtype!r}")
    if tile < 32:
        raise InputError(f"tile must be >= 32 px, got {tile}")
    h, w = int(shape[0]), int(shape[1])
    if diameter is None:
        d0 = rng.uniform(50, 110)
        diameter = (0.8 * d0, 1.25 * d0)
    p = {
        "diameter": tuple(float(v) for v in diameter),
        "coverage": uniform(rng, coverage, 0.15, 0.4),
        "clump_fraction": uniform(rng, clump_fraction, 0.0, 0.4),
        "density": uniform(rng, density, 0.2, 2.0, log=True),
        "cluster_fraction": uniform(rng, cluster_fraction, 0.6, 0.95),
        "cluster_size": uniform(rng, cluster_size, 4.0, 15.0),
        "cluster_sigma": uniform(rng, cluster_sigma, 0.6, 1.6),
        "fragmentation": uniform(rng, fragmentation, 0.1, 0.6),
        "rim": uniform(rng, rim, 0.0, 1.5),
        "nucleoli": uniform(rng, nucleoli, 0.0, 1.5),
        "noise_regions": uniform(rng, noise_regions, 0.0, 0.3),
        "background_density": uniform(rng, background_density, 3e-5, 1e-3, log=True),
        "render_sigma": uniform(rng, render_sigma, 0.4, 0.9),
        "dtype": dtype,
    }
    p["noise_density"] = uniform(rng, noise_density, 0.3, 1.0) * p["density"]
    fs = 255.0 if dtype == "uint8" else 65535.0
    p["level"] = uniform(rng, level, 20.0, 80.0) * (1.0 if dtype == "uint8" else 257.0)
    g, is_noise = _storm_geometry(rng, (h, w), diameter, p)
    base = int(rng.integers(2**63))
    seeds = [[base, 1, k] for k in range(len(g))]
    nuclei = np.flatnonzero(~is_noise)
    label_of = np.zeros(len(g), np.int64)
    label_of[nuclei] = np.arange(1, len(nuclei) + 1)

    image = out_image if out_image is not None else np.zeros((h, w), dtype)
    labels = out_labels if out_labels is not None else np.zeros((h, w), np.int32)
    noise_mask = out_noise if out_noise is not None else np.zeros((h, w), bool)
    for arr, name in ((image, "out_image"), (labels, "out_labels"), (noise_mask, "out_noise")):
        if arr.shape != (h, w):
            raise InputError(f"{name} must have shape {(h, w)}, got {arr.shape}")
    halo = int(np.ceil(3 * p["render_sigma"])) + 1
    reach = g.reach() + 2
    n_locs = np.zeros(len(g), np.int64)
    counted = np.zeros(len(g), bool)
    area = np.zeros(len(nuclei) + 1, np.int64)
    pairs: list[np.ndarray] = []
    gain = p["level"] / p["density"]  # output units per localisation per px^2
    for ty in range(0, h, tile):
        for tx in range(0, w, tile):
            y0, y1, x0, x1 = ty, min(h, ty + tile), tx, min(w, tx + tile)
            hy0, hy1, hx0, hx1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            hits = np.flatnonzero((g.cy + reach > hy0) & (g.cy - reach < hy1) & (g.cx + reach > hx0)
                                  & (g.cx - reach < hx1))
            counts = np.zeros((hy1 - hy0, hx1 - hx0), np.float32)
            lab_t, noise_t = _tile_objects(counts, g, hits, (h, w), (y0, y1, x0, x1), (hy0, hx0), seeds, p,
                                           is_noise, label_of, n_locs, counted)
            _tile_background(counts, base, p, (h, w), (hy0, hy1, hx0, hx1))
            # in place: the tile's counts are the only float image held
            ndi.gaussian_filter(counts, p["render_sigma"], output=counts, mode="constant", truncate=3.0)
            rendered = counts[y0 - hy0: y1 - hy0, x0 - hx0: x1 - hx0]
            rendered *= np.float32(gain)
            np.rint(rendered, out=rendered)
            np.clip(rendered, 0, fs, out=rendered)
            image[y0:y1, x0:x1] = rendered
            noise_mask[y0:y1, x0:x1] = noise_t & (lab_t == 0)
            labels[y0:y1, x0:x1] = lab_t
            pairs += _tile_pairs(labels, lab_t, y0, x0)
            area += np.bincount(lab_t[lab_t > 0], minlength=len(area))  # foreground only: less memory
            del counts, rendered, lab_t, noise_t  # free before the next tile allocates its own
    objects = _nucleus_table(labels, g, nuclei, area, n_locs, pairs)
    p.update(n_nuclei=len(nuclei), n_noise_regions=int(is_noise.sum()), tile=tile)
    objects = with_spacing(objects, spacing, p)
    return SynthSample(image=image, labels=labels, objects=objects, noise_mask=noise_mask, params=p)


def _histogram(counts: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """Add localisations at (y, x) (px, relative to ``counts``) to the 2D histogram ``counts``."""
    iy, ix = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    ok = (iy >= 0) & (iy < counts.shape[0]) & (ix >= 0) & (ix < counts.shape[1])
    if not ok.any():
        return
    iy, ix = iy[ok], ix[ok]
    # bin within the points' own bounding box: a tile-sized int64 array per object would dominate memory
    y0, x0 = iy.min(), ix.min()
    bh, bw = iy.max() - y0 + 1, ix.max() - x0 + 1
    flat = np.bincount((iy - y0) * bw + (ix - x0), minlength=bh * bw)
    counts[y0: y0 + bh, x0: x0 + bw] += flat.reshape(bh, bw).astype(np.float32)
