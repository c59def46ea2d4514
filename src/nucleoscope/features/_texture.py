"""Texture of one nucleus: LBP, PFTAS, Zernike, Haralick (default) and run length, Gabor (``"all"``).

Every function takes a crop of the image and the nucleus mask on the same grid (the crop may extend
beyond the nucleus: that context is what LBP/Gabor neighbourhoods read) and returns
``{column: value}``. Only pixels inside the mask are counted, so results do not depend on how much
context the crop has (except for LBP/Gabor, which by design read neighbours across the border).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import mahotas
import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage as ndi
from skimage.feature import local_binary_pattern
from skimage.filters import gabor_kernel, threshold_otsu

__all__ = [
    "LBP_RADII",
    "LBP_COLUMNS",
    "PFTAS_COLUMNS",
    "ZERNIKE_DEGREE",
    "ZERNIKE_COLUMNS",
    "HARALICK_COLUMNS",
    "RUNLENGTH_COLUMNS",
    "GABOR_FREQUENCIES",
    "GABOR_COLUMNS",
    "lbp_features",
    "pftas_features",
    "zernike_features",
    "haralick_features",
    "quantize",
    "runlength_features",
    "gabor_features",
]

# ---------------------------------------------------------------------------------------------- LBP
LBP_RADII = (1, 2, 3)
_LBP_POINTS = 8
# riu2 codes 0..P are the uniform patterns by number of neighbours >= centre; P+1 = all non-uniform.
LBP_COLUMNS = [
    f"Texture_LBP_r{r}_{'u' + str(k) if k <= _LBP_POINTS else 'nonuniform'}"
    for r in LBP_RADII
    for k in range(_LBP_POINTS + 2)
]


def lbp_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Rotation-invariant uniform LBP histograms (Ojala et al. 2002, "riu2"), 8 points, radii 1-3.

    Uses ``skimage.feature.local_binary_pattern(method="uniform")`` (bilinear interpolation of the
    circle, neighbour >= centre). The histogram of the codes over the nucleus pixels, as fractions
    (each radius sums to 1), gives 10 columns per radius: ``u0``..``u8`` = uniform patterns with k
    neighbours at least as bright as the centre (u0 = local maximum / bright spot, u8 = local
    minimum / dark spot, u4 = edge), ``nonuniform`` = everything else (noisy texture).

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    """
    img = np.ascontiguousarray(image, dtype=np.float64)
    out: dict[str, float] = {}
    n = max(int(mask.sum()), 1)
    with warnings.catch_warnings():
        # skimage warns that float input may have near-ties; our values are the image's own.
        warnings.simplefilter("ignore", UserWarning)
        for r in LBP_RADII:
            codes = local_binary_pattern(img, _LBP_POINTS, r, method="uniform")[mask].astype(np.intp)
            hist = np.bincount(codes, minlength=_LBP_POINTS + 2) / n
            for k in range(_LBP_POINTS + 2):
                out[LBP_COLUMNS[(r - 1) * (_LBP_POINTS + 2) + k]] = float(hist[k])
    return out


# -------------------------------------------------------------------------------------------- PFTAS
PFTAS_COLUMNS = [f"Texture_PFTAS_{i:02d}" for i in range(54)]
_NEIGH = np.ones((3, 3))
_NEIGH[1, 1] = 0


