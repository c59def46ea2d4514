import numpy as np
import pytest

from nucleoscope.postprocess import (PostprocessConfig, fill_holes, object_areas, postprocess, relabel,
                                     remove_small, remove_small_relative, seeded_watershed)


def _labels():
    lab = np.zeros((40, 40), np.int32)
    lab[2:12, 2:12] = 7          # 100 px, with a 1-px hole below
    lab[6, 6] = 0
    lab[20:30, 20:30] = 3        # 100 px
    lab[35:37, 35:37] = 9        # 4 px
    return lab


def test_object_areas_counts_pixels():
    areas = object_areas(_labels())
    assert areas[7] == 99 and areas[3] == 100 and areas[9] == 4


def test_fill_holes_gives_hole_to_surrounding_object():
    out = fill_holes(_labels())
    assert out[6, 6] == 7
    assert (out == 7).sum() == 100


def test_fill_holes_between_two_objects_takes_majority_rim():
    lab = np.zeros((20, 20), np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 12:15] = 2       # object 2 touches the hole on one side only
    lab[9:11, 9:11] = 0        # 2x2 hole fully inside object 1
    out = fill_holes(lab)
    assert (out[9:11, 9:11] == 1).all()


def test_remove_small_absolute_and_relative():
    lab = _labels()
    assert set(np.unique(remove_small(lab, 5))) == {0, 3, 7}
    # mean area = (99 + 100 + 4) / 3 = 67.7; 1/5 of it = 13.5 -> the 4-px object goes
    assert set(np.unique(remove_small_relative(lab, 0.2))) == {0, 3, 7}
    # 0.99 of the mean (67.0) keeps both big ones; 1.48 x mean (100.2) removes all
    assert set(np.unique(remove_small_relative(lab, 0.99))) == {0, 3, 7}
    assert remove_small_relative(np.zeros((4, 4), np.int32), 0.2).max() == 0


def test_relabel_is_sequential_and_keeps_partition():
    lab = _labels()
    out = relabel(lab)
    assert out.dtype == np.int32
    assert sorted(np.unique(out)) == [0, 1, 2, 3]
    # same partition: a bijection between old and new ids
    pairs = set(zip(lab.ravel().tolist(), out.ravel().tolist()))
    assert len(pairs) == 4


def test_postprocess_pipeline():
    out = postprocess(_labels(), PostprocessConfig(min_size=10, min_relative_area=0.2))
    assert out.max() == 2 and out[6, 6] > 0


def test_seeded_watershed_splits_two_touching_discs():
    yy, xx = np.mgrid[:40, :60]
    mask = ((yy - 20) ** 2 + (xx - 20) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    seeds = np.zeros(mask.shape, np.int32)
    seeds[20, 20], seeds[20, 40] = 1, 2
    from scipy import ndimage as ndi
    out = seeded_watershed(-ndi.distance_transform_edt(mask), seeds, mask)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[20, 25] == 1 and out[20, 35] == 2


def test_config_validation():
    with pytest.raises(ValueError):
        PostprocessConfig(min_relative_area=1.5)


def test_fill_holes_keeps_pocket_inside_a_ring_of_nuclei():
    # a background pocket enclosed by a ring of 8 touching discs used to be given whole to one of them
    # (553 px added to a 362 px nucleus)
    yy, xx = np.mgrid[:100, :100]
    lab = np.zeros((100, 100), np.int32)
    for k in range(8):
        a = 2 * np.pi * k / 8
        d = (yy - 50 - 25 * np.sin(a)) ** 2 + (xx - 50 - 25 * np.cos(a)) ** 2 < 12.5**2
        lab[d & (lab == 0)] = k + 1
    assert lab[50, 50] == 0
    out = fill_holes(lab)
    np.testing.assert_array_equal(out, lab)
    # a hole inside one of the ring's nuclei is still filled
    lab[50, 75] = 0
    assert fill_holes(lab)[50, 75] == 1


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_touching_pairs_lists_each_4_connected_pair_once():
    from nucleoscope.postprocess import touching_pairs

    lab = np.array([[1, 1, 2, 0],
                    [3, 3, 2, 0],
                    [0, 4, 0, 5]], np.int32)
    a, b, mean = touching_pairs(lab)
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 2), (1, 3), (2, 3), (3, 4)]  # 4-5 only diagonal: no
    assert mean is None
    # the mean over each shared edge of the larger value on either side of it
    vals = np.arange(12, dtype=float).reshape(3, 4)
    a, b, mean = touching_pairs(lab, vals)
    got = dict(zip(zip(a.tolist(), b.tolist()), mean.tolist()))
    # 1-2: (0,1)|(0,2) -> 2; 1-3: (0,0)|(1,0) -> 4 and (0,1)|(1,1) -> 5; 2-3: (1,1)|(1,2) -> 6;
    # 3-4: (1,1)|(2,1) -> 9
    assert got == {(1, 2): 2.0, (1, 3): 4.5, (2, 3): 6.0, (3, 4): 9.0}


def test_merge_convex_pairs_rejoins_a_cut_nucleus_not_two_touching_ones():
    """A disc cut in half by a straight line is rejoined (union solidity ~1); two small touching discs
    (union solidity (2 pi r^2) / (pi r^2 + 2r * 2r) = 0.88 for r = 6) and a half disc touching a whole
    nucleus (union 1.5 x the median area) are left alone; the other nuclei set the median area."""
    from nucleoscope.postprocess import merge_convex_pairs

    shape = (120, 160)
    lab = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate([(15, 15), (15, 45), (15, 75), (15, 105), (15, 135)], 1):
        lab[_disc(shape, cy, cx, 10)] = k  # the median nucleus: ~314 px
    cut = _disc(shape, 50, 30, 10)
    lab[cut & (np.arange(160)[None, :] < 30)] = 6
    lab[cut & (np.arange(160)[None, :] >= 30)] = 7
    lab[_disc(shape, 50, 80, 6)] = 8   # two small discs touching at one point
    lab[_disc(shape, 50, 92, 6) & (lab == 0)] = 9
    whole = _disc(shape, 95, 40, 10)
    lab[whole] = 10
    half = _disc(shape, 95, 60, 10) & ~whole & (np.arange(160)[None, :] >= 60)
    lab[half] = 11
    # (the pairs above touch: 6-7 along the cut, 8-9 at the discs' contact, 10-11 along the half disc's edge)
    out = merge_convex_pairs(lab, 0.93)
    assert (out[lab == 7] == 6).all()  # the cut nucleus is whole again, under the smaller id
    for i in (8, 9, 10, 11, 1, 2, 3, 4, 5):
        assert (out[lab == i] == i).all(), i
    # without the size limits the concave pair 8-9 still stays apart: solidity, not size, decides it
    out2 = merge_convex_pairs(lab, 0.93, max_piece=10, max_union=10)
    assert (out2[lab == 9] == 9).all()
    # a lower solidity threshold takes it, and the greedy pass never chains one object into two merges
    out3 = merge_convex_pairs(lab, 0.8, max_piece=10, max_union=10)
    assert (out3[lab == 9] == 8).all()
    assert np.array_equal(merge_convex_pairs(lab, 0.0), lab)
