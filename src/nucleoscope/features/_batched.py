"""Texture of every nucleus of a label image at once: the per-nucleus definitions of ``_texture``,
vectorised over nuclei.

:func:`measure_nuclei` used to crop each nucleus and call the per-nucleus functions; most of that time
was Python and library overhead per call, not arithmetic. The functions here take the whole image and
the renumbered label image (``seq``: object k is label k + 1, 0 = background) and return an
``(N, columns)`` array equal to stacking the per-nucleus results (tests/test_features_batched.py
asserts it on real images). The per-nucleus functions stay the public API for single crops/patches.
"""

from __future__ import annotations

import numpy as np

from ._texture import _LBP_POINTS, LBP_RADII
from ._texture import ZERNIKE_DEGREE as _ZERNIKE_DEGREE

__all__ = [
    "NucleusPixels",
    "haralick_batched",
    "lbp_batched",
    "group_range",
    "nucleus_pixels",
    "otsu_batched",
    "pftas_batched",
    "zernike_batched",
]

# mahotas's four 2-D co-occurrence directions (row, col), in its order
_DELTAS = ((0, 1), (1, 1), (1, 0), (1, -1))


class NucleusPixels:
    """The nucleus pixels of a label image, flattened once for every batched group.

    Attributes
    ----------
    n : int
        Number of nuclei N.
    shape : (Y, X)
    flat : (P,) intp ndarray
        Flat indices of the nucleus pixels (label > 0), ascending.
    lab : (P,) intp ndarray
        Their object index 0..N-1.
    values : (P,) float64 ndarray
        Their intensities.
    area : (N,) int64 ndarray
        Pixels per nucleus.
    rows, cols : (P,) intp ndarray
        Image coordinates of the pixels (shared by the groups that need neighbours or positions).
    lo, hi : (N,) float64 ndarray
        Each nucleus's minimum and maximum intensity.
    """

    def __init__(self, image: np.ndarray, seq: np.ndarray, n: int) -> None:
        self.n = n
        self.shape = seq.shape
        s = seq.ravel()
        self.flat = np.flatnonzero(s)
        self.lab = s[self.flat].astype(np.intp) - 1
        self.values = image.ravel()[self.flat].astype(np.float64)
        self.area = np.bincount(self.lab, minlength=n)
        self.rows, self.cols = np.divmod(self.flat, seq.shape[1])
        self.lo, self.hi = group_range(self.values, self.lab, n)


