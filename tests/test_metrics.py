"""Tests of nucleoscope.metrics: analytic hand-built cases, and a slow obviously-correct reference
implementation (kept here) compared on random label images with hypothesis."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nucleoscope import InputError
from nucleoscope import metrics as M


def rect(labels: np.ndarray, value: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    labels[y0:y1, x0:x1] = value
    return labels


def blank(shape=(40, 60)) -> np.ndarray:
    return np.zeros(shape, np.int32)


# --------------------------------------------------------------------------------------------------
# Analytic cases
# --------------------------------------------------------------------------------------------------


def test_default_thresholds_are_exact_keys():
    assert M.DEFAULT_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert M.threshold_key(0.5 + 0.05 * 4) == 0.7
    gt = rect(blank(), 1, 2, 12, 2, 12)
    s = M.evaluate_image(gt, gt)
    assert list(s.objects) == list(M.DEFAULT_THRESHOLDS)
    assert s.at(0.5 + 0.05 * 4).thresh == 0.7


def test_identical():
    gt = blank()
    for i, x in enumerate(range(1, 50, 12)):
        rect(gt, i + 1, 3, 13, x, x + 10)
    pred = np.where(gt > 0, gt + 100, 0)  # other label values, same objects
    s = M.evaluate_image(gt, pred)
    for m in s.objects.values():
        assert (m.tp, m.fp, m.fn) == (5, 0, 0)
        assert m.f1 == m.ap == m.precision == m.recall == m.mean_matched_iou == m.panoptic_quality == 1.0
    m = s.at(0.5)
    assert sorted(m.matched_gt.tolist()) == [1, 2, 3, 4, 5]
    assert sorted(m.matched_pred.tolist()) == [101, 102, 103, 104, 105]
    assert s.pixel.mean_iou == s.pixel.f1 == s.pixel.accuracy == 1.0 and s.pixel.rmse == 0.0
    e = s.errors
    assert (e.split, e.merge, e.catastrophe, e.missed, e.gained) == (0, 0, 0, 0, 0)
    assert e.hausdorff_mean == 0.0 and e.hausdorff_n == 5
    assert e.fn_rate == e.fp_rate == 0.0


@pytest.mark.parametrize("side, shift", [(10, 2), (10, 5), (20, 3)])
def test_shifted_square_iou_and_hausdorff(side, shift):
    # A side x side square shifted by `shift` px along x: |A ∩ B| = side (side - shift),
    # IoU = (side - shift) / (side + shift); boundary Hausdorff distance = shift.
    gt = rect(blank(), 1, 5, 5 + side, 5, 5 + side)
    pred = rect(blank(), 2, 5, 5 + side, 5 + shift, 5 + shift + side)
    iou = (side - shift) / (side + shift)
    ov = M.overlap(gt, pred)
    assert ov.iou.tolist() == pytest.approx([iou], abs=1e-15)
    assert ov.iot.tolist() == pytest.approx([(side - shift) / side])
    for t in (0.3, 0.5, 0.6, 0.7, 0.8):
        m = M.match(gt, pred, thresh=t)
        assert m.tp == (1 if iou >= t else 0)
        assert m.fn == m.fp == 1 - m.tp
    e = M.error_scores(gt, pred, thresh=0.0001)
    assert e.hausdorff_mean == pytest.approx(shift)
    assert e.mean_best_iou == pytest.approx(iou)
    # pixel counts: TP = overlap, FP = FN = side * shift
    px = M.pixel_scores(gt, pred)
    assert (px.tp, px.fp, px.fn) == (side * (side - shift), side * shift, side * shift)
    n = gt.size
    assert px.rmse == pytest.approx(math.sqrt(2 * side * shift / n))
    assert px.accuracy == pytest.approx(1 - 2 * side * shift / n)
    fg = (side - shift) / (side + shift)
    bg = (n - side * (side + shift)) / (n - side * (side - shift))
    assert px.mean_iou == pytest.approx((fg + bg) / 2)
    assert px.f1 == pytest.approx(2 * side * (side - shift) / (2 * side * side))


def test_hausdorff_large_objects_take_the_kdtree_path():
    # 130 px squares: ~516 boundary pixels each, beyond the all-pairs limit (250,000 distances);
    # a notch in one corner makes the answer less trivial. Checked against brute force.
    gt, pred = np.zeros((150, 160), np.int32), np.zeros((150, 160), np.int32)
    gt[10:140, 10:140] = 1
    pred[10:140, 17:147] = 1
    pred[125:140, 17:30] = 0
    e = M.error_scores(gt, pred)
    assert e.hausdorff_n == 1
    assert e.hausdorff_mean == pytest.approx(ref_hausdorff(gt == 1, pred == 1))
    assert e.hausdorff_mean > 7


def test_shifted_disc_matches_circle_lens_area():
    # Two discs of radius r with centres d apart: lens area 2 r^2 acos(d / 2r) - (d / 2) sqrt(4 r^2 - d^2).
    from skimage.draw import disk

    r, d = 40, 10
    gt, pred = np.zeros((200, 200), np.int32), np.zeros((200, 200), np.int32)
    gt[disk((100, 95), r, shape=gt.shape)] = 1
    pred[disk((100, 95 + d), r, shape=gt.shape)] = 1
    lens = 2 * r * r * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r * r - d * d)
    iou = lens / (2 * math.pi * r * r - lens)
    m = M.match(gt, pred, thresh=0.5)
    assert m.tp == 1
    assert m.mean_matched_iou == pytest.approx(iou, abs=0.01)  # pixelation error only


def test_merge():
    # Two truth squares 2 px apart, one prediction covering both: IoU 100/220 < 0.5 each.
    gt = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 5, 15, 17, 27)
    pred = rect(blank(), 9, 5, 15, 5, 27)
    s = M.evaluate_image(gt, pred)
    m = s.at(0.5)
    assert (m.tp, m.fp, m.fn) == (0, 1, 2)
    e = s.errors
    assert (e.merge, e.split, e.catastrophe) == (1, 0, 0)
    assert e.merge_objects == 2
    assert M.overlap(gt, pred).iou.tolist() == pytest.approx([100 / 220, 100 / 220])


def test_split():
    # One truth 10 x 21, two predictions 10 x 10 with a 1 px gap: IoU 100/210 each.
    gt = rect(blank(), 3, 5, 15, 5, 26)
    pred = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 5, 15, 16, 26)
    e = M.error_scores(gt, pred)
    assert (e.split, e.merge, e.catastrophe) == (1, 0, 0)
    assert (e.correct, e.missed, e.gained) == (0, 1, 2)


def test_catastrophe():
    # Truth: two horizontal bars; prediction: two vertical bars over the same square. All IoUs 1/3.
    gt = rect(rect(blank(), 1, 0, 10, 0, 20), 2, 10, 20, 0, 20)
    pred = rect(rect(blank(), 1, 0, 20, 0, 10), 2, 0, 20, 10, 20)
    assert M.overlap(gt, pred).iou.tolist() == pytest.approx([1 / 3] * 4)
    e = M.error_scores(gt, pred)
    assert (e.split, e.merge, e.catastrophe, e.catastrophe_objects) == (0, 0, 1, 2)
    assert M.evaluate_image(gt, pred).pixel.f1 == 1.0  # pixel scores cannot see it


def test_small_object_swallowed_counts_as_merge_link():
    # IoU of a 4 px truth speck with the big merged prediction is < 0.1, but it lies inside it.
    gt = rect(rect(blank(), 1, 5, 25, 5, 20), 2, 5, 7, 21, 23)
    big = rect(blank(), 5, 5, 25, 5, 40)  # IoU with truth 1: 300/700 < 0.5
    e = M.error_scores(gt, big)
    assert e.merge == 1 and e.merge_objects == 2


def test_empty_cases():
    gt = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 20, 30, 20, 30)
    empty = blank()
    m = M.match(gt, empty)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1, m.ap) == (0, 0, 2, 1.0, 0.0, 0.0, 0.0)
    assert math.isnan(m.mean_matched_iou) and m.panoptic_quality == 0.0
    m = M.match(empty, gt)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1, m.ap) == (0, 2, 0, 0.0, 1.0, 0.0, 0.0)
    s = M.evaluate_image(empty, empty)
    m = s.at(0.5)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1, m.ap, m.panoptic_quality) == (0, 0, 0, 1, 1, 1, 1, 1)
    assert s.pixel.mean_iou == s.pixel.f1 == s.pixel.accuracy == 1.0 and s.pixel.rmse == 0.0
    assert math.isnan(s.errors.hausdorff_mean) and math.isnan(s.errors.touching_separated)
    e = M.evaluate_image(gt, empty).errors
    assert (e.missed, e.fn_rate, e.fp_rate) == (2, 1.0, 0.0)


def test_touching_nuclei_separated():
    gt = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 5, 15, 15, 25)   # share an edge
    rect(gt, 3, 15, 25, 25, 35)                                     # touches 2 only at a corner (8-neighbour)
    rect(gt, 4, 30, 38, 40, 50)                                     # alone
    e = M.error_scores(gt, gt)
    assert (e.touching_pairs, e.touching_separated_pairs, e.touching_separated) == (2, 2, 1.0)
    merged = np.where(np.isin(gt, [1, 2]), 1, gt)
    e = M.error_scores(gt, merged)
    assert (e.touching_pairs, e.touching_separated_pairs, e.touching_separated) == (2, 0, 0.0)
    assert e.merge == 1


def test_nuset_rates_equal_counts_at_0_7():
    # Four squares with IoU 1, 0.8, 2/3, 0 (missing) against the truth, plus one extra prediction.
    gt, pred = blank((40, 80)), blank((40, 80))
    for i, shift in enumerate([0, 1, 2]):
        rect(gt, i + 1, 5, 15, 5 + 20 * i, 15 + 20 * i)
        rect(pred, i + 1, 5, 15, 5 + 20 * i + shift, 15 + 20 * i + shift)
    rect(gt, 4, 25, 35, 5, 15)
    rect(pred, 7, 25, 35, 60, 70)
    e = M.error_scores(gt, pred)
    m = M.match(gt, pred, thresh=0.7)
    # IoU = (10 - s) / (10 + s): 1, 9/11, 8/12 -> two pass 0.7
    assert (m.tp, m.fn, m.fp) == (2, 2, 2)
    assert (e.nuset_fn, e.nuset_fp) == (m.fn, m.fp)
    assert e.fn_rate == pytest.approx(2 / 4) and e.fp_rate == pytest.approx(2 / 4)


def test_min_size_ignores_specks():
    gt = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 30, 32, 30, 32)    # 4 px speck
    pred = rect(blank(), 1, 5, 15, 5, 15)
    assert M.match(gt, pred).fn == 1
    m = M.match(gt, pred, min_size=5)
    assert (m.n_true, m.tp, m.fn) == (1, 1, 0)
    s = M.evaluate_image(gt, pred, min_size=5)
    assert s.pixel.f1 == 1.0 and s.n_true == 1


def test_huge_and_sparse_label_values():
    gt = rect(rect(blank(), 2**31 - 1, 5, 15, 5, 15), 7, 20, 30, 20, 30)
    pred = rect(rect(blank().astype(np.uint32), 4_000_000_000, 5, 15, 6, 16), 1, 20, 30, 20, 30)
    m = M.match(gt, pred, thresh=0.5)
    assert m.tp == 2
    assert dict(zip(m.matched_gt.tolist(), m.matched_pred.tolist())) == {2**31 - 1: 4_000_000_000, 7: 1}


def test_bad_input():
    gt = blank()
    with pytest.raises(InputError, match="shape"):
        M.evaluate_image(gt, blank((10, 10)))
    with pytest.raises(InputError, match="integer"):
        M.match(gt, gt.astype(np.float32))
    with pytest.raises(InputError, match="negative"):
        M.match(gt, gt - 1)


def test_hungarian_beats_greedy_below_0_5():
    # 1-row images: gt1 = [0, 10), gt2 = [10, 20); p1 = [4, 14), p2 = [0, 4).
    # IoU(gt1, p1) = 6/14, IoU(gt1, p2) = 4/10, IoU(gt2, p1) = 4/16. Greedy best-IoU pairing takes
    # gt1-p1 and leaves gt2 alone (1 match); the optimal one-to-one matching has 2.
    gt = np.zeros((1, 30), np.int32)
    pred = np.zeros((1, 30), np.int32)
    gt[0, 0:10], gt[0, 10:20] = 1, 2
    pred[0, 4:14], pred[0, 0:4] = 1, 2
    m = M.match(gt, pred, thresh=0.2)
    assert m.tp == 2
    assert dict(zip(m.matched_gt.tolist(), m.matched_pred.tolist())) == {1: 2, 2: 1}
    assert m.sum_matched_iou == pytest.approx(4 / 10 + 4 / 16)


def test_dataset_pooling_and_means():
    a = rect(blank(), 1, 5, 15, 5, 15)
    b = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 20, 30, 20, 30)
    # image 1 perfect (1 TP); image 2 misses one of two (1 TP, 1 FN) and adds one (1 FP)
    pred_b = rect(rect(blank(), 1, 5, 15, 5, 15), 2, 30, 38, 40, 50)
    d = M.evaluate_dataset([(a, a), (b, pred_b)], names=["a", "b"])
    p = d.pooled[0.5]
    assert (p.tp, p.fp, p.fn) == (2, 1, 1)
    assert p.f1 == pytest.approx(4 / 6) and p.ap == pytest.approx(2 / 4)
    assert d.per_image_mean[0.5]["f1"] == pytest.approx((1 + 2 / 4) / 2)
    assert d.errors.missed == 1 and d.errors.gained == 1
    assert [s.name for s in d.images] == ["a", "b"]
    j = d.to_json_dict()
    assert j["pooled"]["0.5"]["tp"] == 2 and set(j["pooled"]) == {str(t) for t in M.DEFAULT_THRESHOLDS}
    assert j["per_image"][1]["name"] == "b"


# --------------------------------------------------------------------------------------------------
# Reference implementation (slow, obviously correct) and property tests
# --------------------------------------------------------------------------------------------------


def ref_objects(labels):
    return [int(v) for v in np.unique(labels) if v != 0]


def ref_iou(gt, pred):
    gs, ps = ref_objects(gt), ref_objects(pred)
    iou = np.zeros((len(gs), len(ps)))
    for i, g in enumerate(gs):
        for j, p in enumerate(ps):
            a, b = gt == g, pred == p
            iou[i, j] = (a & b).sum() / (a | b).sum()
    return gs, ps, iou


def ref_match(iou, thresh):
    """All injective assignments: most pairs with IoU >= thresh, then largest IoU sum."""
    n, m = iou.shape
    best = (0, 0.0, [])
    if n == 0 or m == 0:
        return best
    if n <= m:
        for perm in itertools.permutations(range(m), n):
            pairs = [(i, j) for i, j in zip(range(n), perm) if iou[i, j] >= thresh]
            key = (len(pairs), sum(iou[i, j] for i, j in pairs))
            if key[0] > best[0] or (key[0] == best[0] and key[1] > best[1] + 1e-12):
                best = (key[0], key[1], pairs)
    else:
        k, s, pairs = ref_match(iou.T, thresh)
        best = (k, s, [(i, j) for j, i in pairs])
    return best


def ref_errors(iou, inter, ga, pa, pairs):
    """Split/merge/catastrophe: flood fill over linked objects, keep groups with an unmatched one."""
    n, m = iou.shape
    mg = {i for i, _ in pairs}
    mp = {j for _, j in pairs}
    adj = {("g", i): set() for i in range(n)}
    adj.update({("p", j): set() for j in range(m)})
    for i in range(n):
        for j in range(m):
            if inter[i, j] and (iou[i, j] >= 0.1 or inter[i, j] > min(ga[i], pa[j]) / 2):
                adj[("g", i)].add(("p", j))
                adj[("p", j)].add(("g", i))
    seen, out = set(), {"split": 0, "merge": 0, "catastrophe": 0}
    for node in adj:
        if node in seen:
            continue
        stack, comp = [node], []
        seen.add(node)
        while stack:
            v = stack.pop()
            comp.append(v)
            for w in adj[v]:
                if w not in seen:
                    seen.add(w)
                    stack.append(w)
        if all((v[1] in mg) if v[0] == "g" else (v[1] in mp) for v in comp):
            continue  # every object matched: not an error group
        G = sum(1 for v in comp if v[0] == "g")
        P = len(comp) - G
        if G == 1 and P >= 2:
            out["split"] += 1
        elif G >= 2 and P == 1:
            out["merge"] += 1
        elif G >= 2 and P >= 2:
            out["catastrophe"] += 1
    return out


def ref_touching(gt):
    pairs = set()
    h, w = gt.shape
    for y in range(h):
        for x in range(w):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        a, b = int(gt[y, x]), int(gt[yy, xx])
                        if a and b and a != b:
                            pairs.add((min(a, b), max(a, b)))
    return pairs


def ref_hausdorff(a, b):
    """Brute-force symmetric Hausdorff distance between the boundaries of two masks."""
    def boundary(mask):
        pts = []
        h, w = mask.shape
        for y, x in zip(*np.nonzero(mask)):
            if any(not (0 <= y + dy < h and 0 <= x + dx < w and mask[y + dy, x + dx])
                   for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))):
                pts.append((y, x))
        return np.array(pts, float)
    pa, pb = boundary(a), boundary(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(d.min(1).max(), d.min(0).max())


@st.composite
def label_pair(draw):
    h, w = draw(st.integers(4, 14)), draw(st.integers(4, 14))

    def labels(n_max):
        out = np.zeros((h, w), np.int32)
        for _ in range(draw(st.integers(0, n_max))):
            y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
            out[y0:y1, x0:x1] = draw(st.integers(1, 9))
        return out

    return labels(5), labels(5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_pair(), st.sampled_from([0.1, 0.3, 0.5, 0.7]))
def test_matches_reference(pair, thresh):
    gt, pred = pair
    gs, ps, iou = ref_iou(gt, pred)
    k, s, pairs = ref_match(iou, thresh)
    m = M.match(gt, pred, thresh=thresh)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (len(gs), len(ps), k, len(ps) - k, len(gs) - k)
    assert m.sum_matched_iou == pytest.approx(s)
    assert m.f1 == pytest.approx(2 * k / (len(gs) + len(ps)) if gs or ps else 1.0)
    assert m.ap == pytest.approx(k / (len(gs) + len(ps) - k) if gs or ps else 1.0)
    for g, p, v in zip(m.matched_gt, m.matched_pred, m.matched_iou):
        assert iou[gs.index(int(g)), ps.index(int(p))] == pytest.approx(v) and v >= thresh

    # error analysis at the same threshold
    inter = np.array([[((gt == g) & (pred == p)).sum() for p in ps] for g in gs]).reshape(len(gs), len(ps))
    ga, pa = [(gt == g).sum() for g in gs], [(pred == p).sum() for p in ps]
    e = M.error_scores(gt, pred, thresh=thresh)
    # the errors are computed on *a* maximum matching; ties could pick another one, so use ours
    ours = [(gs.index(int(g)), ps.index(int(p))) for g, p in zip(m.matched_gt, m.matched_pred)]
    assert {k_: getattr(e, k_) for k_ in ("split", "merge", "catastrophe")} == ref_errors(iou, inter, ga, pa, ours)
    touching = ref_touching(gt)
    matched = {int(g) for g in m.matched_gt}
    assert e.touching_pairs == len(touching)
    assert e.touching_separated_pairs == sum(1 for a, b in touching if a in matched and b in matched)
    best_g = iou.max(1) if ps else np.zeros(len(gs))
    best_p = iou.max(0) if gs else np.zeros(len(ps))
    assert e.nuset_fn == int((best_g < 0.7).sum()) and e.nuset_fp == int((best_p < 0.7).sum())
    if gs:
        assert e.mean_best_iou == pytest.approx(best_g.mean())
    if matched:
        hd = [ref_hausdorff(gt == g, pred == p) for g, p in zip(m.matched_gt, m.matched_pred)]
        assert e.hausdorff_mean == pytest.approx(np.mean(hd))

    px = M.pixel_scores(gt, pred)
    g, p = gt > 0, pred > 0
    assert (px.tp, px.fp, px.fn, px.tn) == ((g & p).sum(), (~g & p).sum(), (g & ~p).sum(), (~g & ~p).sum())
    assert px.rmse == pytest.approx(np.sqrt(np.mean((g.astype(float) - p) ** 2)))
    assert px.accuracy == pytest.approx(np.mean(g == p))


# A fixed pair whose matching numbers were derived once by the brute-force reference above
# (ref_iou + ref_match over all injective assignments) and stored as literals, the way one would
# store numbers from stardist.matching.matching (not installable here). IoUs by hand:
#   gt 1 = rows 0-9 cols 0-9 (100 px), pred 1 = rows 0-9 cols 2-11: IoU 80/120
#   gt 2 = rows 0-9 cols 20-29, pred 2 = rows 1-9 cols 20-29: IoU 90/100
#   gt 3 = rows 15-24 cols 0-9, pred 3 = rows 15-24 cols 0-4 and pred 4 = cols 5-9: IoU 50/100 each
#   gt 4 = rows 15-19 cols 20-24 (25 px) unmatched; pred 5 = rows 30-34 cols 30-39 extra
def _fixed_pair():
    gt, pred = np.zeros((40, 40), np.int32), np.zeros((40, 40), np.int32)
    gt[0:10, 0:10], gt[0:10, 20:30], gt[15:25, 0:10], gt[15:20, 20:25] = 1, 2, 3, 4
    pred[0:10, 2:12], pred[1:10, 20:30], pred[15:25, 0:5], pred[15:25, 5:10], pred[30:35, 30:40] = 1, 2, 3, 4, 5
    return gt, pred


FIXED_LITERALS = {  # thresh: (tp, fp, fn, precision, recall, f1, ap, mean_matched_iou)
    0.5: (3, 2, 1, 3 / 5, 3 / 4, 6 / 9, 3 / 6, (80 / 120 + 0.9 + 0.5) / 3),
    0.7: (1, 4, 3, 1 / 5, 1 / 4, 2 / 9, 1 / 8, 0.9),
    0.6: (2, 3, 2, 2 / 5, 2 / 4, 4 / 9, 2 / 7, (80 / 120 + 0.9) / 2),
}


@pytest.mark.parametrize("thresh", sorted(FIXED_LITERALS))
def test_fixed_pair_literals(thresh):
    gt, pred = _fixed_pair()
    m = M.match(gt, pred, thresh=thresh)
    got = (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1, m.ap, m.mean_matched_iou)
    assert got == pytest.approx(FIXED_LITERALS[thresh])
    # and the reference agrees
    _, _, iou = ref_iou(gt, pred)
    assert ref_match(iou, thresh)[0] == FIXED_LITERALS[thresh][0]


def test_speed_2048_with_2000_nuclei():
    """Not a benchmark, a guard against accidental O(N*M) code: must stay far below ~seconds."""
    import time

    from skimage.draw import disk

    rng = np.random.default_rng(0)
    gt = np.zeros((2048, 2048), np.int32)
    k = 0
    for y in range(22, 2026, 45):
        for x in range(22, 2026, 45):
            k += 1
            gt[disk((y + rng.integers(-3, 4), x + rng.integers(-3, 4)), rng.integers(14, 22), shape=gt.shape)] = k
    pred = np.roll(gt, 2, axis=1)
    t = time.perf_counter()
    s = M.evaluate_image(gt, pred, hausdorff=False)
    elapsed = time.perf_counter() - t
    assert s.at(0.5).tp == k
    assert elapsed < 3.0  # ~0.15 s measured; generous for a loaded CI runner


def test_real_labels_against_independent_counts(shared_data):
    """DSB 2018 sample (125 nuclei): touching pairs equal skimage's region adjacency graph; TP at IoU > 0.5
    (where matching is unique) equals the count of nuclei whose best IoU, found object by object, passes."""
    import skimage.graph
    from nucleoscope.io import read_labels

    gt = read_labels(shared_data / "stardist_pkg_dsb2018_sample" / "train" / "masks" / "img2d.tif")
    rag = skimage.graph.RAG(gt, connectivity=2)
    pairs = {tuple(sorted(e)) for e in rag.edges if 0 not in e}
    e = M.error_scores(gt, gt)
    assert e.touching_pairs == len(pairs) > 0 and e.touching_separated == 1.0

    pred = np.roll(gt, (2, -1), axis=(0, 1))
    pred[gt == 5] = 0           # drop part of one nucleus
    best = []
    for g in range(1, int(gt.max()) + 1):
        inside = gt == g
        values, counts = np.unique(pred[inside], return_counts=True)
        ious = [c / (inside.sum() + (pred == v).sum() - c) for v, c in zip(values, counts) if v]
        best.append(max(ious, default=0.0))
    best = np.array(best)
    s = M.evaluate_image(gt, pred, thresholds=(0.55, 0.7, 0.9), hausdorff=False)
    for t in (0.55, 0.7, 0.9):
        assert s.at(t).tp == int((best >= t).sum())
    assert s.errors.mean_best_iou == pytest.approx(best.mean())
