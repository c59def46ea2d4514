"""Texture features against constructed patterns (exact answers), slow independent implementations
and the library references (mahotas, scikit-image)."""

from __future__ import annotations

from math import factorial

import mahotas
import numpy as np
import pytest
from skimage.feature import graycomatrix, graycoprops
from skimage.filters import gabor

from nucleoscope.features import (
    GABOR_COLUMNS,
    HARALICK_COLUMNS,
    LBP_COLUMNS,
    PFTAS_COLUMNS,
    RUNLENGTH_COLUMNS,
    ZERNIKE_COLUMNS,
    gabor_features,
    haralick_features,
    lbp_features,
    pftas_features,
    quantize,
    runlength_features,
    zernike_features,
)
from nucleoscope.features._texture import GABOR_FREQUENCIES


def checkerboard(n: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return ((yy + xx) % 2).astype(np.float64)


def stripes(n: int = 24) -> np.ndarray:
    """Vertical stripes one pixel wide: columns alternate 0, 1."""
    return np.tile(np.arange(n) % 2, (n, 1)).astype(np.float64)


def inner(n: int = 24, border: int = 4) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[border:-border, border:-border] = True
    return m


def lbp_hist(feats: dict, r: int) -> np.ndarray:
    return np.array([feats[c] for c in LBP_COLUMNS if c.startswith(f"Texture_LBP_r{r}_")])


# --------------------------------------------------------------------------------------------- LBP
def lbp_reference(image: np.ndarray, mask: np.ndarray, r: int, p: int = 8) -> np.ndarray:
    """Ojala's riu2 histogram written out pixel by pixel (bilinear circle samples, neighbour >= centre)."""
    hist = np.zeros(p + 2)
    h, w = image.shape
    for y, x in zip(*np.nonzero(mask)):
        bits = []
        for k in range(p):
            ry = round(-r * np.sin(2 * np.pi * k / p), 5)
            rx = round(r * np.cos(2 * np.pi * k / p), 5)
            fy, fx = y + ry, x + rx
            y0, x0 = int(np.floor(fy)), int(np.floor(fx))
            dy, dx = fy - y0, fx - x0

            def px(yy, xx):
                return image[yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.0

            v = (
                px(y0, x0) * (1 - dy) * (1 - dx)
                + px(y0, x0 + 1) * (1 - dy) * dx
                + px(y0 + 1, x0) * dy * (1 - dx)
                + px(y0 + 1, x0 + 1) * dy * dx
            )
            # Exact ties (all four pixels equal the centre) must not be lost to rounding of the weights.
            bits.append(v >= image[y, x] - 1e-9)
        transitions = sum(bits[k] != bits[k - 1] for k in range(p))
        hist[sum(bits) if transitions <= 2 else p + 1] += 1
    return hist / hist.sum()


def test_lbp_uniform_is_all_flat():
    f = lbp_features(np.full((24, 24), 5.0), inner())
    for r in (1, 2, 3):
        expected = np.zeros(10)
        expected[8] = 1  # every neighbour ties with the centre -> all bits set
        np.testing.assert_array_equal(lbp_hist(f, r), expected)


def test_lbp_checkerboard_r1():
    # White centre: axis neighbours 0, diagonal samples interpolate to 2*0.293^2... < 1 -> local max (u0).
    # Black centre: every sample >= 0 -> u8. Half the pixels each.
    h = lbp_hist(lbp_features(checkerboard(), inner()), 1)
    expected = np.zeros(10)
    expected[0] = expected[8] = 0.5
    np.testing.assert_allclose(h, expected)


def test_lbp_stripes_r1():
    # On a 1-px stripe: bits only at 90 and 270 degrees -> 4 transitions, non-uniform.
    # Between stripes: every sample >= 0 -> u8.
    h = lbp_hist(lbp_features(stripes(), inner()), 1)
    expected = np.zeros(10)
    expected[9] = expected[8] = 0.5
    np.testing.assert_allclose(h, expected)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_lbp_against_independent_reference(r):
    rng = np.random.default_rng(3)
    # Continuous values: no near-ties, whose outcome depends on each implementation's rounding of the
    # interpolation weights (exact ties are covered by the uniform test).
    image = rng.random((20, 22)) * 100
    mask = inner(20, 3)[:, :20]
    mask = np.pad(mask, ((0, 0), (0, 2)))
    np.testing.assert_allclose(lbp_hist(lbp_features(image, mask), r), lbp_reference(image, mask, r))


# ------------------------------------------------------------------------------------------- PFTAS
def test_pftas_equals_mahotas_on_a_zero_bordered_image():
    rng = np.random.default_rng(0)
    img = np.zeros((30, 34))
    img[3:-3, 3:-3] = rng.integers(1, 200, (24, 28))
    t = float(mahotas.thresholding.otsu(img.astype(np.uint16)))
    ours = np.array(list(pftas_features(img, np.ones(img.shape, bool), threshold=t).values()))
    np.testing.assert_allclose(ours, mahotas.features.pftas(img.astype(np.uint16), T=t), atol=1e-12)


def test_pftas_uniform_square_analytic():
    # A uniform 10x10 nucleus: every pixel equals the threshold, so mu = s = 0 (mahotas's guard):
    # binarisation 1 (0 < I < 0) is empty, 2 and 3 (I > 0) are the whole square. Off-pixel
    # statistics: binarisation 1 -> all nucleus pixels have 0 on-neighbours. On-pixel statistics of
    # 2 and 3: interior pixels have 0 off-neighbours, edges 3, corners 5.
    img = np.zeros((14, 14))
    img[2:12, 2:12] = 9.0
    f = np.array(list(pftas_features(img, img > 0).values())).reshape(6, 9)
    np.testing.assert_array_equal(f[0], np.eye(9)[0])
    np.testing.assert_array_equal(f[1], 0)
    np.testing.assert_array_equal(f[2], 0)
    np.testing.assert_array_equal(f[3], 0)
    expected = np.zeros(9)
    expected[[0, 3, 5]] = [64 / 100, 32 / 100, 4 / 100]
    np.testing.assert_allclose(f[4], expected)
    np.testing.assert_allclose(f[5], expected)


def test_pftas_ignores_crop_size():
    rng = np.random.default_rng(1)
    img = rng.random((20, 20)) * 100
    m = inner(20, 5)
    small = pftas_features(img[4:16, 4:16], m[4:16, 4:16])
    big = pftas_features(np.pad(img, 10), np.pad(m, 10))
    assert small == pytest.approx(big)
    assert len(small) == len(PFTAS_COLUMNS) == 54


# ----------------------------------------------------------------------------------------- Zernike
def zernike_reference(image: np.ndarray, mask: np.ndarray, degree: int = 6) -> list[float]:
    """|A_nm| = (n+1)/pi |sum_k w_k R_nm(rho_k) exp(-i m theta_k)|, w = intensity / total, on the unit
    disc around the mask centroid with radius max distance + 0.5 (Teague 1980)."""
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean(), cols.mean()
    radius = np.sqrt(((rows - cy) ** 2 + (cols - cx) ** 2).max()) + 0.5
    w = image[rows, cols] / image[rows, cols].sum()
    rho = np.sqrt((rows - cy) ** 2 + (cols - cx) ** 2) / radius
    theta = np.arctan2(rows - cy, cols - cx)
    out = []
    for n in range(degree + 1):
        for m in range(n + 1):
            if (n - m) % 2:
                continue
            radial = sum(
                (-1) ** s * factorial(n - s) / (factorial(s) * factorial((n + m) // 2 - s) * factorial((n - m) // 2 - s))
                * rho ** (n - 2 * s)
                for s in range((n - m) // 2 + 1)
            )
            out.append(abs((n + 1) / np.pi * (w * radial * np.exp(-1j * m * theta)).sum()))
    return out[1:]


def test_zernike_against_independent_formula():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:41, :41]
    mask = (yy - 20) ** 2 / 15**2 + (xx - 22) ** 2 / 12**2 <= 1
    img = rng.random((41, 41)) * 50 + 10
    ours = np.array(list(zernike_features(img, mask).values()))
    np.testing.assert_allclose(ours, zernike_reference(img, mask), rtol=1e-6, atol=1e-9)
    assert len(ours) == len(ZERNIKE_COLUMNS) == 15


def test_zernike_rotation_invariant_and_symmetric_disc():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:41, :41]
    mask = (yy - 20) ** 2 + (xx - 20) ** 2 <= 18**2
    img = rng.random((41, 41)) * 50 + 10
    a = np.array(list(zernike_features(img, mask).values()))
    b = np.array(list(zernike_features(np.rot90(img), np.rot90(mask)).values()))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # A uniform digital disc keeps only the pixel grid's 4-fold symmetry: every moment with m not a
    # multiple of 4 vanishes exactly; m = 4 is a small digitisation residue.
    flat = zernike_features(np.full((41, 41), 7.0), mask)
    for col, v in flat.items():
        m = int(col.rsplit("_m", 1)[1])
        if m > 0:
            assert v < (0.02 if m == 4 else 1e-9), col
    # Intensity weighted to one side -> A_11 (off-centre mass) grows.
    lopsided = zernike_features(np.where(xx > 20, 10.0, 1.0), mask)
    assert lopsided["Texture_Zernike_n1_m1"] > 0.1


# ---------------------------------------------------------------------------------------- Haralick
def test_haralick_checkerboard_and_stripes():
    m = np.ones((24, 24), bool)
    # Two gray values -> quantise to 2 levels (min -> 1, max -> levels), so differences are 0 or 1.
    cb = haralick_features(checkerboard(), m, levels=2)
    # Horizontal/vertical neighbours always differ by one level, diagonal neighbours never: mean of 4.
    assert cb["Texture_Haralick_Contrast"] == pytest.approx(0.5)
    # (diagonal pairs: white-white and black-black counts differ by a border pair or so -> ~1e-6)
    assert cb["Texture_Haralick_AngularSecondMoment"] == pytest.approx(0.5, abs=1e-5)
    st = haralick_features(stripes(), m, levels=2)
    # Vertical stripes: only the vertical direction sees equal neighbours.
    assert st["Texture_Haralick_Contrast"] == pytest.approx(0.75)
    uni = haralick_features(np.full((24, 24), 3.0), m)
    assert uni["Texture_Haralick_Contrast"] == 0
    assert uni["Texture_Haralick_AngularSecondMoment"] == 1
    assert uni["Texture_Haralick_Entropy"] == pytest.approx(0, abs=1e-9)


def test_haralick_against_skimage_glcm():
    rng = np.random.default_rng(5)
    img = rng.random((30, 30)) * 100
    m = np.ones(img.shape, bool)
    levels = 8
    ours = haralick_features(img, m, levels=levels)
    q = quantize(img, m, levels) - 1
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    glcm = graycomatrix(q.astype(np.uint8), [1], angles, levels=levels, symmetric=True, normed=True)
    for ours_name, sk_name in [
        ("Contrast", "contrast"),
        ("AngularSecondMoment", "ASM"),
        ("Correlation", "correlation"),
        ("InverseDifferenceMoment", "homogeneity"),
    ]:
        assert ours[f"Texture_Haralick_{ours_name}"] == pytest.approx(graycoprops(glcm, sk_name).mean(), rel=1e-9)
    assert len(ours) == len(HARALICK_COLUMNS) == 13


def test_quantize_levels():
    img = np.arange(10, dtype=float).reshape(2, 5)
    q = quantize(img, img >= 2, 4)
    assert q.tolist() == [[0, 0, 1, 1, 2], [2, 3, 3, 4, 4]]


def test_haralick_single_pixel_is_nan():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    assert all(np.isnan(v) for v in haralick_features(np.ones((5, 5)), m).values())


# -------------------------------------------------------------------------------------- run length
def test_runlength_uniform_square():
    n = 10
    img = np.zeros((14, 14))
    img[2:12, 2:12] = 5.0
    f = runlength_features(img, img > 0)
    # 0/90 degrees: n runs of length n; 45/135: one run per diagonal, 2n - 1 runs of lengths 1..n..1.
    diag = np.r_[np.arange(1, n + 1), np.arange(n - 1, 0, -1)]
    rp = (2 * (n / n**2) + 2 * (diag.size / n**2)) / 4
    lre = (2 * n**2 + 2 * (diag.astype(float) ** 2).mean()) / 4
    sre = (2 / n**2 + 2 * (1 / diag.astype(float) ** 2).mean()) / 4
    assert f["Texture_RunLength_RunPercentage"] == pytest.approx(rp)
    assert f["Texture_RunLength_LongRunEmphasis"] == pytest.approx(lre)
    assert f["Texture_RunLength_ShortRunEmphasis"] == pytest.approx(sre)
    assert f["Texture_RunLength_LowGrayLevelRunEmphasis"] == 1  # one level (1)


def test_runlength_stripes():
    n = 24
    m = np.ones((n, n), bool)
    f = runlength_features(stripes(n), m, levels=2)
    # Horizontal and both diagonals cross a stripe every pixel: runs of 1; vertical: n runs of n.
    assert f["Texture_RunLength_RunPercentage"] == pytest.approx((1 + 1 + 1 + n / n**2) / 4)
    assert f["Texture_RunLength_ShortRunEmphasis"] == pytest.approx((3 + 1 / n**2) / 4)
    # Two levels (1, 2) in equal numbers -> high-gray emphasis is the mean of 1 and 4 in every direction.
    assert f["Texture_RunLength_HighGrayLevelRunEmphasis"] == pytest.approx(2.5)
    assert len(f) == len(RUNLENGTH_COLUMNS) == 11


# ------------------------------------------------------------------------------------------- Gabor
def test_gabor_against_skimage():
    rng = np.random.default_rng(6)
    img = rng.random((40, 36)) * 10
    m = inner(40, 6)[:, :36]
    ours = list(gabor_features(img, m).values())
    z = (img - img[m].mean()) / img[m].std()
    ref = []
    for f in GABOR_FREQUENCIES:
        for a in (0, 45, 90, 135):
            re, im = gabor(z, f, theta=np.deg2rad(a), mode="reflect")
            mag = np.hypot(re, im)[m]
            ref += [mag.mean(), mag.std()]
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    assert len(ours) == len(GABOR_COLUMNS) == 24


def test_gabor_orientation_selectivity():
    # Vertical stripes with period 5 (0.2 cycles/px along X): the 0-degree f=0.2 filter responds most.
    yy, xx = np.mgrid[:40, :40]
    img = np.cos(2 * np.pi * 0.2 * xx)
    f = gabor_features(img, inner(40, 8))
    assert f["Texture_Gabor_f0.2_a0_Mean"] > 3 * f["Texture_Gabor_f0.2_a90_Mean"]


def test_zernike_defined_for_negative_intensities():
    """A background-subtracted nucleus (values below 0) still gets finite moments."""
    from nucleoscope.features import zernike_features

    yy, xx = np.mgrid[:41, :41]
    mask = (yy - 20) ** 2 + (xx - 20) ** 2 <= 15 ** 2
    image = np.where(xx > 20, 50.0, 10.0) - 1000.0
    z = zernike_features(image, mask)
    assert all(np.isfinite(v) for v in z.values())
    # the shift makes it equal to the nucleus with its minimum at 0
    ref = zernike_features(image + 1000.0 - 10.0, mask)
    assert z == pytest.approx(ref)
