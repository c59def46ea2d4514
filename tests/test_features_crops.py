"""Nucleus crops, sliding-window patches and their HDF5 export."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nucleoscope import InputError
from nucleoscope.features import PATCHNET_SIZES, nucleus_crops, nucleus_patches
from nucleoscope.io.hdf5 import CropWriter, read_crops_h5, write_crops_h5


def scene():
    """Three nuclei: a 41x41 square (centre 50, 60), a 9x9 square at the border, a 150x20 bar."""
    labels = np.zeros((200, 260), np.int32)
    labels[30:71, 40:81] = 3  # centroid (50, 60)
    labels[0:9, 250:259] = 8  # touches the top border
    labels[20:170, 200:220] = 12  # taller than a 128 crop
    image = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    return image, labels


def test_crops_centred_flagged_and_padded():
    image, labels = scene()
    c = nucleus_crops(image, labels, size=64)
    assert c.object_numbers.tolist() == [3, 8, 12]
    assert c.images.shape == (3, 64, 64) and c.images.dtype == np.float32
    # Centroid pixel at (32, 32): for label 3 that is image pixel (50, 60).
    assert c.origins[0].tolist() == [50 - 32, 60 - 32]
    assert c.images[0, 32, 32] == image[50, 60]
    assert c.masks[0].sum() == 41 * 41
    assert c.fits.tolist() == [True, True, False]  # the 150-px bar does not fit in 64
    assert c.inside_image.tolist() == [True, False, True]
    # Outside the image: fill value 0; the nucleus's own pixels are intact.
    y0, x0 = c.origins[1]
    assert y0 < 0 and (c.images[1, : -y0] == 0).all()
    assert c.masks[1].sum() == 81
    assert c.inside_fraction[0] == pytest.approx(41 * 41 / 64**2)


def test_crops_isolate_and_default_size():
    image, labels = scene()
    labels[50, 82] = 5  # a neighbour pixel inside label 3's window
    c = nucleus_crops(image, labels, isolate=True, fill=-1)
    assert c.size == 128
    first = c.object_numbers.tolist().index(3)
    assert (c.images[first][~c.masks[first]] == -1).all()


def test_crops_too_large_flag_default():
    image, labels = scene()
    c = nucleus_crops(image, labels)
    assert c.fits[c.object_numbers == 12].tolist() == [False]
    assert c.fits[c.object_numbers == 3].tolist() == [True]


def test_patches_grid_and_threshold():
    labels = np.zeros((100, 100), np.int32)
    labels[10:74, 20:68] = 1  # 64 x 48 rectangle
    image = np.ones(labels.shape, np.float32)
    p = nucleus_patches(image, labels)  # 32, stride 16, 85 %
    # Fully inside positions: rows 0, 16, 32 (64 - 32 = 32) x cols 0, 16 (48 - 32 = 16) -> 6 patches.
    assert len(p) == 6
    assert p.origins.tolist() == [[10, 20], [10, 36], [26, 20], [26, 36], [42, 20], [42, 36]]
    assert (p.inside_fraction == 1).all() and p.masks.all()


def test_patches_85_percent_rule_exact():
    # A 32 x 32 window over a disc-free shape: cut a corner to leave exactly 85 % and just below.
    labels = np.zeros((40, 40), np.int32)
    labels[:32, :32] = 1
    need = int(np.ceil(0.85 * 1024))  # 871 pixels
    flat = labels[:32, :32].ravel()
    flat[need:] = 0
    labels[:32, :32] = flat.reshape(32, 32)
    assert len(nucleus_patches(np.ones((40, 40)), labels)) == 1
    flat[need - 1] = 0
    labels[:32, :32] = flat.reshape(32, 32)
    assert len(nucleus_patches(np.ones((40, 40)), labels)) == 0


def test_patches_drop_overexposed():
    labels = np.ones((64, 64), np.int32)
    image = np.full(labels.shape, 100.0, np.float32)
    image[:32, :32] = 4095  # the top-left patch is fully saturated
    image[32:, 32:][:8, :] = 3701  # 8 of 32 rows above 3700 = 25 % of the bottom-right patch: dropped
    image[32:, :32][:7, :] = 4000  # 7 of 32 rows < 25 %: kept
    image[:32, 32:] = 3700  # at, not above, SCENMED's level: kept
    kept = nucleus_patches(image, labels, saturation=4095)
    origins = [tuple(o) for o in kept.origins.tolist()]
    assert (0, 0) not in origins and (32, 32) not in origins
    assert (32, 0) in origins and (0, 32) in origins
    assert len(nucleus_patches(image, labels)) == 9  # no saturation given: nothing dropped


@pytest.mark.parametrize("size", PATCHNET_SIZES)
def test_patchnet_sizes(size):
    labels = np.zeros((60, 60), np.int32)
    labels[5:55, 5:55] = 2
    p = nucleus_patches(np.ones((60, 60)), labels, size=size, stride=size // 2)
    # Brute force: starts every size // 2 px from the box corner, kept at >= 85 % inside.
    step = size // 2
    fr = [min(50 - s, size) / size for s in range(0, 50, step)]
    assert len(p) == sum(a * b >= 0.85 for a in fr for b in fr)
    assert len(p) >= ((50 - size) // step + 1) ** 2  # fully inside windows, plus (size 11) some reaching past
    assert p.images.shape[1:] == (size, size)


def test_no_nuclei_gives_empty_sets():
    z = np.zeros((20, 20), np.int32)
    assert len(nucleus_crops(np.ones((20, 20)), z)) == 0
    assert nucleus_patches(np.ones((20, 20)), z).images.shape == (0, 32, 32)


def test_bad_input():
    with pytest.raises(InputError):
        nucleus_crops(np.ones((4, 4)), np.ones((4, 5), int))
    with pytest.raises(InputError):
        nucleus_patches(np.ones((4, 4)), np.ones((4, 4), int), min_inside=0)


def test_hdf5_roundtrip(tmp_path):
    image, labels = scene()
    c1 = nucleus_crops(image, labels, size=64)
    c2 = nucleus_crops(image * 2, labels, size=64)
    path = write_crops_h5(
        tmp_path / "crops.h5",
        [("a", c1, "BJ"), ("b", c2, "MCF10A"), ("c", nucleus_crops(image, 0 * labels, size=64), "BJ")],
        size=64,
        metadata={"spacing": 0.215},
    )
    d = read_crops_h5(path)
    np.testing.assert_array_equal(d["images"], np.concatenate([c1.images, c2.images]))
    np.testing.assert_array_equal(d["masks"], np.concatenate([c1.masks, c2.masks]))
    assert d["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert d["class_names"] == ["BJ", "MCF10A"]
    assert d["image_names"] == ["a", "b", "c"]
    assert d["image_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert d["object_number"].tolist() == [3, 8, 12] * 2
    assert d["fits"].tolist() == [True, True, False] * 2
    assert d["metadata"] == {"spacing": 0.215}
    assert d["kind"] == "crops" and d["size"] == 64
    with h5py.File(path) as f:  # plain h5py sees the documented layout
        assert f["images"].dtype == np.float32 and f["masks"].dtype == np.uint8


def test_hdf5_atomic_on_error(tmp_path):
    target = tmp_path / "p.h5"
    with pytest.raises(InputError):
        with CropWriter(target, size=32, kind="patches") as w:
            w.add("x", nucleus_crops(np.ones((50, 50)), np.pad(np.ones((10, 10), np.int32), 20), size=16))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_hdf5_rejects_other_files(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a nucleoscope-crops"):
        read_crops_h5(p)
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(InputError):
        read_crops_h5(tmp_path / "junk.h5")


def test_measure_patches_99_columns():
    from nucleoscope.features import PATCH_TEXTURE_COLUMNS, lbp_features, measure_patches, zernike_features

    rng = np.random.default_rng(7)
    labels = np.zeros((80, 80), np.int32)
    labels[5:75, 5:75] = 4
    image = rng.random((80, 80)).astype(np.float32) * 100 + 10
    p = nucleus_patches(image, labels)
    t = measure_patches(p)
    assert len(PATCH_TEXTURE_COLUMNS) == 99
    assert list(t.columns[4:]) == PATCH_TEXTURE_COLUMNS and len(t) == len(p) == 9  # 3 x 3 starts
    assert t["ObjectNumber"].dtype == np.int32 and (t["ObjectNumber"] == 4).all()
    assert t[["Patch_Origin_Y", "Patch_Origin_X"]].iloc[1].tolist() == [5, 21]
    k = 5
    ref = {**lbp_features(p.images[k].astype(float), p.masks[k]), **zernike_features(p.images[k].astype(float), p.masks[k])}
    for c, v in ref.items():
        assert t.loc[k, c] == pytest.approx(v)
    empty = measure_patches(nucleus_patches(image, 0 * labels))
    assert len(empty) == 0 and list(empty.columns) == list(t.columns)
    assert (empty.dtypes.iloc[:4].tolist() == t.dtypes.iloc[:4].tolist())
