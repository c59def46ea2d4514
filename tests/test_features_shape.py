"""Shape and intensity features against analytic shapes, and the table's fixed schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nucleoscope import InputError
from nucleoscope.features import (
    SCENMED_COLUMNS,
    background_level,
    feature_columns,
    feret_diameters,
    intensity_features,
    measure_nuclei,
    shape_features,
)


def ellipse(a: float, b: float, theta: float = 0.0, size: int = 121) -> np.ndarray:
    """Pixels whose centres lie in the ellipse with semi-axes a (along angle theta from X) and b."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def ramanujan(a: float, b: float) -> float:
    h = ((a - b) / (a + b)) ** 2
    return np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))


@pytest.mark.parametrize("r", [20, 40])
def test_disc(r):
    f = shape_features(ellipse(r, r))
    # Gauss circle problem: the pixel count is within O(r) of pi r^2 -> well under 1 % at r >= 20.
    assert f["AreaShape_Area"] == pytest.approx(np.pi * r**2, rel=0.01)
    # Crofton perimeter: digitisation error 0.6-1.7 % at these radii; 2 % leaves room, 5 % (the
    # error of the plain 4-neighbour estimate) would fail.
    assert f["AreaShape_Perimeter"] == pytest.approx(2 * np.pi * r, rel=0.02)
    assert f["AreaShape_Eccentricity"] < 0.02
    assert f["AreaShape_MajorAxisLength"] == pytest.approx(2 * r, abs=0.5)
    assert f["AreaShape_Roundness"] == pytest.approx(1.0, abs=0.01)
    assert f["AreaShape_FormFactor"] == pytest.approx(1.0, abs=0.06)
    # Calipers touch pixel corners: the digital disc spans 2r + 1 pixels along the axes, up to
    # 2r + sqrt(2) diagonally.
    assert 2 * r <= f["AreaShape_MinFeretDiameter"] <= 2 * r + 1
    assert 2 * r + 1 <= f["AreaShape_MaxFeretDiameter"] <= 2 * r + np.sqrt(2) + 1e-9
    assert f["AreaShape_Solidity"] > 0.95  # scikit-image hull definition: 0.96 at r = 20


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0])
def test_ellipse(theta):
    a, b = 40.0, 20.0
    f = shape_features(ellipse(a, b, theta))
    assert f["AreaShape_Area"] == pytest.approx(np.pi * a * b, rel=0.01)
    assert f["AreaShape_Perimeter"] == pytest.approx(ramanujan(a, b), rel=0.01)
    assert f["AreaShape_Eccentricity"] == pytest.approx(np.sqrt(1 - (b / a) ** 2), abs=0.005)
    assert f["AreaShape_MajorAxisLength"] == pytest.approx(2 * a, abs=0.5)
    assert f["AreaShape_MinorAxisLength"] == pytest.approx(2 * b, abs=0.5)
    assert f["AreaShape_Roundness"] == pytest.approx(b / a, abs=0.01)
    # Feret: true 2a and 2b plus at most one pixel of digitisation (pixels are unit squares).
    assert 2 * a - 0.5 <= f["AreaShape_MaxFeretDiameter"] <= 2 * a + 1.5
    assert 2 * b - 0.5 <= f["AreaShape_MinFeretDiameter"] <= 2 * b + 1.5
    # Y grows downwards: rotating by theta in array coordinates is -theta as displayed.
    assert f["AreaShape_Orientation"] == pytest.approx(-np.degrees(theta), abs=1.0)


def test_square_exact():
    m = np.zeros((40, 40), bool)
    m[10:30, 5:25] = True
    f = shape_features(m, offset=(100, 200), spacing=0.5)
    assert f["AreaShape_Area"] == 400
    assert f["AreaShape_Area_um2"] == 100
    assert f["AreaShape_ConvexArea"] == 400
    assert f["AreaShape_Solidity"] == 1.0
    assert f["AreaShape_Extent"] == 1.0
    assert f["AreaShape_Eccentricity"] == 0.0
    assert f["AreaShape_MaxFeretDiameter"] == pytest.approx(20 * np.sqrt(2))
    assert f["AreaShape_MinFeretDiameter"] == pytest.approx(20)
    assert f["AreaShape_MinFeretDiameter_um"] == pytest.approx(10)
    # Perimeter of the polygon through the boundary pixel centres is 4 * 19 = 76.
    assert f["AreaShape_Perimeter"] == pytest.approx(76, rel=0.02)
    # Uniform square of side n: variance n^2/12 per axis, minus the discrete correction 1/12.
    assert f["AreaShape_MajorAxisLength"] == pytest.approx(4 * np.sqrt((20**2 - 1) / 12))
    assert (f["Location_Center_X"], f["Location_Center_Y"]) == (214.5, 119.5)
    assert (f["AreaShape_BoundingBoxMinimum_X"], f["AreaShape_BoundingBoxMaximum_Y"]) == (205, 130)