def pftas_features(image: np.ndarray, mask: np.ndarray, *, threshold: float | None = None) -> dict[str, float]:
    """Parameter-free threshold adjacency statistics (Hamilton et al. 2007; Coelho et al. 2010).

    Same definition and column order as ``mahotas.features.pftas`` (54 values), but the statistics are
    counted over the nucleus pixels only (mahotas counts every pixel of the array, so its values
    depend on how much background the crop holds). With ``T`` = Otsu's threshold of the nucleus
    pixels, ``mu`` and ``s`` = mean and SD of nucleus pixels above ``T``, three binarisations are
    made: ``mu - s < I < mu + s``, ``I > mu - s``, ``I > mu``; pixels outside the nucleus are off.
    For each binarisation ``b``: columns 0-26 (9 per binarisation) are the fractions of nucleus
    pixels that are off in ``b`` and have k = 0..8 on-neighbours (8-neighbourhood); columns 27-53 the
    same for the complement of ``b`` (on pixels of ``b`` with k off-neighbours). mahotas equals this
    exactly when the array is all nucleus and surrounded by a border of zeros.

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    threshold : float, optional
        ``T``; default Otsu's threshold of the nucleus pixels.
    """
    vals = image[mask]
    if vals.size == 0:
        return dict.fromkeys(PFTAS_COLUMNS, float("nan"))
    if threshold is None:
        threshold = float(threshold_otsu(vals)) if vals.min() < vals.max() else float(vals.min())
    above = vals[vals > threshold]
    total = above.size
    mu = above.sum() / (total + 1e-8)  # mahotas's guard for an empty set
    s = above.std() if total else 0.0
    img = np.where(mask, image, 0.0)
    img = np.pad(img, 1)  # outside is off in every binarisation
    m = np.pad(mask, 1)
    binaries = [(img > mu - s) & (img < mu + s), img > mu - s, img > mu]
    pos, neg = [], []
    for b in binaries:
        on_neigh = ndi.convolve(b.astype(np.uint8), _NEIGH.astype(np.uint8), mode="constant")
        pos.append(_frac_hist(on_neigh[m & ~b]))
        neg.append(_frac_hist(8 - on_neigh[m & b]))
    values = np.concatenate(pos + neg)
    return dict(zip(PFTAS_COLUMNS, values.tolist()))


def _frac_hist(counts: np.ndarray) -> np.ndarray:
    h = np.bincount(counts.astype(np.intp), minlength=9)[:9].astype(np.float64)
    s = h.sum()
    return h / s if s > 0 else h


# ------------------------------------------------------------------------------------------ Zernike
ZERNIKE_DEGREE = 6
# mahotas's order: n ascending, then m ascending with n - m even; A_00 dropped (constant 1/pi after
# mahotas's mass normalisation, so it carries no information).
_ZNM = [(n, m) for n in range(ZERNIKE_DEGREE + 1) for m in range(n + 1) if (n - m) % 2 == 0]
ZERNIKE_COLUMNS = [f"Texture_Zernike_n{n}_m{m}" for n, m in _ZNM[1:]]


def zernike_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Magnitudes of the Zernike moments |A_nm| of the nucleus's intensity, n <= 6 (Teague 1980).

    ``mahotas.features.zernike_moments`` on the image with the background set to 0, centred on the
    mask's centroid (so A_11 measures how far the intensity's centre of mass is off the geometric
    centre), on the smallest circle holding every nucleus pixel centre (so the moments are scale
    invariant); mahotas normalises by the total intensity, hence brightness invariant, and magnitudes
    are rotation invariant. Nuclei with negative intensities (background-subtracted images) are
    shifted so their minimum is 0.

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return dict.fromkeys(ZERNIKE_COLUMNS, float("nan"))
    cy, cx = rows.mean(), cols.mean()
    radius = float(np.sqrt(((rows - cy) ** 2 + (cols - cx) ** 2).max())) + 0.5
    img = np.where(mask, image, 0.0)
    lo = float(image[mask].min())
    if lo < 0:
        # background-subtracted images go negative; the moments weight by intensity and mahotas
        # divides by the total, so shift the nucleus to start at 0 rather than give up
        img = np.where(mask, image - lo, 0.0)
    if img.sum() <= 0:  # a uniform nucleus at 0 has no intensity distribution to describe
        return dict.fromkeys(ZERNIKE_COLUMNS, float("nan"))
    z = mahotas.features.zernike_moments(img, radius, degree=ZERNIKE_DEGREE, cm=(cy, cx))
    return dict(zip(ZERNIKE_COLUMNS, np.asarray(z[1:], dtype=np.float64).tolist()))


# ----------------------------------------------------------------------------------------- Haralick
_HARALICK_NAMES = [
    "AngularSecondMoment",
    "Contrast",
    "Correlation",
    "Variance",
    "InverseDifferenceMoment",
    "SumAverage",
    "SumVariance",
    "SumEntropy",
    "Entropy",
    "DifferenceVariance",
    "DifferenceEntropy",
    "InfoMeas1",
    "InfoMeas2",
]
HARALICK_COLUMNS = [f"Texture_Haralick_{n}" for n in _HARALICK_NAMES]


