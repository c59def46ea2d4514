"""Tests for resolve_overlaps: the STORM paper's merge / give / split rules on constructed instances
whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from nucleoscope.overlaps import resolve_overlaps

SHAPE = (80, 100)


def rect(y0, x0, y1, x1, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def disc(cy, cx, r, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[disk((cy, cx), r, shape=shape)] = True
    return m


def as_crop(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return (y0, x0, y1, x1), mask[y0:y1, x0:x1]


def test_disjoint_instances_keep_their_order():
    a, b, c = rect(0, 0, 10, 10), rect(20, 20, 30, 30), rect(50, 60, 60, 70)
    labels = resolve_overlaps([c, a, b], small_frac=0)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels[c], 1)
    np.testing.assert_array_equal(labels[a], 2)
    np.testing.assert_array_equal(labels[b], 3)
    assert np.count_nonzero(labels) == 300


def test_merge_when_sharing_most_of_their_total_area():
    a, b = rect(10, 10, 40, 40), rect(10, 16, 40, 46)  # overlap 24/30 of each: 80%
    labels = resolve_overlaps([a, b], small_frac=0)
    assert labels.max() == 1
    np.testing.assert_array_equal(labels == 1, a | b)


def test_merge_when_half_of_either_is_shared():
    # a small instance whose pixels are 60% inside a big one: IoU is small but the rule merges them
    big, small = rect(0, 0, 40, 50), rect(30, 40, 40, 50) | rect(40, 40, 46, 50)  # 100 of 160 inside
    assert np.count_nonzero(big & small) / np.count_nonzero(small) == pytest.approx(100 / 160)
    labels = resolve_overlaps([big, small], small_frac=0)
    assert labels.max() == 1
    np.testing.assert_array_equal(labels == 1, big | small)


def test_merge_groups_all_linked_instances():
    # b and c each overlap a by > 50% of themselves (and each other a little): all three become one
    a, b, c = rect(10, 10, 30, 30), rect(10, 25, 30, 34), rect(25, 10, 34, 30)
    labels = resolve_overlaps([a, b, c], small_frac=0)
    assert labels.max() == 1
    np.testing.assert_array_equal(labels == 1, a | b | c)


def test_give_overlap_to_the_instance_it_is_a_large_part_of():
    a = rect(0, 0, 20, 50)                      # 1000 px
    b = rect(10, 47, 20, 57)                    # 100 px; overlap 10x3 = 30 px: 3% of a, 30% of b
    labels = resolve_overlaps([a, b], small_frac=0)
    np.testing.assert_array_equal(labels == 2, b)
    np.testing.assert_array_equal(labels == 1, a & ~b)
    # the same when the order is swapped (the rule, not the order, decides)
    labels = resolve_overlaps([b, a], small_frac=0)
    np.testing.assert_array_equal(labels == 1, b)


def test_small_overlap_of_both_goes_to_the_larger_fraction_deterministically():
    a = rect(0, 0, 20, 50)                      # 1000 px
    b = rect(18, 10, 58, 30)                    # 800 px; overlap 2x20 = 40 px: 4% of a, 5% of b
    labels = resolve_overlaps([a, b], small_frac=0)
    np.testing.assert_array_equal(labels == 2, b)
    np.testing.assert_array_equal(labels == 1, a & ~b)
    # equal fractions: the earlier instance keeps the overlap
    c = rect(18, 10, 68, 30)                    # 1000 px; overlap 40 px = 4% of each
    labels = resolve_overlaps([a, c], small_frac=0)
    np.testing.assert_array_equal(labels == 1, a)
    labels = resolve_overlaps([c, a], small_frac=0)
    np.testing.assert_array_equal(labels == 1, c)


def test_split_along_the_perpendicular_bisector_of_the_centroids():
    a, b = disc(30, 30, 15), disc(45, 45, 15)   # lens overlap ~18% of each
    shared = a & b
    fa = shared.sum() / a.sum()
    assert 0.1 < fa < 0.5
    labels = resolve_overlaps([a, b], small_frac=0)
    ca, cb = np.array(ndi.center_of_mass(a)), np.array(ndi.center_of_mass(b))
    yy, xx = np.nonzero(shared)
    p = np.stack([yy, xx], axis=1).astype(float)
    nearer_a = ((p - ca) ** 2).sum(1) <= ((p - cb) ** 2).sum(1)
    np.testing.assert_array_equal(labels[yy, xx], np.where(nearer_a, 1, 2))
    assert nearer_a.any() and (~nearer_a).any()
    np.testing.assert_array_equal(labels[a & ~b], 1)
    np.testing.assert_array_equal(labels[b & ~a], 2)


def test_split_of_rectangles_cuts_at_the_midline():
    a, b = rect(0, 0, 20, 50), rect(0, 30, 20, 80)  # overlap 20 columns = 40% of each
    labels = resolve_overlaps([a, b], small_frac=0)
    # centroids at x = 24.5 and 54.5: bisector x = 39.5
    np.testing.assert_array_equal(labels[:20, :40], 1)
    np.testing.assert_array_equal(labels[:20, 40:80], 2)


def test_small_instances_and_small_pieces_are_removed():
    big = [rect(0, 0, 20, 20), rect(0, 40, 20, 60), rect(40, 0, 60, 20)]   # 400 px each
    tiny = rect(70, 90, 75, 95)                                                # 25 px < 25% of mean
    labels = resolve_overlaps(big + [tiny])
    assert labels.max() == 3 and not labels[tiny].any()
    # a bar through a disc: the split takes the bar's middle, leaving a 6x16 px stub on the far side
    # of the disc, a separate piece smaller than 25% of the mean area: removed with the rule, kept without
    bar, blob = rect(30, 0, 36, 100), disc(33, 70, 14)
    f = (bar & blob).sum() / bar.sum(), (bar & blob).sum() / blob.sum()
    assert 0.1 < min(f) and max(f) < 0.5  # the split rule applies
    stub = bar & ~blob
    stub[:, :70] = False
    assert stub.sum() == 96
    kept = resolve_overlaps([bar, blob], small_frac=0)
    np.testing.assert_array_equal(kept[stub], 1)
    cleaned = resolve_overlaps([bar, blob], small_frac=0.25)
    assert not cleaned[stub].any()
    np.testing.assert_array_equal(cleaned[~stub], kept[~stub])


def test_crop_input_equals_full_masks():
    masks = [disc(30, 30, 15), disc(45, 45, 15), rect(0, 60, 30, 90), rect(20, 80, 40, 99)]
    full = resolve_overlaps(masks)
    crops = resolve_overlaps([as_crop(m) for m in masks], shape=SHAPE)
    mixed = resolve_overlaps([masks[0]] + [as_crop(m) for m in masks[1:]])
    np.testing.assert_array_equal(full, crops)
    np.testing.assert_array_equal(full, mixed)


def test_three_way_overlap_gives_each_pixel_at_most_one_owner():
    masks = [disc(40, 40, 14), disc(40, 60, 14), disc(57, 50, 14)]
    labels = resolve_overlaps(masks, small_frac=0)
    assert labels.max() == 3
    union = masks[0] | masks[1] | masks[2]
    assert not labels[~union].any()
    # every pixel covered by exactly one instance keeps it
    only = [m & ~(masks[(k + 1) % 3] | masks[(k + 2) % 3]) for k, m in enumerate(masks)]
    for k, m in enumerate(only, start=1):
        np.testing.assert_array_equal(labels[m], k)


def test_empty_and_bad_input():
    assert not resolve_overlaps([np.zeros(SHAPE, bool)]).any()
    assert resolve_overlaps([], shape=(5, 5)).shape == (5, 5)
    with pytest.raises(ValueError):
        resolve_overlaps([rect(0, 0, 5, 5)], merge_frac=0.05, give_frac=0.1)
    with pytest.raises(ValueError, match="shape"):
        resolve_overlaps([as_crop(rect(0, 0, 5, 5))])
    with pytest.raises(ValueError, match="bbox"):
        resolve_overlaps([((0, 0, 3, 3), np.ones((2, 2), bool))], shape=(5, 5))
    with pytest.raises(ValueError, match="outside"):
        resolve_overlaps([((0, 0, 9, 9), np.ones((9, 9), bool))], shape=(5, 5))
