"""Sparse-rendering detection and diameter estimation (segment.sizing.sparse_rendering_fraction /
estimate_diameter_sparse) against exact synthetic truth and the bundled wide-field images."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from nucleoscope.rescale import estimate_diameter
from nucleoscope.segment.sizing import SPARSE_RENDERING_THRESHOLD, estimate_diameter_sparse, sparse_rendering_fraction
from nucleoscope.synth import nuclei_field, storm_field

DATA = Path(__file__).resolve().parents[1] / "src" / "nucleoscope" / "data"
BUNDLED = sorted(p for p in DATA.glob("*.tif") if not p.name.endswith("_mask.tif"))


def test_bundled_images_exist():
    assert len(BUNDLED) == 3


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_fraction_zero_on_bundled_widefield(path):
    assert sparse_rendering_fraction(tifffile.imread(path)) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraction_zero_on_synthetic_widefield(seed):
    assert sparse_rendering_fraction(nuclei_field((384, 384), rng=seed).image) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraction_above_threshold_on_storm(seed):
    img = storm_field((512, 512), rng=seed, diameter=(50, 80)).image
    assert sparse_rendering_fraction(img) > 2 * SPARSE_RENDERING_THRESHOLD


def test_fraction_sees_exact_minimum_only():
    # an offset keeps the empty pixels at the (new) minimum, so the fraction is unchanged; sub-level
    # noise leaves no pixel exactly at the minimum, so the fraction collapses
    img = storm_field((512, 512), rng=3, diameter=(50, 80)).image.astype(np.float32)
    f = sparse_rendering_fraction(img)
    assert sparse_rendering_fraction(img + 1) == pytest.approx(f)
    noisy = img + np.random.default_rng(0).uniform(0.1, 0.9, img.shape).astype(np.float32)
    assert sparse_rendering_fraction(noisy) < 0.01 * f


def test_fraction_subsamples_large_images():
    # a 2048 px frame is subsampled by 4: the fraction still marks it as a rendering
    img = storm_field((2048, 2048), rng=4, diameter=(150, 250), coverage=0.3).image
    assert sparse_rendering_fraction(img) > SPARSE_RENDERING_THRESHOLD


@pytest.mark.parametrize("size, seed", [(40, 12), (100, 13)])
def test_diameter_sparse_matches_truth(size, seed):
    side = 512 if size < 60 else 800
    s = storm_field((side, side), rng=seed, diameter=(0.85 * size, 1.15 * size))
    truth = estimate_diameter(s.labels)
    d = estimate_diameter_sparse(s.image)
    assert d == pytest.approx(truth, rel=0.25)
    # the ordinary Otsu-based estimate on the raw rendering measures speckle, far below the truth
    from skimage.filters import threshold_otsu
    assert estimate_diameter(s.image > threshold_otsu(s.image)) < 0.3 * truth


def test_diameter_sparse_rejects_3d():
    with pytest.raises(Exception):
        estimate_diameter_sparse(np.zeros((2, 8, 8)))