def quantize(image: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Nucleus pixels to gray levels 1..levels (per-nucleus min-max, equal-width bins); 0 outside.

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    levels : int
        Number of gray levels (>= 2).

    Returns
    -------
    (Y, X) int32 ndarray
    """
    q = np.zeros(image.shape, dtype=np.int32)
    vals = image[mask]
    if vals.size == 0:
        return q
    lo, hi = float(vals.min()), float(vals.max())
    if hi > lo:
        lev = np.floor((vals - lo) / (hi - lo) * levels).astype(np.int32)
        q[mask] = np.minimum(lev, levels - 1) + 1
    else:
        q[mask] = 1
    return q


def haralick_features(image: np.ndarray, mask: np.ndarray, *, levels: int = 32) -> dict[str, float]:
    """Haralick's 13 co-occurrence features (Haralick et al. 1973), distance 1, mean of 4 directions.

    ``mahotas.features.haralick(q, ignore_zeros=True, return_mean=True)`` on the nucleus quantised to
    ``levels`` gray levels (:func:`quantize`), so pairs with a pixel outside the nucleus are ignored.
    Quantising to 32 levels rather than the camera's 4096 makes the matrix dense enough to be
    meaningful for a few hundred pixels and is ~20x faster. Column names follow CellProfiler's
    MeasureTexture. NaN when the nucleus has no pixel pairs (one pixel).

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    levels : int
    """
    q = quantize(image, mask, levels)
    try:
        with np.errstate(all="ignore"):
            h = mahotas.features.haralick(q, ignore_zeros=True, return_mean=True)
    except ValueError:  # mahotas refuses an image without any co-occurring pair
        return dict.fromkeys(HARALICK_COLUMNS, float("nan"))
    return dict(zip(HARALICK_COLUMNS, np.asarray(h, dtype=np.float64).tolist()))


# --------------------------------------------------------------------------------------- run length
_RL_NAMES = [
    "ShortRunEmphasis",
    "LongRunEmphasis",
    "GrayLevelNonUniformity",
    "RunLengthNonUniformity",
    "RunPercentage",
    "LowGrayLevelRunEmphasis",
    "HighGrayLevelRunEmphasis",
    "ShortRunLowGrayLevelEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LongRunHighGrayLevelEmphasis",
]
RUNLENGTH_COLUMNS = [f"Texture_RunLength_{n}" for n in _RL_NAMES]


def _runs(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(level, length) of the maximal constant runs along the rows of ``lines`` (0 = not counted)."""
    # A -1 sentinel column ends every row's last run, so rows can be processed as one flat vector.
    flat = np.concatenate([lines, np.full((lines.shape[0], 1), -1, lines.dtype)], axis=1).ravel()
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size])
    levels = flat[starts]
    keep = levels > 0
    return levels[keep], lengths[keep]


def _diagonals(q: np.ndarray) -> np.ndarray:
    """The diagonals of ``q`` as rows of one array, padded with 0 (not counted)."""
    h, w = q.shape
    out = np.zeros((h + w - 1, min(h, w)), dtype=q.dtype)
    for i, k in enumerate(range(-h + 1, w)):
        d = np.diagonal(q, k)
        out[i, : d.size] = d
    return out


def runlength_features(image: np.ndarray, mask: np.ndarray, *, levels: int = 32) -> dict[str, float]:
    """Gray-level run-length features (Galloway 1975; Chu et al. 1990; Dasarathy & Holder 1991).

    Runs of equal gray level (after :func:`quantize`) inside the nucleus along 0, 45, 90 and 135
    degrees; the 11 standard features of the run-length matrix p(i, j) (i = level, j = length, n_r
    runs, n_p nucleus pixels), each averaged over the 4 directions: SRE = sum p/j^2 / n_r, LRE =
    sum p j^2 / n_r, GLN = sum_i (sum_j p)^2 / n_r, RLN = sum_j (sum_i p)^2 / n_r, RP = n_r / n_p,
    LGRE = sum p/i^2 / n_r, HGRE = sum p i^2 / n_r, SRLGE = sum p/(i^2 j^2) / n_r, SRHGE =
    sum p i^2/j^2 / n_r, LRLGE = sum p j^2/i^2 / n_r, LRHGE = sum p i^2 j^2 / n_r. Neither mahotas
    nor scikit-image implements run lengths, hence the numpy version here (vectorised run finding).

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    levels : int
    """
    q = quantize(image, mask, levels)
    n_p = int(mask.sum())
    if n_p == 0:
        return dict.fromkeys(RUNLENGTH_COLUMNS, float("nan"))
    acc = np.zeros(len(_RL_NAMES))
    for lines in (q, q.T, _diagonals(q), _diagonals(q[:, ::-1])):
        lev, ln = _runs(lines)
        i2, j2 = lev.astype(np.float64) ** 2, ln.astype(np.float64) ** 2
        n_r = lev.size
        gln = np.bincount(lev).astype(np.float64)
        rln = np.bincount(ln).astype(np.float64)
        acc += [
            (1 / j2).sum() / n_r,
            j2.sum() / n_r,
            (gln**2).sum() / n_r,
            (rln**2).sum() / n_r,
            n_r / n_p,
            (1 / i2).sum() / n_r,
            i2.sum() / n_r,
            (1 / (i2 * j2)).sum() / n_r,
            (i2 / j2).sum() / n_r,
            (j2 / i2).sum() / n_r,
            (i2 * j2).sum() / n_r,
        ]
    return dict(zip(RUNLENGTH_COLUMNS, (acc / 4).tolist()))