def test_feret_single_pixel_and_rectangle():
    assert feret_diameters(np.ones((1, 1), bool)) == pytest.approx((np.sqrt(2), 1.0))
    assert feret_diameters(np.ones((3, 7), bool)) == pytest.approx((np.hypot(3, 7), 3.0))


def test_intensity_known_values():
    v = np.arange(1, 101, dtype=np.float64)  # 1..100
    f = intensity_features(v, background=10.0, saturation=96)
    assert f["Intensity_IntegratedIntensity"] == 5050
    assert f["Intensity_MeanIntensity"] == 50.5
    assert f["Intensity_MedianIntensity"] == 50.5
    assert f["Intensity_StdIntensity"] == pytest.approx(np.sqrt((100**2 - 1) / 12))
    assert (f["Intensity_MinIntensity"], f["Intensity_MaxIntensity"]) == (1, 100)
    assert f["Intensity_LowerQuartileIntensity"] == pytest.approx(25.75)
    assert f["Intensity_Percentile95Intensity"] == pytest.approx(95.05)
    assert f["Intensity_MADIntensity"] == 25
    assert f["Intensity_MeanIntensity_MinusBackground"] == 40.5
    assert f["Intensity_IntegratedIntensity_MinusBackground"] == 5050 - 1000
    assert f["Intensity_MeanIntensity_RelBackground"] == pytest.approx(5.05)
    assert f["Intensity_SaturatedFraction"] == 0.05


def _two_nuclei():
    labels = np.zeros((64, 80), np.int32)
    labels[ellipse(12, 8, 0.3, 33).nonzero()[0] + 2, ellipse(12, 8, 0.3, 33).nonzero()[1] + 3] = 5
    labels[40:56, 50:70] = 2
    image = np.full(labels.shape, 7.0, np.float32)
    image[labels == 5] = 100
    image[labels == 2] = np.linspace(50, 150, 320)
    return image, labels


@pytest.mark.parametrize("feature_set", ["shape", "default"])
def test_table_rows_and_schema(feature_set):
    image, labels = _two_nuclei()
    t = measure_nuclei(image, labels, feature_set=feature_set)
    assert list(t.columns) == feature_columns(feature_set)
    assert t["ObjectNumber"].tolist() == [2, 5]  # ascending label order, label values kept
    assert t["ObjectNumber"].dtype == np.int32
    assert (t.dtypes.iloc[1:] == np.float64).all()
    assert t["AreaShape_Area"].tolist() == [320, (labels == 5).sum()]
    assert t["Intensity_Background"].tolist() == [7.0, 7.0]
    assert t.loc[1, "Intensity_MeanIntensity_RelBackground"] == pytest.approx(100 / 7)
    assert t.loc[0, "Intensity_MeanIntensity"] == pytest.approx(100.0)
    # No pixel size: physical columns exist, NaN.
    assert t["AreaShape_Area_um2"].isna().all()
    t2 = measure_nuclei(image, labels, feature_set=feature_set, spacing=0.25)
    assert t2["AreaShape_Area_um2"].tolist() == [20.0, (labels == 5).sum() / 16]


@pytest.mark.parametrize("feature_set", ["shape", "default", "all"])
def test_empty_and_single_have_same_columns(feature_set):
    image, labels = _two_nuclei()
    empty = measure_nuclei(image, np.zeros_like(labels), feature_set=feature_set)
    single = measure_nuclei(image, np.where(labels == 2, labels, 0), feature_set=feature_set)
    assert len(empty) == 0 and len(single) == 1
    assert list(empty.columns) == list(single.columns) == feature_columns(feature_set)
    pd.testing.assert_series_equal(empty.dtypes, single.dtypes)


