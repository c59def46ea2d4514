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
        irregularity=0.0, artifacts=0, illumination_strength=0.0, haze=0.0, condensed_fraction=0.0,
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


@pytest.mark.parametrize("diameter,size", [((8, 10), 256), ((120, 150), 480)])
def test_scale_option(diameter, size):
    s = nuclei_field((size, size), rng=1, diameter=diameter, irregularity=0.0, artifacts=0, clump_fraction=0.0,
                     condensed_fraction=0.0)
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


@pytest.mark.parametrize("seed", range(12))
def test_truth_invariants_on_random_defaults(seed):
    """Whatever the random defaults: ids 1..N, one 4-connected piece per label holding its centre,
    heterochromatin only inside labels, the table's area and touching flags agree with the labels."""
    from nucleoscope.synth._field import touching_pairs

    s = nuclei_field((128, 128), rng=seed)
    n = len(s.objects)
    assert np.array_equal(np.unique(s.labels), np.arange(n + 1))
    boxes = ndi.find_objects(s.labels)
    for r in s.objects.itertuples():
        assert ndi.label(s.labels[boxes[r.label - 1]] == r.label)[1] == 1
        iy, ix = int(round(r.center_y)), int(round(r.center_x))
        if 0 <= iy < 128 and 0 <= ix < 128:
            assert s.labels[iy, ix] == r.label
    assert not (s.hc_mask & (s.labels == 0)).any()
    assert np.array_equal(s.objects["area"].to_numpy(), np.bincount(s.labels.ravel(), minlength=n + 1)[1:])
    touching = np.zeros(n + 1, bool)
    touching[touching_pairs(s.labels).ravel()] = True
    assert np.array_equal(s.objects["touching"].to_numpy(), touching[1:])


def test_iterator_is_reproducible_and_varied():
    from nucleoscope.synth import iter_nuclei_fields

    a = list(iter_nuclei_fields(rng=9, shape=None, n=3, size_range=(64, 96)))
    b = list(iter_nuclei_fields(rng=9, shape=None, n=3, size_range=(64, 96)))
    assert len(a) == 3
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.labels, y.labels)
        assert all(64 <= side <= 96 for side in x.image.shape)
    assert len({x.image.shape for x in a}) > 1 or len({round(x.params["coverage"], 6) for x in a}) == 3


def test_tiny_and_huge_nuclei_edge_cases():
    s = nuclei_field((16, 40), rng=0, diameter=(150, 150), artifacts=0)  # nucleus larger than the image
    assert len(s.objects) >= 1 and (s.labels > 0).mean() > 0.5 and s.objects["at_border"].all()
    s = nuclei_field((64, 64), rng=0, coverage=0.001, artifacts=0)
    assert len(s.objects) == s.labels.max() >= 1


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
    # physical units: the pixel size reaches the TIFF and the truth table
    from nucleoscope.io import read_image

    assert main(["synth", "cells", "-n", "1", "-o", str(tmp_path / "c"), "--size", "96", "96",
                 "--spacing", "0.5"]) == 0
    assert read_image(tmp_path / "c" / "images" / "cells_00000.tif").spacing == pytest.approx(0.5)
    cells = pd.read_csv(tmp_path / "c" / "truth.csv")
    np.testing.assert_allclose(cells["cell_area_um2"], cells["cell_area"] * 0.25)
    # writing again over a data set needs --overwrite, which leaves no stale image behind
    small = ["synth", "nuclei", "-n", "2", "-o", str(out), "--size", "64", "64"]
    assert main(small) == 2
    assert main(small + ["--overwrite"]) == 0
    assert sorted(p.name for p in (out / "images").glob("*.tif")) == ["nuclei_00000.tif", "nuclei_00001.tif"]


# ---- chromatin conditions -------------------------------------------------------------------------------
from nucleoscope.synth import chromatin_crops, chromatin_field  # noqa: E402


@pytest.fixture(scope="module")
def crops():
    return chromatin_crops(12, rng=4, parameter="hc_fraction", values=(0.06, 0.14), size=80, diameter=(30, 40))