# -------------------------------------------------------------------------------------------- Gabor
GABOR_FREQUENCIES = (0.1, 0.2, 0.3)
_GABOR_ANGLES = (0, 45, 90, 135)
GABOR_COLUMNS = [
    f"Texture_Gabor_f{f:.1f}_a{a}_{stat}" for f in GABOR_FREQUENCIES for a in _GABOR_ANGLES for stat in ("Mean", "Std")
]


@lru_cache(maxsize=1)
def _gabor_bank() -> np.ndarray:
    """The 12 complex kernels, each centred in a common (2K+1, 2K+1) array, K = largest half-size."""
    kernels = [gabor_kernel(f, theta=np.deg2rad(a)) for f in GABOR_FREQUENCIES for a in _GABOR_ANGLES]
    half = max(max(k.shape) for k in kernels) // 2
    bank = np.zeros((len(kernels), 2 * half + 1, 2 * half + 1), dtype=np.complex128)
    for i, k in enumerate(kernels):
        h, w = k.shape[0] // 2, k.shape[1] // 2
        bank[i, half - h : half + h + 1, half - w : half + w + 1] = k
    return bank


@lru_cache(maxsize=64)
def _gabor_bank_fft(shape: tuple[int, int]) -> np.ndarray:
    # Crop sizes repeat (next_fast_len rounds them), so the kernels' transforms are reused.
    return sp_fft.fft2(_gabor_bank(), shape, axes=(1, 2))


def gabor_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean and SD over the nucleus of Gabor filter magnitudes (3 frequencies x 4 orientations).

    Kernels from ``skimage.filters.gabor_kernel`` (frequencies 0.1, 0.2, 0.3 cycles/pixel; angles 0,
    45, 90, 135 degrees; scikit-image's default bandwidth 1) applied to the crop standardised by the
    nucleus's mean and SD (so the values describe pattern, not brightness), with reflecting borders
    as ``skimage.filters.gabor`` does. The convolution is done by FFT, all 12 kernels against one
    transform of the crop, because the low-frequency kernels are ~35 px wide and direct convolution
    cost ~50 ms per nucleus.

    Parameters
    ----------
    image : (Y, X) float ndarray
    mask : (Y, X) bool ndarray
    """
    vals = image[mask]
    if vals.size == 0:
        return dict.fromkeys(GABOR_COLUMNS, float("nan"))
    sd = vals.std()
    z = (image - vals.mean()) / (sd if sd > 0 else 1.0)
    bank = _gabor_bank()
    half = bank.shape[1] // 2
    # numpy's "symmetric" = scipy.ndimage's "reflect" (the mode skimage.filters.gabor uses).
    fast = [sp_fft.next_fast_len(n + 2 * half) - n - half for n in z.shape]  # extra tail: cheaper FFT
    zp = np.pad(z, ((half, fast[0]), (half, fast[1])), mode="symmetric")
    # A circular convolution the size of the padded crop is exact where we read it: output pixel j
    # (j >= 2*half) only reaches zp[j - 2*half .. j], so nothing wraps around.
    resp = sp_fft.ifft2(sp_fft.fft2(zp)[None] * _gabor_bank_fft(zp.shape), axes=(1, 2))
    resp = resp[:, 2 * half : 2 * half + z.shape[0], 2 * half : 2 * half + z.shape[1]]
    mag = np.abs(resp[:, mask])
    out = np.stack([mag.mean(axis=1), mag.std(axis=1)], axis=1).ravel()
    return dict(zip(GABOR_COLUMNS, out.tolist()))