def test_scenmed_size_and_default_contains_it():
    assert len(SCENMED_COLUMNS) == 104
    assert len(SCENMED_COLUMNS) - 5 == 99  # per patch: texture only
    assert set(SCENMED_COLUMNS) <= set(feature_columns("default"))
    assert set(feature_columns("shape")) < set(feature_columns("default")) < set(feature_columns("all"))


def test_sparse_huge_labels():
    image, labels = _two_nuclei()
    big = np.where(labels == 5, 2_000_000_000, labels).astype(np.int64)
    t = measure_nuclei(image, big, feature_set="shape")
    assert t["ObjectNumber"].tolist() == [2, 2_000_000_000]
    ref = measure_nuclei(image, labels, feature_set="shape")
    np.testing.assert_allclose(t.iloc[:, 1:].to_numpy(), ref.iloc[:, 1:].to_numpy(), equal_nan=True)


def test_background_none_when_all_foreground():
    assert np.isnan(background_level(np.ones((3, 3)), np.ones((3, 3), int)))


@pytest.mark.parametrize(
    "image, labels",
    [
        (np.zeros((4, 4, 3)), np.zeros((4, 4, 3), int)),
        (np.zeros((4, 4)), np.zeros((4, 5), int)),
        (np.zeros((4, 4)), np.zeros((4, 4), float)),
        (np.full((4, 4), np.nan), np.zeros((4, 4), int)),
        (np.zeros((4, 4)), -np.ones((4, 4), int)),
    ],
)
def test_bad_input(image, labels):
    with pytest.raises(InputError):
        measure_nuclei(image, labels)


def test_unknown_feature_set():
    with pytest.raises(InputError, match="feature set"):
        feature_columns("everything")


def test_convex_area_and_feret_match_references_on_random_blobs():
    from scipy import ndimage as ndi
    from scipy.spatial import ConvexHull
    from skimage.measure import regionprops

    rng = np.random.default_rng(11)
    for _ in range(30):
        blob = ndi.gaussian_filter(rng.random((40, 40)), rng.uniform(1, 4)) > 0.51
        lab, n = ndi.label(blob)
        if n == 0:
            continue
        m = lab == 1
        f = shape_features(m)
        r = regionprops(m.astype(np.int32))[0]
        assert f["AreaShape_ConvexArea"] == r.area_convex  # scikit-image's convex image, exactly
        # Feret from all pixel corners by brute force (every direction in 0.05 degree steps).
        rows, cols = np.nonzero(m)
        corners = (np.stack([rows, cols], 1)[:, None, :] + np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]])).reshape(-1, 2)
        hv = corners[ConvexHull(corners).vertices]  # the diameter is between two hull vertices
        diam = np.sqrt(((hv[:, None] - hv[None]) ** 2).sum(-1)).max()
        assert f["AreaShape_MaxFeretDiameter"] == pytest.approx(diam, rel=1e-12)
        theta = np.deg2rad(np.arange(0, 180, 0.05))
        proj = hv @ np.stack([np.cos(theta), np.sin(theta)])
        widths = proj.max(0) - proj.min(0)
        # Sampled directions can only overestimate the minimum width (by < D * step^2 / 2-ish).
        assert widths.min() - 0.02 <= f["AreaShape_MinFeretDiameter"] <= widths.min() + 1e-9


def test_degenerate_lines():
    for m in (np.ones((1, 7), bool), np.eye(6, dtype=bool)):
        f = shape_features(m)
        assert f["AreaShape_ConvexArea"] == m.sum()
    f = shape_features(np.ones((1, 7), bool))
    assert f["AreaShape_MinFeretDiameter"] == pytest.approx(1.0)
    assert f["AreaShape_MaxFeretDiameter"] == pytest.approx(np.hypot(1, 7))
    assert f["AreaShape_Eccentricity"] == pytest.approx(1.0)


def test_feature_config_validation():
    from nucleoscope.features import FeatureConfig

    with pytest.raises(InputError):
        FeatureConfig(haralick_levels=1)
    with pytest.raises(InputError):
        FeatureConfig(hc_k=float("nan"))
    image, labels = _two_nuclei()
    a = measure_nuclei(image, labels, config=FeatureConfig(haralick_levels=8))
    b = measure_nuclei(image, labels)
    assert a.loc[0, "Texture_Haralick_Contrast"] != b.loc[0, "Texture_Haralick_Contrast"]
    pd.testing.assert_series_equal(a["AreaShape_Area"], b["AreaShape_Area"])
