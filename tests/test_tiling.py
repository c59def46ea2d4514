"""Tests for nucleoscope.tiling: exact split/reassemble, tiled == untiled for local predictors and for
instance segmentation of nuclei smaller than the overlap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from nucleoscope.tiling import TilingConfig, iter_tiles, predict_tiled, segment_tiled

SHAPES = [(1, 1), (7, 300), (100, 100), (128, 128), (129, 257), (300, 217), (513, 64)]
CONFIGS = [(16, 0), (32, 8), (64, 16), (64, 63), (100, 30), (128, 32), (512, 128)]


# ------------------------------------------------------------------------------------ config / layout

def test_config_validation():
    assert TilingConfig() == TilingConfig(tile=512, overlap=128)
    assert TilingConfig().margin == 64 and TilingConfig().slack_px == 32
    for bad in [dict(tile=0), dict(tile=64, overlap=64), dict(tile=64, overlap=-1), dict(tile=10.5),
                dict(match_frac=0), dict(match_frac=1.5), dict(slack=-2), dict(tile=True)]:
        with pytest.raises(ValueError):
            TilingConfig(**bad)


@pytest.mark.parametrize("tile,overlap", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_tiles_partition_the_image(shape, tile, overlap):
    config = TilingConfig(tile=tile, overlap=overlap)
    ny, nx = shape
    owned = np.zeros(shape, np.int32)
    tiles = list(iter_tiles(shape, config))
    for t in tiles:
        wy, wx = t.window
        assert 0 <= wy.start < wy.stop <= ny and 0 <= wx.start < wx.stop <= nx
        assert wy.stop - wy.start == min(tile, ny) and wx.stop - wx.start == min(tile, nx)
        cy, cx = t.core
        assert wy.start <= cy.start < cy.stop <= wy.stop and wx.start <= cx.start < cx.stop <= wx.stop
        # the core keeps the margin from every interior edge
        top, bottom, left, right = t.interior
        assert top == (wy.start > 0) and bottom == (wy.stop < ny)
        assert left == (wx.start > 0) and right == (wx.stop < nx)
        if top:
            assert cy.start - wy.start >= overlap // 2
        if bottom:
            assert wy.stop - cy.stop >= overlap // 2
        if left:
            assert cx.start - wx.start >= overlap // 2
        if right:
            assert wx.stop - cx.stop >= overlap // 2
        owned[cy, cx] += 1
    assert np.all(owned == 1)
    # as few tiles as the overlap allows: ceil((n - overlap) / (tile - overlap)) per axis
    per_axis = [1 if n <= tile else -(-(n - overlap) // (tile - overlap)) for n in shape]
    assert len(tiles) == per_axis[0] * per_axis[1]


def test_iter_tiles_example_and_bad_shape():
    tiles = list(iter_tiles((1000, 1000)))
    assert len(tiles) == 9
    assert [t.window[1] for t in tiles[:3]] == [slice(0, 512), slice(244, 756), slice(488, 1000)]
    assert [t.core[1] for t in tiles[:3]] == [slice(0, 378), slice(378, 622), slice(622, 1000)]
    with pytest.raises(ValueError):
        list(iter_tiles((0, 10)))
    with pytest.raises(ValueError):
        list(iter_tiles((10,)))


# ------------------------------------------------------------------------------------ predict_tiled

@pytest.mark.parametrize("tile,overlap", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_split_reassemble_identity(shape, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    out = predict_tiled(image, lambda x: x, TilingConfig(tile=tile, overlap=overlap))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


def _local_filter(image: np.ndarray, radius: int) -> np.ndarray:
    """Pure-numpy stencil: weighted sum over a (2r+1)^2 neighbourhood with reflected borders, then a
    nonlinearity. Every output pixel is computed with the same operations in the same order, so tiled
    and untiled results can be compared bit for bit."""
    r = radius
    padded = np.pad(image.astype(np.float64), r, mode="reflect")
    out = np.zeros(image.shape, np.float64)
    h, w = image.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out += (1.0 + 0.1 * dy - 0.05 * dx) * padded[r + dy:r + dy + h, r + dx:r + dx + w]
    return np.tanh(out / (2 * r + 1) ** 2)


@pytest.mark.parametrize("shape,tile,overlap,radius", [
    ((150, 170), 64, 16, 8),     # margin == radius: still exact
    ((200, 99), 50, 20, 5),
    ((40, 300), 64, 32, 3),
    ((37, 41), 64, 16, 4),       # image smaller than a tile
])
def test_predict_tiled_equals_untiled_for_local_filter(shape, tile, overlap, radius):
    rng = np.random.default_rng(1)
    image = rng.random(shape)
    cfg = TilingConfig(tile=tile, overlap=overlap)
    tiled = predict_tiled(image, lambda x: _local_filter(x, radius), cfg)
    np.testing.assert_array_equal(tiled, _local_filter(image, radius).astype(np.float32))


def test_predict_tiled_differs_when_overlap_is_too_small():
    rng = np.random.default_rng(2)
    image = rng.random((150, 170))
    tiled = predict_tiled(image, lambda x: _local_filter(x, 8), TilingConfig(tile=64, overlap=8))
    assert not np.array_equal(tiled, _local_filter(image, 8).astype(np.float32))


def test_predict_tiled_multichannel_and_shape_errors():
    rng = np.random.default_rng(3)
    image = rng.random((2, 90, 130)).astype(np.float32)  # a leading channel axis passes through

    def fn(x):
        return np.stack([x[0] + x[1], x[0] * x[1], -x[0]])

    out = predict_tiled(image, fn, TilingConfig(tile=40, overlap=10), n_out=3)
    assert out.shape == (3, 90, 130)
    np.testing.assert_allclose(out, fn(image), rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        predict_tiled(image[0], lambda x: x[:-1], TilingConfig(tile=40, overlap=10))


# ------------------------------------------------------------------------------------ grid layout, strided outputs

def _old_nuset_tiler(predict3, xp, tile, s):
    """Copy of nucleoscope.segment.nuset.infer._predict_tiled before the move to nucleoscope.tiling: a
    16-px-aligned core grid with margins, maps at stride 1, two outputs at stride ``s``."""
    H, W = xp.shape
    core, margin = tile
    core, margin = -(-core // 16) * 16, -(-margin // 16) * 16
    p0, c0, b0 = predict3(xp[:16, :16])
    maps = np.zeros((p0.shape[0], H, W), np.float32)
    cls = np.zeros((c0.shape[0], H // s, W // s), np.float32)
    box = np.zeros((b0.shape[0], H // s, W // s), np.float32)
    for y0 in range(0, H, core):
        for x0 in range(0, W, core):
            y1, x1 = min(y0 + core, H), min(x0 + core, W)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y1 + margin, H), min(x1 + margin, W)
            p, c, b = predict3(xp[ya:yb, xa:xb])
            maps[:, y0:y1, x0:x1] = p[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
            sl = (slice(None), slice((y0 - ya) // s, (y1 - ya) // s), slice((x0 - xa) // s, (x1 - xa) // s))
            cls[:, y0 // s:y1 // s, x0 // s:x1 // s] = c[sl]
            box[:, y0 // s:y1 // s, x0 // s:x1 // s] = b[sl]
    return maps, cls, box


def _window_dependent(x, s=8):
    """Three outputs (2 channels at stride 1, 3 and 12 channels at stride ``s``) that depend on the whole
    window (its mean and size), so any difference in windows shows in the numbers. Like NuSeT's
    ``_forward`` it works on a contiguous copy (a strided view's mean rounds differently)."""
    x = np.ascontiguousarray(x, np.float32)
    h, w = x.shape
    ctx = np.float32(x.mean() + 1e-3 * h - 1e-4 * w)
    p = np.stack([_local_filter(x, 2).astype(np.float32) + ctx, x * ctx])
    pooled = x.reshape(h // s, s, w // s, s).mean(axis=(1, 3))
    return p, np.stack([pooled * k + ctx for k in range(3)]), np.stack([pooled - k * ctx for k in range(12)])


@pytest.mark.parametrize("shape,tile", [((304, 416), (64, 16)), ((528, 272), (100, 30)), ((96, 704), (128, 32)),
                                        ((1024, 1040), (256, 48)), ((48, 48), (16, 0)), ((160, 32), (24, 8))])
def test_grid_layout_reproduces_the_old_nuset_tiler(shape, tile):
    from nucleoscope.segment.nuset.predict import tiling_config

    xp = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    old = _old_nuset_tiler(_window_dependent, xp, tile, 8)
    new = predict_tiled(xp, _window_dependent, tiling_config(tile), strides=(1, 8, 8))
    assert len(new) == 3
    for a, b in zip(old, new):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_grid_layout_windows_and_cores():
    cfg = TilingConfig(tile=96, overlap=32, layout="grid")  # cores of 64 px, 16 px of context
    tiles = list(iter_tiles((150, 64), cfg))
    assert [(t.window[0], t.core[0]) for t in tiles] == [
        (slice(0, 80), slice(0, 64)), (slice(48, 144), slice(64, 128)), (slice(112, 150), slice(128, 150))]
    assert all(t.window[1] == slice(0, 64) and t.core[1] == slice(0, 64) for t in tiles)
    assert [t.interior for t in tiles] == [(False, True, False, False), (True, True, False, False),
                                           (True, False, False, False)]
    with pytest.raises(ValueError, match="layout"):
        TilingConfig(layout="even")


@pytest.mark.parametrize("tile,overlap", CONFIGS)
@pytest.mark.parametrize("shape", SHAPES)
def test_grid_layout_partitions_the_image(shape, tile, overlap):
    cover = np.zeros(shape, int)
    for t in iter_tiles(shape, TilingConfig(tile=tile, overlap=overlap, layout="grid")):
        cover[t.core] += 1
        (wy, wx), (cy, cx) = t.window, t.core
        assert wy.stop - wy.start <= tile and wx.stop - wx.start <= tile
        # every core keeps overlap // 2 px from the window's edges inside the image
        for lo, hi, c_lo, c_hi, n in ((wy.start, wy.stop, cy.start, cy.stop, shape[0]),
                                      (wx.start, wx.stop, cx.start, cx.stop, shape[1])):
            assert lo == 0 or c_lo - lo == overlap // 2
            assert hi == n or hi - c_hi == overlap // 2
    assert (cover == 1).all()


@pytest.mark.parametrize("shape,tile,overlap,radius", [((160, 176), 64, 16, 8), ((48, 320), 96, 32, 16),
                                                       ((32, 40), 64, 16, 4)])
def test_strided_outputs_tiled_equal_untiled_for_local_predictor(shape, tile, overlap, radius):
    """A local predictor whose coarse outputs pool 8 x 8 cells: tiled == untiled when windows are aligned."""
    image = np.random.default_rng(4).random(shape)

    def fn(x):
        fine = _local_filter(x, radius).astype(np.float32)
        h, w = x.shape
        return fine[None], fine.reshape(h // 8, 8, w // 8, 8).max(axis=(1, 3))[None]

    tiled = predict_tiled(image, fn, TilingConfig(tile=tile, overlap=overlap, layout="grid"), strides=(1, 8))
    whole = fn(image)
    assert tiled[0].shape == (1, *shape) and tiled[1].shape == (1, shape[0] // 8, shape[1] // 8)
    for a, b in zip(tiled, whole):
        np.testing.assert_array_equal(a, b)


def test_strided_outputs_need_aligned_tiles():
    image = np.zeros((100, 120), np.float32)

    def fn(x):
        return x[None], x[::4, ::4][None]

    with pytest.raises(ValueError, match="multiples of 4"):  # the spread layout's starts are not aligned
        predict_tiled(image, fn, TilingConfig(tile=64, overlap=16), strides=(1, 4))
    with pytest.raises(ValueError, match="outputs"):
        predict_tiled(image, lambda x: (x[None],), TilingConfig(tile=64, overlap=16, layout="grid"), strides=(1, 4))
    with pytest.raises(ValueError, match="stride 4"):
        predict_tiled(image, lambda x: (x[None], x[None]), TilingConfig(tile=64, overlap=16, layout="grid"),
                      strides=(1, 4))


# ------------------------------------------------------------------------------------ segment_tiled

def _discs(shape, n, rmin, rmax, rng, gap=2):
    """Non-touching discs (at least ``gap`` px apart) at random places; returns a label image."""
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(20 * n):
        if k == n:
            break
        r = rng.uniform(rmin, rmax)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = disk((cy, cx), r + gap, shape=shape)
        if rr.size == 0 or labels[rr, cc].any():
            continue
        rr, cc = disk((cy, cx), r, shape=shape)
        if rr.size == 0:
            continue
        k += 1
        labels[rr, cc] = k
    return labels


def _threshold_label(image):
    return ndi.label(image > 0.5)[0].astype(np.int32)


@pytest.mark.parametrize("shape,tile,overlap,rmax", [
    ((300, 300), 128, 32, 7.5),   # diameter < overlap (the guarantee)
    ((257, 390), 100, 40, 9.5),
    ((200, 160), 64, 40, 9.5),    # tiles much smaller than the image
    ((90, 70), 128, 32, 7.5),     # image smaller than a tile
    ((301, 129), 128, 64, 15.5),
])
def test_segment_tiled_equals_untiled_for_small_nuclei(shape, tile, overlap, rmax):
    rng = np.random.default_rng(4)
    truth = _discs(shape, shape[0] * shape[1] // 250, 2.0, rmax, rng)
    image = (truth > 0).astype(np.float32)
    untiled = _threshold_label(image)
    tiled = segment_tiled(image, _threshold_label, TilingConfig(tile=tile, overlap=overlap))
    assert tiled.dtype == np.int32
    assert untiled.max() > 20
    # same partition and, as both number objects in raster order, the same ids
    np.testing.assert_array_equal(tiled, untiled)


def test_segment_tiled_keeps_every_nucleus_once_when_tiles_disagree():
    # blurred discs thresholded at a level that depends on the tile: each tile sees slightly different
    # outlines, so copies of a nucleus from neighbouring tiles differ and must be matched, not duplicated
    rng = np.random.default_rng(5)
    truth = _discs((320, 320), 300, 5.0, 9.0, rng, gap=3)
    image = ndi.gaussian_filter((truth > 0).astype(np.float64), 1.5)

    def seg(tile):
        level = 0.35 + 0.3 * ((tile.shape[0] * 7 + tile.shape[1] * 3 + int(tile.sum() * 10)) % 5) / 4
        return ndi.label(tile > level)[0], {"level": level}  # a tuple, like the registered segmenters

    tiled = segment_tiled(image, seg, TilingConfig(tile=96, overlap=40))
    n_true = int(truth.max())
    assert tiled.max() == n_true
    # one-to-one: every true disc overlaps exactly one label, with a high IoU
    for i in range(1, n_true + 1):
        ids = np.unique(tiled[truth == i])
        ids = ids[ids > 0]
        assert ids.size == 1
        iou = np.sum((tiled == ids[0]) & (truth == i)) / np.sum((tiled == ids[0]) | (truth == i))
        assert iou > 0.55  # the thresholds alone shrink a 5 px disc to IoU ~0.65


def test_segment_tiled_does_not_cut_nuclei_at_seams():
    # a nucleus sitting exactly on every seam of a 2x2 layout comes out whole, once
    image = np.zeros((200, 200), np.float32)
    cfg = TilingConfig(tile=128, overlap=56)
    seam_y = list(iter_tiles(image.shape, cfg))[0].core[0].stop
    seam_x = list(iter_tiles(image.shape, cfg))[0].core[1].stop
    rr, cc = disk((seam_y, seam_x), 12)
    image[rr, cc] = 1
    rr, cc = disk((seam_y, 30), 10)
    image[rr, cc] = 1
    tiled = segment_tiled(image, _threshold_label, cfg)
    assert tiled.max() == 2
    np.testing.assert_array_equal(tiled, _threshold_label(image))


def test_segment_tiled_empty_and_errors():
    image = np.zeros((100, 100), np.float32)
    out = segment_tiled(image, _threshold_label, TilingConfig(tile=40, overlap=10))
    assert out.dtype == np.int32 and not out.any()
    with pytest.raises(ValueError, match="shape"):
        segment_tiled(image, lambda x: np.zeros((3, 3), np.int32), TilingConfig(tile=40, overlap=10))
    with pytest.raises(ValueError, match="integer"):
        segment_tiled(image + 1, lambda x: x, TilingConfig(tile=40, overlap=10))


def test_reassembly_property_random_layouts():
    # property over random shapes and layouts: cores partition the image and reassembly is exact
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(ny=st.integers(1, 300), nx=st.integers(1, 300), tile=st.integers(8, 128), data=st.data())
    def check(ny, nx, tile, data):
        overlap = data.draw(st.integers(0, tile * 3 // 4))
        cfg = TilingConfig(tile=tile, overlap=overlap)
        image = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)
        np.testing.assert_array_equal(predict_tiled(image, lambda x: x * 2, cfg), image * 2)
        owned = np.zeros((ny, nx), np.int32)
        for t in iter_tiles((ny, nx), cfg):
            owned[t.core] += 1
        assert np.all(owned == 1)

    check()
