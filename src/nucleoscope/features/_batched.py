"""Texture of every nucleus of a label image at once: the per-nucleus definitions of ``_texture``,
vectorised over nuclei.

:func:`measure_nuclei` used to crop each nucleus and call the per-nucleus functions; most of that time
was Python and library overhead per call, not arithmetic. The functions here take the whole image and
the renumbered label image (``seq``: object k is label k + 1, 0 = background) and return an
``(N, columns)`` array equal to stacking the per-nucleus results (tests/test_features_batched.py
asserts it on real images). The per-nucleus functions stay the public API for single crops/patches.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._texture import LBP_RADII, _LBP_POINTS

__all__ = ["NucleusPixels", "nucleus_pixels", "haralick_batched", "lbp_batched"]

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
    """

    def __init__(self, image: np.ndarray, seq: np.ndarray, n: int) -> None:
        self.n = n
        self.shape = seq.shape
        s = seq.ravel()
        self.flat = np.flatnonzero(s)
        self.lab = s[self.flat].astype(np.intp) - 1
        self.values = image.ravel()[self.flat].astype(np.float64)
        self.area = np.bincount(self.lab, minlength=n)


def nucleus_pixels(image: np.ndarray, seq: np.ndarray, n: int) -> NucleusPixels:
    """:class:`NucleusPixels` of ``image`` (Y, X) under ``seq`` (Y, X, objects 1..n)."""
    return NucleusPixels(image, seq, n)


def _quantize(px: NucleusPixels, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~nucleoscope.features.quantize` of every nucleus: (P,) levels 1..levels, (N,) hi > lo."""
    lo = np.full(px.n, np.inf)
    hi = np.full(px.n, -np.inf)
    np.minimum.at(lo, px.lab, px.values)  # ~5x faster than ndimage.minimum(labels, index), which sorts
    np.maximum.at(hi, px.lab, px.values)
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
    ys, xs = np.divmod(px.flat, W)
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


def lbp_batched(image: np.ndarray, px: NucleusPixels) -> np.ndarray:
    """Placeholder."""
    raise NotImplementedError