def test_hc_ec_truth_matches_direct_computation(crops):
    s = crops
    assert s.image.shape == s.labels.shape == s.clean.shape == (24, 80, 80)
    for k, row in s.objects.iterrows():
        nucleus = s.labels[k] == 1
        hc = float(s.clean[k][nucleus & s.hc_mask[k]].sum(dtype=np.float64))
        ec = float(s.clean[k][nucleus].sum(dtype=np.float64)) - hc
        assert row["hc_sum"] == pytest.approx(hc, rel=1e-9)
        assert row["ec_sum"] == pytest.approx(ec, rel=1e-9)
        assert row["hc_ec_ratio"] == pytest.approx(hc / ec, rel=1e-9)
        bg = s.clean[k][:3, :].mean()  # crop corners are pure background (constant, noise-free)
        sig = s.clean[k] - bg
        hc_s = float(sig[nucleus & s.hc_mask[k]].sum(dtype=np.float64))
        ec_s = float(sig[nucleus].sum(dtype=np.float64)) - hc_s
        assert row["hc_ec_ratio_signal"] == pytest.approx(hc_s / ec_s, rel=1e-3)
        assert row["hc_ec_ratio_signal"] > row["hc_ec_ratio"]  # the background dilutes the ratio
        assert not (s.hc_mask[k] & ~nucleus).any()
        # heterochromatin is the bright part of the nucleus
        assert s.clean[k][s.hc_mask[k]].mean() > s.clean[k][nucleus & ~s.hc_mask[k]].mean()


def test_chromatin_classes_shift_only_the_parameter(crops):
    by = crops.objects.groupby("class")
    frac = by["hc_fraction"].mean()
    assert frac[1] > 1.6 * frac[0]
    assert by["hc_ec_ratio"].mean()[1] > 1.5 * by["hc_ec_ratio"].mean()[0]
    # nuisance drawn from the same distributions: sizes and brightness agree between classes
    assert by["area"].mean()[1] == pytest.approx(by["area"].mean()[0], rel=0.1)
    assert by["brightness"].median()[1] == pytest.approx(by["brightness"].median()[0], rel=0.25)


@pytest.mark.parametrize("parameter,values", [("compaction", (1.0, 2.0)), ("foci_density", (4.0, 12.0))])
def test_paired_crops_share_nuisance(parameter, values):
    s = chromatin_crops(6, rng=1, parameter=parameter, values=values, paired=True, spread=0.0)
    a, b = s.objects.iloc[:6], s.objects.iloc[6:]
    np.testing.assert_array_equal(s.labels[:6], s.labels[6:])  # same outlines
    np.testing.assert_allclose(a["brightness"].to_numpy(), b["brightness"].to_numpy())
    if parameter == "compaction":
        # same HC signal packed into less area
        assert (b["hc_fraction"].to_numpy() < a["hc_fraction"].to_numpy()).all()
    else:
        assert (b["n_foci"].to_numpy() > 2 * a["n_foci"].to_numpy()).all()


def test_chromatin_field_condition():
    lo = chromatin_field((128, 128), rng=2, parameter="hc_fraction", value=0.05)
    hi = chromatin_field((128, 128), rng=2, parameter="hc_fraction", value=0.2)
    assert hi.objects["hc_fraction"].mean() > 2 * lo.objects["hc_fraction"].mean()
    assert not lo.artifact_mask.any()


# ---- STORM-like renderings ------------------------------------------------------------------------------
from nucleoscope.synth import storm_field  # noqa: E402


@pytest.fixture(scope="module")
def storm():
    return storm_field((300, 420), rng=3, tile=128, noise_regions=0.5, fragmentation=0.4, clump_fraction=0.8)


def test_storm_does_not_depend_on_tile_size(storm):
    other = storm_field((300, 420), rng=3, tile=512, noise_regions=0.5, fragmentation=0.4, clump_fraction=0.8)
    assert np.array_equal(storm.image, other.image)
    assert np.array_equal(storm.labels, other.labels)
    assert np.array_equal(storm.noise_mask, other.noise_mask)


