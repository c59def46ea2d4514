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