def group_range(values: np.ndarray, lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of ``values`` per group 0..n-1 of ``lab``, (N,) each; +inf / -inf for an empty group."""
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, lab, values)  # ~5x faster than ndimage.minimum(labels, index), which sorts
    np.maximum.at(hi, lab, values)
    return lo, hi


def nucleus_pixels(image: np.ndarray, seq: np.ndarray, n: int) -> NucleusPixels:
    """:class:`NucleusPixels` of ``image`` (Y, X) under ``seq`` (Y, X, objects 1..n)."""
    return NucleusPixels(image, seq, n)


def _quantize(px: NucleusPixels, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~nucleoscope.features.quantize` of every nucleus: (P,) levels 1..levels, (N,) hi > lo."""
    lo, hi = px.lo, px.hi
    varied = hi > lo
    plo, phi = lo[px.lab], hi[px.lab]
    with np.errstate(divide="ignore", invalid="ignore"):
        # the same float expression as quantize(), so every level is identical
        lev = np.floor((px.values - plo) / (phi - plo) * levels)
    q = np.where(varied[px.lab], np.minimum(np.where(varied[px.lab], lev, 0), levels - 1).astype(np.int64) + 1, 1)
    return q, varied


def _entropy(p: np.ndarray) -> np.ndarray:
    """mahotas's ``_entropy`` over the last axis: -sum p log2 p, 0 log 0 = 0."""
    return -(np.log2(p + (p == 0)) * p).sum(axis=-1)


def haralick_batched(px: NucleusPixels, *, levels: int = 32) -> np.ndarray:
    """:func:`~nucleoscope.features.haralick_features` of every nucleus, (N, 13) float64.

    Co-occurrence counts of all nuclei by one ``np.bincount`` per direction over (nucleus, level,
    level) of pixel pairs inside the same nucleus (mahotas with ``ignore_zeros`` drops pairs with a
    pixel outside), made symmetric as mahotas does; then mahotas's 13 formulas on the (N, L, L)
    stack. mahotas sizes each matrix by the nucleus's top level + 1 (``levels`` + 1, or 2 for a
    constant nucleus); only Difference Variance (the variance of p_{x-y} over the matrix size)
    depends on that, so it is computed over each nucleus's own size. NaN when a direction has no
    pair (mahotas raises).
    """
    n, L = px.n, levels + 1
    H, W = px.shape
    q, varied = _quantize(px, levels)
    qimg = np.zeros(H * W, np.int64)
    qimg[px.flat] = q
    limg = np.full(H * W, -1, np.intp)
    limg[px.flat] = px.lab
    ys, xs = px.rows, px.cols
    size = np.where(varied, L, 2)  # mahotas's matrix size per nucleus
    k = np.arange(L, dtype=np.float64)
    k2 = k**2
    tk = np.arange(2 * L - 1, dtype=np.float64)  # mahotas's 2L-th sum bin is always 0
    i, j = np.mgrid[:L, :L]
    ij = (i * j).ravel().astype(np.float64)
    idm = (1.0 / ((i - j) ** 2 + 1)).ravel()
    # entries of p grouped by i + j (0..2L-2) and by |i - j| (0..L-1), for np.add.reduceat
    plus_order = np.argsort((i + j).ravel(), kind="stable")
    plus_starts = np.searchsorted((i + j).ravel()[plus_order], np.arange(2 * L - 1))
    minus_order = np.argsort(np.abs(i - j).ravel(), kind="stable")
    minus_starts = np.searchsorted(np.abs(i - j).ravel()[minus_order], np.arange(L))
    counts = []
    for dy, dx in _DELTAS:
        ok = (ys + dy < H) & (xs + dx >= 0) & (xs + dx < W)
        a = px.flat[ok]
        b = a + dy * W + dx
        same = limg[b] == px.lab[ok]
        a, b, lab = a[same], b[same], px.lab[ok][same]
        c = np.bincount((lab * L + qimg[a]) * L + qimg[b], minlength=n * L * L).reshape(n, L, L)
        counts.append(c + c.transpose(0, 2, 1))  # symmetric=True
    # the 4 directions of every nucleus as one (4N, L, L) stack, direction-major
    c = np.concatenate(counts)
    T = c.sum(axis=(1, 2))
    valid = (T.reshape(4, n) > 0).all(axis=0)
    size4 = np.tile(size, 4)
    m = 4 * n
    # no BLAS (matmul) below: its threads fight other processes on a shared machine for tiny products
    with np.errstate(all="ignore"):
        p = c / T[:, None, None].astype(np.float64)
        pr = p.reshape(m, L * L)
        pxm, pym = p.sum(1), p.sum(2)
        ux, uy = (pxm * k).sum(1), (pym * k).sum(1)
        vx, vy = (pxm * k2).sum(1) - ux**2, (pym * k2).sum(1) - uy**2
        sx, sy = np.sqrt(vx), np.sqrt(vy)
        # p_{x+y}, p_{|x-y|}: sums of p over its anti-diagonals and diagonals
        pplus = np.add.reduceat(pr[:, plus_order], plus_starts, axis=1)
        pminus = np.add.reduceat(pr[:, minus_order], minus_starts, axis=1)
        f = np.empty((m, 13))
        f[:, 0] = (pr * pr).sum(1)
        f[:, 1] = (pminus * k2).sum(1)
        corr = (1.0 / sx / sy) * ((pr * ij).sum(1) - ux * uy)
        f[:, 2] = np.where((sx == 0) | (sy == 0), 1.0, corr)
        f[:, 3] = vx
        f[:, 4] = (pr * idm).sum(1)
        f[:, 5] = (pplus * tk).sum(1)
        f[:, 7] = _entropy(pplus)
        f[:, 6] = (pplus * tk**2).sum(1) - f[:, 5] ** 2
        f[:, 8] = _entropy(pr)
        # np.var of p_{|x-y|} over the nucleus's own matrix size (entries beyond are not in it)
        inside = np.arange(L)[None] < size4[:, None]
        mean = pminus.sum(1) / size4
        f[:, 9] = (np.where(inside, pminus - mean[:, None], 0.0) ** 2).sum(1) / size4
        f[:, 10] = _entropy(pminus)
        hx, hy = _entropy(pxm), _entropy(pym)
        cross = pxm[:, :, None] * pym[:, None, :]
        cross = (cross + (cross == 0)).reshape(m, L * L)
        logc = np.log2(cross)
        hxy1 = -(pr * logc).sum(1)
        hxy2 = -(cross * logc).sum(1)  # mahotas's _entropy(cross); its zeros are already 1
        hmax = np.maximum(hx, hy)
        f[:, 11] = np.where(hmax == 0, f[:, 8] - hxy1, (f[:, 8] - hxy1) / hmax)
        f[:, 12] = np.sqrt(np.maximum(0, 1 - np.exp(-2.0 * (hxy2 - f[:, 8]))))
    feats = f.reshape(4, n, 13).transpose(1, 0, 2)
    out = feats.mean(axis=1)
    out[~valid] = np.nan
    return out


def lbp_batched(image: np.ndarray, px: NucleusPixels, origins: np.ndarray) -> np.ndarray:
    """:func:`~nucleoscope.features.lbp_features` of every nucleus, (N, 30) float64.

    ``skimage.feature.local_binary_pattern(method="uniform")`` evaluated at the nucleus pixels only
    (the per-nucleus path filters the whole padded crop, ~2.5x as many pixels, in C). Its arithmetic
    is replicated operation for operation so every code is identical: circle offsets rounded to 5
    decimals, bilinear samples ``(1-dr)((1-dc)tl + dc tr) + dr((1-dc)bl + dc br)`` with 0 outside
    the image, computed at the pixel's coordinates *within its crop* (``origins``: the crop's top-left
    in the image; the fractional parts dr, dc depend on them in the last bit), neighbour >= centre,
    uniform when the sign changes along p = 0..P-1 (not wrapping) are <= 2, else P + 1. Samples never
    leave the crop: it extends ``_PAD`` = 4 >= 3 pixels past the nucleus, or ends at the image border.

    Parameters
    ----------
    image : (Y, X) ndarray
    px : NucleusPixels
    origins : (N, 2) int ndarray
        Top-left (row, col) of each nucleus's crop.
    """
    pad = max(LBP_RADII)
    img = np.pad(np.asarray(image, np.float64), pad).ravel()  # 0 outside, as skimage's cval
    W = px.shape[1]
    wp = W + 2 * pad
    ys, xs = px.rows, px.cols
    base = (ys + pad) * wp + xs + pad
    yl = ys - origins[px.lab, 0]
    xl = xs - origins[px.lab, 1]
    t = np.arange(max(int(yl.max()), int(xl.max())) + 1, dtype=np.float64)
    centre = px.values
    n_codes = _LBP_POINTS + 2
    out = np.empty((px.n, len(LBP_RADII) * n_codes))
    angles = 2 * np.pi * np.arange(_LBP_POINTS, dtype=np.float64) / _LBP_POINTS
    for ri, r in enumerate(LBP_RADII):
        rps = np.round(-r * np.sin(angles), 5)
        cps = np.round(r * np.cos(angles), 5)
        bits = np.empty((_LBP_POINTS, centre.size), bool)
        for i, (rp, cp) in enumerate(zip(rps, cps)):
            if rp == int(rp) and cp == int(cp):  # on the grid: skimage's interpolation returns the pixel
                val = img[base + int(rp) * wp + int(cp)]
            else:
                rr, cc = t + rp, t + cp  # as skimage: float(coordinate) + offset
                r0, c0 = np.floor(rr), np.floor(cc)
                dr, dc = (rr - r0)[yl], (cc - c0)[xl]
                row0 = base + ((r0 - t).astype(np.intp) * wp)[yl]
                row1 = base + ((np.ceil(rr) - t).astype(np.intp) * wp)[yl]
                col0 = (c0 - t).astype(np.intp)[xl]
                col1 = (np.ceil(cc) - t).astype(np.intp)[xl]
                top = (1 - dc) * img[row0 + col0] + dc * img[row0 + col1]
                bottom = (1 - dc) * img[row1 + col0] + dc * img[row1 + col1]
                val = (1 - dr) * top + dr * bottom
            bits[i] = val - centre >= 0
        changes = (bits[1:] != bits[:-1]).sum(axis=0)
        codes = np.where(changes <= 2, bits.sum(axis=0), _LBP_POINTS + 1)
        hist = np.bincount(px.lab * n_codes + codes, minlength=px.n * n_codes).reshape(px.n, n_codes)
        out[:, ri * n_codes : (ri + 1) * n_codes] = hist / np.maximum(px.area, 1)[:, None]
    return out


_OTSU_BINS = 256


def otsu_batched(values: np.ndarray, lab: np.ndarray, n: int,
                 lo_hi: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``skimage.filters.threshold_otsu`` of every group of ``values``, (N,) float64.

    Replicates skimage (float input: ``np.histogram`` with 256 equal bins over [min, max], numpy's
    bin assignment including its edge corrections, float32 counts, first maximum of the between-class
    variance, the bin centre as threshold; a constant group returns its value) on an (N, 256) stack.
    NaN for an empty group.

    Parameters
    ----------
    values : (P,) float64 ndarray
    lab : (P,) intp ndarray
        Group 0..n-1 of each value.
    n : int
    lo_hi : ((N,), (N,)) float64 ndarrays, optional
        The groups' :func:`group_range`, when the caller has it.
    """
    nb = _OTSU_BINS
    lo, hi = group_range(values, lab, n) if lo_hi is None else lo_hi
    varied = hi > lo
    out = np.where(np.isfinite(lo), lo, np.nan)  # constant group: its value (skimage's first pixel)
    if not varied.any():
        return out
    lo_v, hi_v = np.where(varied, lo, 0.0), np.where(varied, hi, 1.0)
    edges = np.linspace(lo_v, hi_v, nb + 1, axis=1)  # elementwise the same as per group
    pl = lab
    with np.errstate(invalid="ignore", divide="ignore"):
        f_idx = (values - lo_v[pl]) / (hi_v[pl] - lo_v[pl]) * nb
        idx = np.where(varied[pl], f_idx, 0).astype(np.intp)  # constant groups: any bin, unused
        idx[idx == nb] -= 1
        idx[values < edges[pl, idx]] -= 1
        idx[(values >= edges[pl, idx + 1]) & (idx != nb - 1)] += 1
        counts = np.bincount(pl * nb + idx, minlength=n * nb).reshape(n, nb).astype(np.float32)
        centres = (edges[:, :-1] + edges[:, 1:]) / 2.0
        w1 = np.cumsum(counts, axis=1)
        w2 = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        m1 = np.cumsum(counts * centres, axis=1) / w1
        m2 = (np.cumsum((counts * centres)[:, ::-1], axis=1) / w2[:, ::-1])[:, ::-1]
        var12 = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    t = centres[np.arange(n), np.argmax(var12, axis=1)]
    return np.where(varied, t, out)


def pftas_batched(px: NucleusPixels) -> np.ndarray:
    """:func:`~nucleoscope.features.pftas_features` of every nucleus, (N, 54) float64.

    Otsu's threshold by :func:`otsu_batched`; ``mu``, ``s`` of the pixels above it per nucleus; the
    neighbour counts of the three binarisations from the image's 8 shifts. In the per-nucleus
    version every pixel outside the nucleus (crop border, other nuclei, padding) has value 0, so a
    neighbour outside counts as on exactly when 0 passes the binarisation: that is replicated, not
    assumed off. NaN for an empty nucleus (never in a label image).
    """
    n, lab, v = px.n, px.lab, px.values
    T = otsu_batched(v, lab, n, (px.lo, px.hi))
    above = v > T[lab]
    total = np.bincount(lab, weights=above, minlength=n)
    ssum = np.bincount(lab, weights=np.where(above, v, 0.0), minlength=n)
    # mu = above.sum() / (total + 1e-8); s = above.std() (np.std: mean, then mean squared deviation)
    # per-nucleus sums of a group are taken in pixel order there too, so sort-free bincount matches
    # only to rounding: both are well inside 1e-9
    mu = ssum / (total + 1e-8)
    amean = ssum / np.maximum(total, 1)
    dev = np.where(above, v - amean[lab], 0.0)
    s = np.where(total > 0, np.sqrt(np.bincount(lab, weights=dev * dev, minlength=n) / np.maximum(total, 1)), 0.0)
    lo_t, hi_t = (mu - s), (mu + s)

    def binarise(x: np.ndarray, lt: np.ndarray, ht: np.ndarray, mt: np.ndarray) -> np.ndarray:
        return np.stack([(x > lt) & (x < ht), x > lt, x > mt])

    on = binarise(v, lo_t[lab], hi_t[lab], mu[lab])  # (3, P)
    zero_on = binarise(np.zeros(n), lo_t, hi_t, mu)  # (3, N): is an outside pixel (value 0) on
    # Neighbour counts on grids padded by one pixel (label -1): the three binarisations packed in
    # 4-bit fields of one int16 (counts <= 8), so each of the 8 shifts is two gathers and a sum.
    H, W = px.shape
    wp = W + 2
    ys, xs = px.rows, px.cols
    pos = (ys + 1) * wp + xs + 1
    lgrid = np.full((H + 2) * wp, -1, np.intp)
    lgrid[pos] = lab
    cgrid = np.zeros((H + 2) * wp, np.int16)
    cgrid[pos] = on[0] + 16 * on[1].astype(np.int16) + 256 * on[2].astype(np.int16)
    acc = np.zeros(lab.size, np.int16)
    n_same = np.zeros(lab.size, np.int16)
    for off in (-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1):
        same = lgrid[pos + off] == lab
        acc += np.where(same, cgrid[pos + off], 0).astype(np.int16)
        n_same += same
    # neighbours outside the nucleus (other nuclei, background, beyond the image) have value 0
    on_neigh = np.stack([(acc >> (4 * b)) & 15 for b in range(3)]).astype(np.intp)
    on_neigh += (8 - n_same).astype(np.intp) * zero_on[:, lab]
    out = np.empty((n, 54))
    for b in range(3):
        off = np.bincount(lab[~on[b]] * 9 + on_neigh[b][~on[b]], minlength=n * 9).reshape(n, 9)
        onc = np.bincount(lab[on[b]] * 9 + 8 - on_neigh[b][on[b]], minlength=n * 9).reshape(n, 9)
        for k, h in ((b, off), (3 + b, onc)):
            s_ = h.sum(1, keepdims=True)
            out[:, 9 * k : 9 * k + 9] = np.where(s_ > 0, h / np.maximum(s_, 1), 0.0)
    return out


def zernike_batched(px: NucleusPixels, origins: np.ndarray) -> np.ndarray:
    """:func:`~nucleoscope.features.zernike_features` of every nucleus, (N, 15) float64.

    ``mahotas.features.zernike_moments`` (its Python part and its C ``znl``) written out over the
    nucleus pixels of all nuclei: coordinates relative to each nucleus's crop (``origins``, as the
    per-nucleus path sees them), centroid, radius = largest centre distance + 0.5, ``D`` floored at
    1e-9, ``A = (X + iY) / D``, the radial polynomial's coefficients g_m, ``sum p conj(V_nl)`` with
    p the intensity shifted to >= 0 and divided by its total, times (n + 1) / pi, magnitudes. Sums run
    over the pixels in the same (row-major) order; only rounding differs. NaN when the nucleus's
    intensity sums to 0.
    """
    from math import factorial

    n, lab, v = px.n, px.lab, px.values
    ys, xs = px.rows, px.cols
    yl = (ys - origins[lab, 0]).astype(np.float64)
    xl = (xs - origins[lab, 1]).astype(np.float64)
    area = np.maximum(px.area, 1)
    cy = np.bincount(lab, weights=yl, minlength=n) / area  # integer sums: exact, as rows.mean()
    cx = np.bincount(lab, weights=xl, minlength=n) / area
    dist2 = (yl - cy[lab]) ** 2 + (xl - cx[lab]) ** 2
    far = np.full(n, -np.inf)
    np.maximum.at(far, lab, dist2)
    radius = np.sqrt(far) + 0.5
    lo = px.lo
    p = np.where(lo[lab] < 0, v - lo[lab], v)  # negative nuclei shifted to start at 0
    total = np.bincount(lab, weights=p, minlength=n)
    k = p > 0  # mahotas keeps D <= 1 (every nucleus pixel) with P > 0
    lab_k = lab[k]
    yn = (yl[k] - cy[lab_k]) / radius[lab_k]
    xn = (xl[k] - cx[lab_k]) / radius[lab_k]
    d = xn**2
    d += yn**2
    np.sqrt(d, d)
    np.maximum(d, 1e-9, out=d)
    frac = p[k] / total[lab_k]
    a = np.empty(yn.shape, np.complex128)
    a.real = xn / d
    a.imag = yn / d
    powers = [np.ones_like(a), a] + [a**e for e in range(2, _ZERNIKE_DEGREE + 2)]
    dpow = {e: d ** float(e) for e in range(_ZERNIKE_DEGREE + 1)}
    out = []
    for deg in range(_ZERNIKE_DEGREE + 1):
        for l in range(deg + 1):
            if (deg - l) % 2 or (deg, l) == (0, 0):  # A_00 is dropped (constant)
                continue
            radial = np.zeros_like(d)
            for m in range((deg - l) // 2 + 1):
                g = (-1.0 if m & 1 else 1.0) * float(factorial(deg - m)) / (
                    float(factorial(m)) * factorial((deg - 2 * m + l) // 2) * factorial((deg - 2 * m - l) // 2)
                )
                radial += g * dpow[deg - 2 * m]
            vnl = np.conj(radial * powers[l]) * frac
            z = np.bincount(lab_k, weights=vnl.real, minlength=n) + 1j * np.bincount(
                lab_k, weights=vnl.imag, minlength=n
            )
            out.append(np.abs(z * ((deg + 1) / np.pi)))
    res = np.stack(out, axis=1)
    res[~(total > 0)] = np.nan
    return res
