"""The self-supervised patch network of the whole-cell paper: loss, patches, integration, the bundled
weights against synthetic truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nucleoscope.segment.cells import selfsup as S  # noqa: E402


def test_loss_equals_the_papers_sum_on_two_overlapping_patches():
    # canvas 2 x 3; patch A (k = 2) covers columns 0-1, patch B columns 1-2; they share column 1
    y = torch.tensor(np.array([np.full((2, 2), 0.5), np.full((2, 2), 0.2)]), dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    loss, terms = S.selfsup_loss(y, np.array([[0, 0], [0, 1]]), mask, normalize=False)
    area = 4 * 0.5 + 4 * 0.2
    # two shared pixels, each: y_A * -log10(1 - y_B) + y_B * -log10(1 - y_A)
    consistency = 2 * (0.5 * -math.log10(1 - 0.2) + 0.2 * -math.log10(1 - 0.5))
    outside = 0.2  # canvas pixel (0, 2): outside the mask, covered by B only
    expected = -area + (1 / math.log10(2)) * consistency + 15 * outside
    assert terms["area"] == pytest.approx(area)
    assert terms["consistency"] == pytest.approx(consistency)
    assert terms["outside"] == pytest.approx(outside)
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    normed, _ = S.selfsup_loss(y, np.array([[0, 0], [0, 1]]), mask)
    assert float(normed) == pytest.approx(expected / 8, rel=1e-9)


def test_lambda_balances_area_against_a_coin_toss_neighbour():
    """With lambda = 1 / log10 2 a pixel that another patch holds at 0.5 neither gains nor loses."""
    mask = torch.ones((2, 3), dtype=torch.float64)
    y = torch.tensor(np.array([np.full((2, 2), 0.3), np.full((2, 2), 0.5)]), dtype=torch.float64, requires_grad=True)
    loss, _ = S.selfsup_loss(y, np.array([[0, 0], [0, 1]]), mask, normalize=False)
    loss.backward()
    g = y.grad[0].numpy()
    # A's column 1 is shared with B (0.5): d/dy_A = -1 + lambda * -log10(0.5) + lambda * y_B / ((1 - y_A) ln 10)
    shared = -1 + 1 + (1 / math.log10(2)) * 0.5 / ((1 - 0.3) * math.log(10))
    assert g[:, 1] == pytest.approx([shared, shared])
    assert g[:, 0] == pytest.approx([-1.0, -1.0])  # A alone: only the area term


def test_disk_and_flips_are_undone():
    d = S.disk_channel(8, 2.0)
    assert d[4, 4] == 1.0 and d[4, 6] == pytest.approx(math.exp(-4 / 8))
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 4, 4)
    for code in range(8):
        assert torch.equal(S._transform(S._transform(x, code), code, inverse=True), x)
    assert len({tuple(S._transform(x, c).flatten().tolist()) for c in range(8)}) == 8


def test_working_scale_brings_the_median_nucleus_to_the_target():
    lab = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    for i, (cy, cx) in enumerate([(40, 40), (40, 140), (140, 90)], start=1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2] = i
    lab[5, 5] = 4  # a micronucleus does not count
    d = 2 * math.sqrt((lab == 1).sum() / math.pi)
    assert S.working_scale(lab, 10.0) == pytest.approx(10.0 / d)
    assert S.working_scale(np.zeros((5, 5), np.int32)) == 1.0


def _field(full_shape, scale, tops_full, ids, k=8):
    pad = k
    tops = np.asarray(tops_full, np.int64) + pad
    return S.PatchField(image=np.zeros(1), mask=np.zeros(1), tops=tops, ids=np.asarray(ids, np.int32),
                        scale=(scale, scale), pad=pad, full_shape=full_shape)


def test_integration_takes_the_most_probable_patch_and_a_floor():
    f = _field((8, 12), 1.0, [(0, 0), (0, 4)], [7, 9])
    a = np.full((8, 8), 0.9, np.float32)
    b = np.full((8, 8), 0.6, np.float32)  # B covers full-res columns 4-11: 0.6 on 4-7 (shared with A),
    b[:, 4:6] = 0.95  # 0.95 on 8-9,
    b[:, 6:] = 0.4  # 0.4 on 10-11
    lab, best = S.integrate_patches(np.stack([a, b]), f, floor=0.5)
    assert (lab[:, :4] == 7).all()
    assert (lab[:, 4:8] == 7).all() and best[0, 5] == pytest.approx(0.9)  # A (0.9) beats B (0.6) there
    assert (lab[:, 8:10] == 9).all()  # B at 0.95, outside A
    assert (lab[:, 10:] == 0).all()  # B at 0.4 < floor


def test_integration_samples_patches_back_to_full_resolution():
    # working scale 0.5: an 8 px patch at working (0, 0) covers 16 full-res px; left half certain, right not
    f = _field((16, 16), 0.5, [(0, 0)], [3])
    p = np.zeros((1, 8, 8), np.float32)
    p[0, :, :4] = 1.0
    lab, _ = S.integrate_patches(p, f)
    # full-res column X maps to working (X + 0.5) / 2 - 0.5: bilinear 0.5 falls between X = 7 and 8
    assert (lab[:, :8] == 3).all() and (lab[:, 8:] == 0).all()


def test_patch_field_places_each_marker_at_its_patch_centre():
    nuc = np.zeros((100, 100), np.int32)
    nuc[40:50, 60:70] = 5
    unit = np.zeros((100, 100), np.float32)
    f = S.patch_field(unit, unit > 0, nuc, S.SelfSupConfig(patch=16), scale=1.0)
    assert f.ids.tolist() == [5]
    # centroid (44.5, 64.5) rounds to (44, 64) (banker's) or (45, 65); the patch centre k // 2 sits on it
    cy, cx = f.tops[0] - f.pad + 8
    assert abs(cy - 44.5) <= 0.5 and abs(cx - 64.5) <= 0.5
