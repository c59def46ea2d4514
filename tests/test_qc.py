import numpy as np
import pytest

from nucleoscope.qc import QCConfig, drop_flagged, qc_flags


def _scene():
    img = np.full((200, 200), 100.0, np.float32)
    lab = np.zeros((200, 200), np.int32)
    lab[50:70, 50:70] = 1                 # clean
    lab[100:120, 100:120] = 2             # overexposed: 25% of it at full scale
    img[100:105, 100:120] = 4095
    lab[0:20, 80:100] = 3                 # touches the top edge
    lab[30:40, 185:195] = 4               # 5 px from the right edge
    lab[60:200, 130:140] = 5              # 140 px tall: too large (and touches bottom)
    lab[150:154, 20:24] = 6               # 16 px: too small
    lab[140:160, 60:80] = 7               # 24% overexposed: not flagged
    img[140:160, 60:80][:96 // 20 * 1, :] = 4095  # 4 rows x 20 = 80 px = 20%
    return img, lab


def test_flags_on_constructed_cases():
    img, lab = _scene()
    f = qc_flags(img, lab, saturation=4095).set_index("ObjectNumber")
    assert list(f.index) == [1, 2, 3, 4, 5, 6, 7]
    assert not f.loc[1, "QC_Flagged"]
    assert f.loc[2, "QC_Overexposed"] and f.loc[2, "QC_Flagged"]
    assert not f.loc[7, "QC_Overexposed"]
    assert f.loc[3, "QC_NearEdge"] and f.loc[4, "QC_NearEdge"]
    assert not f.loc[1, "QC_NearEdge"]
    assert f.loc[5, "QC_TooLarge"] and not f.loc[1, "QC_TooLarge"]
    assert f.loc[6, "QC_TooSmall"] and not f.loc[1, "QC_TooSmall"]


def test_edge_margin_zero_flags_only_touching():
    img, lab = _scene()
    f = qc_flags(img, lab, saturation=4095, config=QCConfig(edge_margin=0)).set_index("ObjectNumber")
    assert f.loc[3, "QC_NearEdge"] and not f.loc[4, "QC_NearEdge"]


def test_overexposure_level_relative_to_dtype():
    img = np.zeros((30, 30), np.float32)
    lab = np.zeros((30, 30), np.int32)
    lab[10:20, 10:20] = 1
    img[10:20, 10:20] = 240   # 8-bit: 240/255 = 0.94 > 0.9035
    f = qc_flags(img, lab, saturation=255, config=QCConfig(edge_margin=0))
    assert f["QC_Overexposed"].item()
    f = qc_flags(img, lab, saturation=4095, config=QCConfig(edge_margin=0))
    assert not f["QC_Overexposed"].item()


def test_empty_labels_give_full_schema():
    f = qc_flags(np.zeros((10, 10)), np.zeros((10, 10), np.int32), saturation=255)
    assert len(f) == 0 and "QC_Flagged" in f.columns


def test_drop_flagged():
    img, lab = _scene()
    out = drop_flagged(lab, qc_flags(img, lab, saturation=4095))
    assert set(np.unique(out)) == {0, 1, 7}


def test_config_validation():
    with pytest.raises(ValueError):
        QCConfig(overexposed_level=3700)
