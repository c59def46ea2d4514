"""Nucleus geometry (irregular ellipses), placement in crowded fields and chromatin texture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Geometry", "random_geometry", "place", "rho_local", "Chromatin", "render_chromatin", "HC_LEVEL"]

N_HARMONICS = 4  # boundary harmonics k = 2..5: low orders bend the outline, none make it spiky
HC_LEVEL = 0.5  # a pixel is heterochromatin where the foci field (peak 1 per focus) is >= this


@dataclass
class Geometry:
    """Nucleus outlines; every array has one entry per nucleus (lengths in px, angles in radians)."""

    cy: np.ndarray
    cx: np.ndarray
    a: np.ndarray  # semi-major axis of the base ellipse
    b: np.ndarray  # semi-minor axis
    angle: np.ndarray  # major axis direction, from the +x (column) axis towards +y (row)
    amps: np.ndarray  # (n, N_HARMONICS) relative boundary modulation of harmonics 2..5
    phases: np.ndarray  # (n, N_HARMONICS)

    def __len__(self) -> int:
        return len(self.cy)

    def reach(self) -> np.ndarray:
        """Largest centre-to-boundary distance of each nucleus (px)."""
        return self.a * (1.0 + np.abs(self.amps).sum(axis=1))

    def subset(self, keep: np.ndarray) -> "Geometry":
        return Geometry(*(getattr(self, f)[keep] for f in ("cy", "cx", "a", "b", "angle", "amps", "phases")))


def random_geometry(
    n: int, rng: np.random.Generator, *, diameter: tuple[float, float], aspect: float, irregularity: float
) -> Geometry:
    """``n`` outlines: equivalent diameter ~ U(diameter), minor/major ratio ~ U(aspect, 1), random angle.

    ``irregularity`` is the largest relative amplitude of the 2nd boundary harmonic (higher ones get 1/k
    of it), 0 = perfect ellipses.
    """
    d = rng.uniform(diameter[0], diameter[1], n)
    ratio = rng.uniform(aspect, 1.0, n)
    a = d / 2 / np.sqrt(ratio)
    b = d / 2 * np.sqrt(ratio)
    k = np.arange(2, 2 + N_HARMONICS)
    amps = rng.uniform(0, 1, (n, N_HARMONICS)) * irregularity * 2 / k
    phases = rng.uniform(0, 2 * np.pi, (n, N_HARMONICS))
    return Geometry(np.zeros(n), np.zeros(n), a, b, rng.uniform(0, np.pi, n), amps, phases)


def _harmonic(theta: np.ndarray, amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    f = np.ones_like(theta)
    for i in range(amps.shape[-1]):
        f = f + amps[..., i] * np.cos((i + 2) * theta + phases[..., i])
    return f


def _rho_at(g: Geometry, idx, py, px) -> np.ndarray:
    """Normalised radial coordinate of points (py, px) w.r.t. nuclei ``idx`` (1 = on the boundary)."""
    dy, dx = py - g.cy[idx], px - g.cx[idx]
    c, s = np.cos(g.angle[idx]), np.sin(g.angle[idx])
    un = (dx * c + dy * s) / g.a[idx]
    vn = (-dx * s + dy * c) / g.b[idx]
    return np.hypot(un, vn) / _harmonic(np.arctan2(vn, un), g.amps[idx], g.phases[idx])


def _radius_towards(g: Geometry, idx, phi) -> np.ndarray:
    """Centre-to-boundary distance of nuclei ``idx`` in direction ``phi`` (px)."""
    return 1.0 / np.maximum(_rho_at(g, idx, g.cy[idx] + np.sin(phi), g.cx[idx] + np.cos(phi)), 1e-9)


def place(
    g: Geometry,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    clump_fraction: float,
    overlap: float,
    tries: int = 25,
    return_index: bool = False,
):
    """Position the nuclei of ``g`` in a field; returns the placed subset (some may not fit).

    A nucleus joins a clump (next to a random placed one, centre distance ``s`` times the sum of the two
    radii along the joining line, ``s ~ U(min(1 - overlap, 0.9), 0.98)``, so they touch or partly overlap) with
    probability ``clump_fraction``, else lands at random without touching anything. No nucleus centre ever
    lies inside another nucleus, so every nucleus keeps an unshared core around its centre. With
    ``return_index`` also returns the indices into ``g`` of the placed nuclei.
    """
    h, w = shape
    n = len(g)
    placed: list[int] = []
    # 0.9-0.98 even for overlap=0: outlines must meet on the pixel grid to touch
    gap_lo = min(max(0.0, 1.0 - overlap), 0.9)
    for i in range(n):
        for _ in range(tries):
            clumped = placed and rng.random() < clump_fraction
            if clumped:
                j = placed[rng.integers(len(placed))]
                phi = rng.uniform(0, 2 * np.pi)
                g.cy[i], g.cx[i] = g.cy[j], g.cx[j]  # radius_towards only needs the orientation
                dist = (_radius_towards(g, [j], phi)[0] + _radius_towards(g, [i], phi + np.pi)[0]) * rng.uniform(
                    gap_lo, 0.98
                )
                cy, cx = g.cy[j] + dist * np.sin(phi), g.cx[j] + dist * np.cos(phi)
                if not (0 <= cy < h and 0 <= cx < w):
                    continue
            else:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            g.cy[i], g.cx[i] = cy, cx
            if not placed:
                placed.append(i)
                break
            idx = np.asarray(placed)
            dy, dx = g.cy[idx] - cy, g.cx[idx] - cx
            dist = np.hypot(dy, dx)
            near = dist < (g.reach()[idx] + g.reach()[i]) * 1.05
            if not near.any():
                placed.append(i)
                break
            idx, dy, dx, dist = idx[near], dy[near], dx[near], dist[near]
            phi = np.arctan2(dy, dx)
            r_sum = _radius_towards(g, idx, phi + np.pi) + _radius_towards(g, np.full(len(idx), i), phi)
            # centres outside each other's outline, with room for the texture to be its own
            ok = (_rho_at(g, idx, cy, cx) > 1.25).all() and (
                _rho_at(g, np.full(len(idx), i), g.cy[idx], g.cx[idx]) > 1.25
            ).all()
            # a lone nucleus keeps a gap; a clump member may overlap up to `overlap` with anyone
            ok = ok and (dist >= r_sum * (gap_lo if clumped else 1.15)).all()
            if ok:
                placed.append(i)
                break
    idx = np.asarray(placed, dtype=int)
    return (g.subset(idx), idx) if return_index else g.subset(idx)


def rho_local(g: Geometry, i: int, shape: tuple[int, int], pad: int = 1):
    """Normalised radius of nucleus ``i`` on its bounding box clipped to the image.

    Returns ``(slices, rho)`` or ``None`` when the box misses the image.
    """
    r = g.reach()[i] + pad
    y0, y1 = max(0, int(np.floor(g.cy[i] - r))), min(shape[0], int(np.ceil(g.cy[i] + r)) + 1)
    x0, x1 = max(0, int(np.floor(g.cx[i] - r))), min(shape[1], int(np.ceil(g.cx[i] + r)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    rho = _rho_at(g, i, yy, xx).astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), rho


@dataclass
class Chromatin:
    """Per-nucleus chromatin parameters (all relative, so they transfer across sizes and intensities).

    brightness : mean euchromatin level (image units before illumination)
    ec_texture : relative standard deviation of the smooth euchromatin texture
    ec_scale : correlation length of that texture as a fraction of the nucleus radius
    edge_drop : relative dimming at the rim (thinner there), intensity ~ 1 - edge_drop * rho**2
    hc_fraction : target fraction of the nucleus area that is heterochromatin
    n_foci : number of heterochromatin foci (with ``hc_fraction`` it sets their size)
    hc_contrast : focus peak above the euchromatin, relative to it (compaction)
    """

    brightness: float = 1.0
    ec_texture: float = 0.1
    ec_scale: float = 0.25
    edge_drop: float = 0.15
    hc_fraction: float = 0.1
    n_foci: int = 8
    hc_contrast: float = 0.6


def render_chromatin(rho: np.ndarray, c: Chromatin, rng: np.random.Generator, radius: float):
    """Noise-free nucleus intensity on a box from its normalised radius ``rho``.

    Returns ``(intensity, inside, hc)``: float32 intensity (0 outside), the outline mask and the
    heterochromatin mask (pixels where the foci field, peak 1 per focus, is >= ``HC_LEVEL``).
    """
    inside = rho <= 1.0
    area = int(inside.sum())
    if area == 0:
        return np.zeros(rho.shape, np.float32), inside, inside.copy()
    ec = rng.standard_normal(rho.shape).astype(np.float32)
    ec = ndi.gaussian_filter(ec, max(0.7, c.ec_scale * radius), mode="reflect", truncate=3.0)
    ec /= max(float(ec.std()), 1e-6)
    profile = 1.0 - c.edge_drop * np.minimum(rho, 1.0) ** 2
    inten = profile * (1.0 + c.ec_texture * ec)
    hc = np.zeros(rho.shape, bool)
    if c.n_foci > 0 and c.hc_fraction > 0:
        # one isolated focus covers pi * 2 ln2 * sigma^2 px above half its peak
        sigma = max(0.6, float(np.sqrt(c.hc_fraction * area / (np.pi * 2 * np.log(2) * c.n_foci))))
        cand = np.flatnonzero(rho.ravel() <= 0.85)
        if cand.size == 0:
            cand = np.flatnonzero(inside.ravel())
        spots = np.zeros(rho.size, np.float32)
        np.add.at(spots, rng.choice(cand, size=c.n_foci, replace=True), 1.0)
        foci = ndi.gaussian_filter(spots.reshape(rho.shape), sigma, mode="constant", truncate=3.0)
        foci *= np.float32(2 * np.pi * sigma**2)  # peak of a lone focus ~ 1
        hc = (foci >= HC_LEVEL) & inside
        inten = inten + c.hc_contrast * foci
    inten = np.where(inside, np.maximum(inten, 0.05) * c.brightness, 0).astype(np.float32)
    return inten, inside, hc
