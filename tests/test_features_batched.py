"""The batched feature groups (features._batched, used by measure_nuclei) against the per-nucleus
functions, on the bundled real BBBC039 fields and on edge cases: every value equal to 1e-9, counts exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nucleoscope
from nucleoscope.features import FeatureConfig, feature_columns
from nucleoscope.features._table import _SETS, _measure
from nucleoscope.io import read_image, read_labels

DATA = Path(nucleoscope.__file__).resolve().parent / "data"
FIELDS = ["IXMtest_A16_s3", "IXMtest_C09_s7"]


def both(image: np.ndarray, labels: np.ndarray, feature_set: str = "default") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(batched, per-nucleus reference) tables of the same nuclei."""
    cols, groups, cfg = feature_columns(feature_set), _SETS[feature_set], FeatureConfig()
    new = _measure(image, labels, cols, groups, 0.5, 4000.0, cfg)
    ref = _measure(image, labels, cols, groups, 0.5, 4000.0, cfg, batched=False)
    return new, ref


def assert_same(new: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert list(new.columns) == list(ref.columns)
    assert np.array_equal(new["ObjectNumber"], ref["ObjectNumber"])
    a, b = new.to_numpy(np.float64), ref.to_numpy(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
    counts = [c for c in ref.columns if c.endswith("Area") or c.startswith("AreaShape_BoundingBox")]
    np.testing.assert_array_equal(new[counts].to_numpy(), ref[counts].to_numpy())


@pytest.fixture(scope="module", params=FIELDS)
def field(request) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(DATA / f"{request.param}.tif").data
    labels = read_labels(DATA / f"{request.param}_mask.tif")
    # a window so the test stays fast; it cuts nuclei at the window's border (border cases included)
    return image[:260, :350], labels[:260, :350]


def test_real_field_equal(field):
    image, labels = field
    assert np.unique(labels).size > 10
    assert_same(*both(image, labels))


def test_edge_cases_equal(field):
    """Non-consecutive ids, a 1-pixel nucleus, a constant nucleus, a line, nuclei on every border."""
    image, labels = field
    image = image.astype(np.float64).copy()
    lab = np.zeros(labels.shape, np.int32)
    H, W = lab.shape
    lab[100:101, 100:101] = 7  # one pixel
    lab[10:20, 150:170] = 1000  # constant intensity
    image[10:20, 150:170] = 123.0
    lab[0:12, 0:9] = 3  # corner
    lab[H - 6 : H, 60:80] = 55  # bottom border
    lab[40:60, W - 3 : W] = 56  # right border, 3 wide
    lab[200:201, 30:60] = 9  # a horizontal line: no vertical or diagonal pairs
    lab[150:170, 200] = 10  # a vertical line
    lab[120:140, 250:275] = 11  # touches nucleus 12 (pairs across must be ignored)
    lab[140:150, 250:275] = 12
    new, ref = both(image, lab)
    assert list(new["ObjectNumber"]) == [3, 7, 9, 10, 11, 12, 55, 56, 1000]
    assert np.isnan(new.loc[new["ObjectNumber"] == 7, "Texture_Haralick_Contrast"]).all()
    assert_same(new, ref)


def test_all_set_and_uint_image(field):
    image, labels = field
    new, ref = both(image[:120, :160], labels[:120, :160], "all")
    assert_same(new, ref)


def test_other_config_equal(field):
    """Non-default Haralick levels and no Otsu refinement of the chromatin mask."""
    image, labels = field
    image, labels = image[:150, :200], labels[:150, :200]
    cols, groups = feature_columns("default"), _SETS["default"]
    cfg = FeatureConfig(haralick_levels=8, hc_refine=False, hc_k=0.5)
    new = _measure(image, labels, cols, groups, None, None, cfg)
    ref = _measure(image, labels, cols, groups, None, None, cfg, batched=False)
    assert_same(new, ref)
