"""Failure causes on a hand-built image where every cause occurs once (or twice) by construction."""

import numpy as np
import pytest

from nucleoscope.metrics import FN_CAUSES, FP_CAUSES, failure_causes


def _scene():
    gt = np.zeros((120, 160), np.int32)
    pred = np.zeros_like(gt)
    img = np.zeros(gt.shape, np.float32)

    def box(lab, v, y, x, h=10, w=10):
        lab[y:y + h, x:x + w] = v

    box(gt, 1, 5, 5); box(pred, 1, 5, 5)                      # matched
    box(gt, 2, 5, 30); box(gt, 3, 5, 40); box(pred, 2, 5, 30, 10, 21)   # two truths in one (IoU 100 / 210 each)
    box(gt, 4, 5, 70)                                           # split in three pieces
    box(pred, 3, 5, 70, 10, 4); box(pred, 4, 5, 74, 10, 3); box(pred, 5, 5, 77, 10, 3)
    box(gt, 5, 30, 5, 3, 3)                                     # small, missed
    box(gt, 6, 30, 30)                                          # faint, missed
    box(gt, 7, 30, 60)                                          # normal, missed
    box(gt, 8, 30, 90); box(pred, 6, 30, 95)                    # outline: IoU 50 / 150
    img[gt > 0] = 100
    img[gt == 6] = 30
    box(pred, 7, 60, 5); img[60:70, 5:15] = 300                 # bright debris
    box(pred, 8, 60, 30, 2, 2); img[60:62, 30:32] = 100         # small speck
    box(pred, 9, 60, 60); img[60:70, 60:70] = 20                # faint texture
    box(pred, 10, 60, 90); img[60:70, 90:100] = 100             # nucleus-like, no truth
    return gt, pred, img


def test_every_cause_by_construction():
    gt, pred, img = _scene()
    f = failure_causes(gt, pred, img, thresh=0.5)
    gcause = dict(zip(f.gt_ids.tolist(), f.gt_cause.tolist()))
    pcause = dict(zip(f.pred_ids.tolist(), f.pred_cause.tolist()))
    assert gcause == {1: "", 2: "merged", 3: "merged", 4: "split", 5: "small", 6: "faint", 7: "missed", 8: "outline"}
    assert pcause == {1: "", 2: "merge", 3: "fragment", 4: "fragment", 5: "fragment", 6: "outline", 7: "bright",
                      8: "small", 9: "faint", 10: "nucleus-like"}
    c = f.counts()
    assert set(c) == {f"fn:{k}" for k in FN_CAUSES} | {f"fp:{k}" for k in FP_CAUSES}
    assert c["fn:merged"] == 2 and c["fp:fragment"] == 3 and c["fp:other"] == 0
    # every unmatched object has a cause, every matched one none: counts add up to FN and FP
    assert sum(v for k, v in c.items() if k.startswith("fn:")) == 7
    assert sum(v for k, v in c.items() if k.startswith("fp:")) == 9
    assert f.median_area == 100 and f.median_contrast == pytest.approx(100)
    assert f.pred_contrast[f.pred_ids.tolist().index(7)] == pytest.approx(300)


def test_a_stricter_threshold_turns_matches_into_outlines():
    gt, pred, img = _scene()
    pred2 = pred.copy()
    pred2[pred == 1] = 0
    pred2[5:15, 7:15] = 1           # IoU 0.8 with truth 1
    assert failure_causes(gt, pred2, img, thresh=0.5).gt_cause[0] == ""
    f = failure_causes(gt, pred2, img, thresh=0.9)
    assert f.gt_cause[0] == "outline" and f.pred_cause[0] == "outline"


def test_empty_truth_and_shape_check():
    pred = np.zeros((20, 20), np.int32); pred[2:8, 2:8] = 1
    f = failure_causes(np.zeros_like(pred), pred, np.ones((20, 20)))
    assert f.pred_cause.tolist() == ["other"] and np.isnan(f.median_area)
    with pytest.raises(ValueError, match="shape"):
        failure_causes(pred, pred, np.ones((10, 10)))
