"""Synthetic data: the truth must be exact, reproducible and free of artifacts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucleoscope import InputError
from nucleoscope.synth import nuclei_field


def _ellipse_union(objects, shape):
    """Independent rasterisation of the outlines in the truth table (valid for irregularity=0)."""
    yy, xx = np.indices(shape, dtype=np.float64)
    union = np.zeros(shape, bool)
    border = np.zeros(shape, bool)  # pixels within float rounding of an outline
    for r in objects.itertuples():
        dy, dx = yy - r.center_y, xx - r.center_x
        c, s = np.cos(r.angle), np.sin(r.angle)
        rho = np.hypot((dx * c + dy * s) / (r.major_axis / 2), (-dx * s + dy * c) / (r.minor_axis / 2))
        union |= rho <= 1
        border |= np.abs(rho - 1) < 1e-4
    return union, border


@pytest.fixture(scope="module")
def crowded():
    return nuclei_field(
        (160, 160), rng=3, diameter=(16, 22), coverage=0.45, clump_fraction=0.8, overlap=0.25,
        irregularity=0.0, artifacts=0, illumination_strength=0.0,
    )


def test_labels_equal_rendered_outlines(crowded):
    s = crowded
    union, border = _ellipse_union(s.objects, s.labels.shape)
    diff = (s.labels > 0) != union
    assert not (diff & ~border).any()
    assert s.objects["overlapping"].sum() >= 4  # the fixture really has overlaps to split


def test_ids_are_1_to_n_and_table_matches(crowded):
    s = crowded
    n = len(s.objects)
    assert n > 20
    assert s.labels.dtype == np.int32
    assert np.array_equal(np.unique(s.labels), np.arange(n + 1))
    assert np.array_equal(s.objects["label"].to_numpy(), np.arange(1, n + 1))
    assert np.array_equal(s.objects["area"].to_numpy(), np.bincount(s.labels.ravel())[1:])
    # each label is one connected piece holding its own rendered centre (marker watershed from the centres)
    for r in s.objects.itertuples():
        iy, ix = int(round(r.center_y)), int(round(r.center_x))
        if 0 <= iy < 160 and 0 <= ix < 160:
            assert s.labels[iy, ix] == r.label
        assert ndi.label(s.labels == r.label)[1] == 1


def test_touching_flags_are_true(crowded):
    s = crowded
    cross = ndi.generate_binary_structure(2, 1)
    n_true = 0
    for r in s.objects.itertuples():
        own = s.labels == r.label
        ring = ndi.binary_dilation(own, cross) & ~own
        others = set(np.unique(s.labels[ring])) - {0}
        assert r.touching == bool(others)
        assert r.n_touching == len(others)
        n_true += r.touching
    assert n_true >= 10


def test_clean_image_follows_the_labels(crowded):
    """Nuclei pixels are bright and pixels far from any nucleus are exactly background (up to the blur)."""
    s, p = crowded, crowded.params
    fs = 4095.0
    bg = p["background"] * fs
    far = ndi.distance_transform_edt(s.labels == 0) > 4 * p["psf_sigma"] + 1
    core = ndi.distance_transform_edt(s.labels > 0) > 4 * p["psf_sigma"] + 1
    assert far.sum() > 500 and core.sum() > 200
    np.testing.assert_allclose(s.clean[far], bg, rtol=1e-3)
    assert s.clean[core].min() > bg + 0.02 * p["signal"] * fs


def test_artifacts_never_in_labels():
    kw = dict(rng=11, diameter=(18, 24), coverage=0.2, illumination_strength=0.0)
    plain = nuclei_field((192, 192), artifacts=0, **kw)
    dirty = nuclei_field((192, 192), artifacts={"polygons": 4, "fibres": 3, "debris": 20, "blobs": 3}, **kw)
    assert np.array_equal(plain.labels, dirty.labels)
    assert not plain.artifact_mask.any()
    outside = dirty.artifact_mask & (dirty.labels == 0)
    assert outside.sum() > 300
    assert (dirty.labels[outside] == 0).all()
    # the artifacts are really rendered there
    assert (dirty.clean[outside] > plain.clean[outside] + 1).mean() > 0.9


def test_same_seed_same_output_and_seeds_differ():
    a, b = nuclei_field((128, 128), rng=5), nuclei_field((128, 128), rng=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.objects.equals(b.objects)
    c = nuclei_field((128, 128), rng=6)
    assert not np.array_equal(a.image, c.image)


def test_heterochromatin_truth(crowded):
    s = crowded
    assert not (s.hc_mask & (s.labels == 0)).any()
    hc_area = np.bincount(s.labels.ravel(), weights=s.hc_mask.ravel(), minlength=len(s.objects) + 1)[1:]
    np.testing.assert_allclose(s.objects["hc_fraction"], hc_area / s.objects["area"])
    assert 0.01 < s.hc_mask.sum() / (s.labels > 0).sum() < 0.5


@pytest.mark.parametrize("diameter", [(8, 10), (120, 150)])
def test_scale_option(diameter):
    s = nuclei_field((256, 256), rng=1, diameter=diameter, irregularity=0.0, artifacts=0)
    d = s.objects["diameter"]
    assert d.min() >= diameter[0] - 1e-9 and d.max() <= diameter[1] + 1e-9
    inner = s.objects[~s.objects["at_border"] & ~s.objects["overlapping"]]
    assert len(inner) >= 1
    # the label area of an untouched nucleus is its ellipse area, pi/4 d^2, to within pixelation
    np.testing.assert_allclose(inner["area"], np.pi / 4 * inner["diameter"] ** 2, rtol=0.15)


@pytest.mark.parametrize("dtype,top", [("uint8", 255), ("uint16", 4095), ("float32", 1.0)])
def test_dtypes_and_range(dtype, top):
    s = nuclei_field((96, 96), rng=2, dtype=dtype)
    assert s.image.dtype == np.dtype(dtype)
    assert s.image.min() >= 0 and s.image.max() <= top
    assert s.image.max() > 0.02 * top  # not a blank frame


def test_bad_options():
    with pytest.raises(InputError):
        nuclei_field((64, 64), rng=0, dtype="int8")
    with pytest.raises(InputError):
        nuclei_field((64, 64), rng=0, diameter=(10, 5))


def test_cli_writes_the_shared_data_layout(tmp_path):
    import pandas as pd
    import tifffile

    from nucleoscope.cli import main

    out = tmp_path / "set"
    rc = main(["synth", "nuclei", "-n", "3", "-o", str(out), "--seed", "7", "--size", "96", "112",
               "--set", "coverage=0.3", "--val-fraction", "0.34"])
    assert rc == 0
    truth = pd.read_csv(out / "truth.csv")
    splits = pd.read_csv(out / "splits.csv")
    assert list(splits["split"]) == ["train", "train", "val"]
    for i, name in enumerate(splits["image"]):
        again = nuclei_field((96, 112), rng=np.random.default_rng([7, i]), coverage=0.3)
        image = tifffile.imread(out / "images" / f"{name}.tif")
        masks = tifffile.imread(out / "masks" / f"{name}.tif")
        assert masks.dtype == np.uint16 and image.dtype == np.uint16
        assert np.array_equal(image, again.image) and np.array_equal(masks, again.labels)
        assert (truth["image"] == name).sum() == masks.max() == len(again.objects)
    assert main(["synth", "nuclei", "-n", "1", "-o", str(tmp_path / "x"), "--set", "nope=1"]) == 2