def test_storm_truth(storm):
    s = storm
    n = len(s.objects)
    assert n >= 3 and s.params["n_noise_regions"] >= 1
    assert np.array_equal(np.unique(s.labels), np.arange(n + 1))
    assert np.array_equal(s.objects["area"].to_numpy(), np.bincount(s.labels.ravel())[1:])
    assert not (s.noise_mask & (s.labels > 0)).any()  # noise regions are never labelled
    from nucleoscope.synth._field import touching_pairs

    n_touch = np.bincount(touching_pairs(s.labels).ravel(), minlength=n + 1)[1:]
    assert np.array_equal(s.objects["n_touching"].to_numpy(), n_touch)  # across tile seams too
    # localisations really fill the noise regions and the nuclei; the rest is near-empty background
    empty = (s.labels == 0) & ~s.noise_mask
    assert (s.image[s.noise_mask] > 0).mean() > 0.3
    assert (s.image[s.labels > 0] > 0).mean() > 0.5
    assert np.median(s.image[empty]) == 0 and (s.image[empty] > 0).mean() < 0.1
    # fragmented texture: a good part of each nucleus is empty
    assert 0.05 < (s.image[s.labels > 0] == 0).mean() < 0.8


def test_storm_memory_stays_within_a_few_tiles():
    """A 2048^2 frame in 512 px tiles holds a few tiles of working memory beyond the outputs.

    The outputs are preallocated (as a tifffile memmap would be); a whole-frame float32 image would take
    16 MiB, the tile working set (counts, nearest-radius and label bookkeeping) about 3-4 MiB.
    """
    import tracemalloc

    shape = (2048, 2048)
    out = dict(out_image=np.zeros(shape, np.uint8), out_labels=np.zeros(shape, np.int32),
               out_noise=np.zeros(shape, bool))
    tracemalloc.start()
    try:
        s = storm_field(shape, rng=1, tile=512, diameter=(60, 80), coverage=0.08, **out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.image is out["out_image"] and len(s.objects) > 20
    assert peak < 6 * 512 * 512 * 4  # < 6 MiB; a full-frame float32 alone would be 16 MiB


# ---- whole cells ----------------------------------------------------------------------------------------
from nucleoscope.synth import cells_field  # noqa: E402


@pytest.fixture(scope="module")
def cells():
    return cells_field((200, 200), rng=5, cell_diameter=(40, 50), coverage=0.55, clump_fraction=0.9)


def test_cells_contain_their_nucleus(cells):
    s = cells
    n = len(s.objects)
    assert n >= 8
    assert np.array_equal(np.unique(s.cell_labels), np.arange(n + 1))
    assert np.array_equal(np.unique(s.labels), np.arange(n + 1))
    nuc = s.labels > 0
    assert np.array_equal(s.cell_labels[nuc], s.labels[nuc])  # nucleus i lies inside cell i
    # cells are clearly larger than their nuclei
    assert (s.objects["cell_area"] > 2 * s.objects["area"]).all()
    for i in range(1, n + 1):
        assert ndi.label(s.cell_labels == i)[1] == 1


def test_cell_clumps_and_channels(cells):
    s = cells
    cross = ndi.generate_binary_structure(2, 1)
    for r in s.objects.itertuples():
        own = s.cell_labels == r.label
        others = set(np.unique(s.cell_labels[ndi.binary_dilation(own, cross) & ~own])) - {0}
        assert r.cell_touching == bool(others) and r.cell_n_touching == len(others)
    assert s.objects["cell_touching"].sum() >= 5 and s.objects["clump_edge"].sum() >= 3
    # the cell channel is bright inside cells and dark outside (fluorescence mode)
    inside = ndi.binary_erosion(s.cell_labels > 0, iterations=3)
    outside = ~ndi.binary_dilation(s.cell_labels > 0, iterations=4)
    assert np.median(s.cell_image[inside]) > 2 * np.median(s.cell_image[outside])


def test_brightfield_cells():
    s = cells_field((128, 128), rng=2, cell_mode="brightfield", cell_diameter=(30, 40), coverage=0.4)
    outside = ~ndi.binary_dilation(s.cell_labels > 0, iterations=6)
    edges = ndi.binary_dilation(s.cell_labels > 0) & ~ndi.binary_erosion(s.cell_labels > 0)
    assert np.median(s.cell_image[outside]) > 0.4 * 4095
    assert np.median(s.cell_image[edges]) < np.median(s.cell_image[outside])
