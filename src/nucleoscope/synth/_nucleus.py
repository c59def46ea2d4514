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
    return _rho_rel(g, idx, py - g.cy[idx], px - g.cx[idx])


def _rho_rel(g: Geometry, idx, dy, dx) -> np.ndarray:
    """Normalised radius of offsets (dy, dx) from the centres of nuclei ``idx`` (broadcasting)."""
    c, s = np.cos(g.angle[idx]), np.sin(g.angle[idx])
    un = (dx * c + dy * s) / g.a[idx]
    vn = (-dx * s + dy * c) / g.b[idx]
    return np.hypot(un, vn) / _harmonic(np.arctan2(vn, un), g.amps[idx], g.phases[idx])


def _radius_towards(g: Geometry, idx, phi) -> np.ndarray:
    """Centre-to-boundary distance of nuclei ``idx`` in direction ``phi`` (px)."""
    return 1.0 / np.maximum(_rho_rel(g, idx, np.sin(phi), np.cos(phi)), 1e-9)


def place(
    g: Geometry,
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    clump_fraction: float,
    overlap: float,
    tries: int = 24,
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
    placed = np.empty(n, dtype=int)
    m = 0
    # 0.9-0.98 even for overlap=0: outlines must meet on the pixel grid to touch
    gap_lo = min(max(0.0, 1.0 - overlap), 0.9)
    reach = g.reach()
    inner = g.b * np.clip(1.0 - np.abs(g.amps).sum(axis=1), 0.05, None)  # shortest centre-boundary distance
    misses = 0
    batch = 8  # candidate positions tested together (vectorised); most nuclei fit in the first batch
    # grid of placed centres, cells as wide as the largest interaction distance, so that a candidate only
    # meets the nuclei in the 3 x 3 cells around it (crowded fields hold thousands)
    cell = max(1.0, 2.1 * float(reach.max()) if n else 1.0)
    grid: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        found = None
        for _ in range(0, tries, batch):
            found = _try_batch(g, i, placed[:m], rng, shape, batch, clump_fraction, gap_lo, reach, inner,
                               grid, cell)
            if found is not None:
                break
        if found is None:
            misses += 1
            if misses >= 30:  # the field is full: stop trying rather than spin
                break
            continue
        g.cy[i], g.cx[i] = found
        grid.setdefault((int(found[0] // cell), int(found[1] // cell)), []).append(i)
        placed[m] = i
        m += 1
        misses = 0
    placed = placed[:m]
    return (g.subset(placed), placed) if return_index else g.subset(placed)


def _try_batch(g, i, idx, rng, shape, t, clump_fraction, gap_lo, reach, inner, grid, cell):
    """Test ``t`` candidate centres for nucleus ``i`` against the placed ``idx``; first valid or None."""
    h, w = shape
    if idx.size == 0:
        return rng.uniform(0, h), rng.uniform(0, w)
    clumped = rng.random(t) < clump_fraction
    j = idx[rng.integers(idx.size, size=t)]
    phi = rng.uniform(0, 2 * np.pi, t)
    # radii of partner and candidate along the joining line, in one call (per-call overhead dominates)
    rr = _rho_rel(g, np.r_[j, np.full(t, i)], np.r_[np.sin(phi), -np.sin(phi)], np.r_[np.cos(phi), -np.cos(phi)])
    rr = 1.0 / np.maximum(rr, 1e-9)
    gap = (rr[:t] + rr[t:]) * rng.uniform(gap_lo, 0.98, t)
    cy = np.where(clumped, g.cy[j] + gap * np.sin(phi), rng.uniform(0, h, t))
    cx = np.where(clumped, g.cx[j] + gap * np.cos(phi), rng.uniform(0, w, t))
    good = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    # only placed nuclei in the grid cells around the candidates can interact with them
    keys = {(int(a // cell) + u, int(b // cell) + v) for a, b in zip(cy[good], cx[good])
            for u in (-1, 0, 1) for v in (-1, 0, 1)}
    idx = np.asarray([k for key in keys for k in grid.get(key, ())], dtype=int)
    if idx.size == 0:
        hit = np.flatnonzero(good)
        return (float(cy[hit[0]]), float(cx[hit[0]])) if hit.size else None
    dy = g.cy[idx][None, :] - cy[:, None]  # (t, m): candidate -> placed centre
    dx = g.cx[idx][None, :] - cx[:, None]
    dist = np.hypot(dy, dx)
    near = dist < (reach[idx][None, :] + reach[i]) * 1.05
    # cheap rejections first (bounds from the shortest radius)
    bad = near & (dist < 1.25 * np.maximum(inner[idx][None, :], inner[i]))
    bad |= near & ~clumped[:, None] & (dist < 1.15 * (inner[idx][None, :] + inner[i]))
    good &= ~bad.any(axis=1)
    pt, pk = np.nonzero(near & good[:, None])
    if pt.size:
        # exact outlines: centres outside each other's outline (with room for their own texture); a lone
        # nucleus keeps a gap, a clump member may overlap up to `overlap`
        k = idx[pk]
        ddy, ddx, dd = dy[pt, pk], dx[pt, pk], dist[pt, pk]
        q = k.size
        ang = np.arctan2(ddy, ddx)
        s_, c_ = np.sin(ang), np.cos(ang)
        mine = np.full(q, i)
        rr = _rho_rel(g, np.r_[k, mine, k, mine], np.r_[-s_, s_, -ddy, ddy], np.r_[-c_, c_, -ddx, ddx])
        r_sum = 1.0 / np.maximum(rr[:q], 1e-9) + 1.0 / np.maximum(rr[q: 2 * q], 1e-9)
        ok = (rr[2 * q: 3 * q] > 1.25) & (rr[3 * q:] > 1.25)
        ok &= dd >= r_sum * np.where(clumped[pt], gap_lo, 1.15)
        good[pt[~ok]] = False
    hit = np.flatnonzero(good)
    return (float(cy[hit[0]]), float(cx[hit[0]])) if hit.size else None


def rho_local(g: Geometry, i: int, shape: tuple[int, int], pad: int = 1):
    """Normalised radius of nucleus ``i`` on its bounding box clipped to the image.

    Returns ``(slices, rho)`` or ``None`` when the box misses the image.
    """
    r = g.a[i] * (1.0 + np.abs(g.amps[i]).sum()) + pad  # reach of this nucleus only
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


def render_chromatin(
    rho: np.ndarray, c: Chromatin, rng: np.random.Generator, radius: float, ec: np.ndarray | None = None
):
    """Noise-free nucleus intensity on a box from its normalised radius ``rho``.

    ``ec`` is an optional unit-variance smooth noise patch for the euchromatin texture (a field renders one
    for the whole image at once); without it the nucleus draws its own at ``c.ec_scale * radius``.

    Returns ``(intensity, inside, hc)``: float32 intensity (0 outside), the outline mask and the
    heterochromatin mask (pixels where the foci field, peak 1 per focus, is >= ``HC_LEVEL``).
    """
    inside = rho <= 1.0
    area = int(inside.sum())
    if area == 0:
        return np.zeros(rho.shape, np.float32), inside, inside.copy()
    if ec is None:
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
        k = rng.choice(cand, size=c.n_foci, replace=True)
        fy = k // rho.shape[1] + rng.uniform(-0.5, 0.5, c.n_foci)
        fx = k % rho.shape[1] + rng.uniform(-0.5, 0.5, c.n_foci)
        # sum of Gaussians of peak 1, separable: (n, Y)^T @ (n, X) is one small matrix product
        gy = np.exp(-((np.arange(rho.shape[0])[None, :] - fy[:, None]) ** 2) / (2 * sigma**2)).astype(np.float32)
        gx = np.exp(-((np.arange(rho.shape[1])[None, :] - fx[:, None]) ** 2) / (2 * sigma**2)).astype(np.float32)
        foci = gy.T @ gx
        hc = (foci >= HC_LEVEL) & inside
        inten = inten + c.hc_contrast * foci
    inten = np.where(inside, np.maximum(inten, 0.05) * c.brightness, 0).astype(np.float32)
    return inten, inside, hc
