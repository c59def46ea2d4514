"""Region proposals: anchors, training targets, box decoding and non-maximum suppression.

Boxes are ``(y0, x0, y1, x1)`` in pixels of the network's input grid. Anchors are laid out every
``stride`` px with sizes ``diameter * scale`` and aspect ratios ``h / w``; because images are rescaled so
that their median nucleus is ``diameter`` px across, the anchor base size is set per image from the
median nucleus size, as in NuSeT.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["make_anchors", "box_iou", "rpn_targets", "rpn_loss", "decode_boxes", "nms", "boxes_from_labels"]

_CLAMP = float(np.log(1000.0 / 16))


def make_anchors(h: int, w: int, *, stride: int, diameter: float, scales, ratios,
                 device=None) -> torch.Tensor:
    """Anchors for a (h, w) feature map, shape (h * w * A, 4), ordered (y, x, anchor)."""
    sizes = []
    for s in scales:
        for r in ratios:
            sizes.append((diameter * s * np.sqrt(r), diameter * s / np.sqrt(r)))
    hw = torch.tensor(sizes, dtype=torch.float32, device=device)  # (A, 2)
    cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
    cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    c = torch.stack([cy, cx], -1).reshape(-1, 1, 2)
    half = hw[None] / 2
    return torch.cat([c - half, c + half], -1).reshape(-1, 4)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (len(a), len(b)) of boxes (y0, x0, y1, x1)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-6)


def boxes_from_labels(labels: torch.Tensor, min_area: int = 4) -> torch.Tensor:
    """Bounding boxes (N, 4) (y0, x0, y1, x1; end exclusive) of the instances of ``labels`` (H, W) int."""
    lab = labels.reshape(-1).long()
    n = int(lab.max()) + 1 if lab.numel() else 1
    h, w = labels.shape
    yy = torch.arange(h, device=labels.device).repeat_interleave(w).float()
    xx = torch.arange(w, device=labels.device).repeat(h).float()
    big = float(max(h, w) + 1)
    out = torch.empty((n, 4), device=labels.device)
    out[:, 0] = torch.full((n,), big, device=labels.device).scatter_reduce(0, lab, yy, "amin")
    out[:, 1] = torch.full((n,), big, device=labels.device).scatter_reduce(0, lab, xx, "amin")
    out[:, 2] = torch.full((n,), -1.0, device=labels.device).scatter_reduce(0, lab, yy, "amax") + 1
    out[:, 3] = torch.full((n,), -1.0, device=labels.device).scatter_reduce(0, lab, xx, "amax") + 1
    area = torch.zeros(n, device=labels.device).scatter_add(0, lab, torch.ones_like(yy))
    keep = (area >= min_area) & (out[:, 2] > out[:, 0])
    keep[0] = False
    return out[keep]


def _encode(anchors: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ay, ax = anchors[:, 0] + ah / 2, anchors[:, 1] + aw / 2
    gh, gw = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gy, gx = gt[:, 0] + gh / 2, gt[:, 1] + gw / 2
    return torch.stack([(gy - ay) / ah, (gx - ax) / aw, torch.log(gh / ah), torch.log(gw / aw)], -1)


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Apply regression ``deltas`` (N, 4) (dy, dx, log dh, log dw) to ``anchors`` (N, 4)."""
    ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ay, ax = anchors[:, 0] + ah / 2, anchors[:, 1] + aw / 2
    cy = ay + deltas[:, 0] * ah
    cx = ax + deltas[:, 1] * aw
    h = ah * torch.exp(deltas[:, 2].clamp(max=_CLAMP))
    w = aw * torch.exp(deltas[:, 3].clamp(max=_CLAMP))
    return torch.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1)


def rpn_targets(anchors: torch.Tensor, gt: torch.Tensor, *, pos_iou: float = 0.5, neg_iou: float = 0.3):
    """Labels (N,) in {1 positive, 0 negative, -1 ignored} and regression targets (N, 4) for anchors."""
    n = anchors.shape[0]
    labels = torch.zeros(n, device=anchors.device)
    targets = torch.zeros((n, 4), device=anchors.device)
    if gt.shape[0] == 0:
        return labels, targets
    iou = box_iou(anchors, gt)
    best, idx = iou.max(1)
    labels[(best >= neg_iou) & (best < pos_iou)] = -1
    labels[best >= pos_iou] = 1
    # every nucleus gets its best anchor, so small or elongated ones are not left without one
    gbest, gidx = iou.max(0)
    ok = gbest > 0.1
    labels[gidx[ok]] = 1
    idx[gidx[ok]] = torch.arange(gt.shape[0], device=anchors.device)[ok]
    targets = _encode(anchors, gt[idx])
    return labels, targets


def rpn_loss(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
             targets: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced binary cross-entropy over anchors and smooth-L1 box loss over positives.

    ``cls_logits`` (N,), ``box_deltas`` (N, 4), ``labels`` (N,) from :func:`rpn_targets`, ``valid``
    (N,) bool anchors whose centre lies inside the image.
    """
    use = labels >= 0
    if valid is not None:
        use &= valid
    pos = (labels == 1) & use
    neg = (labels == 0) & use
    npos = pos.sum().clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(cls_logits, labels.clamp(min=0), reduction="none")
    # positives and negatives weighted equally in total (anchors are ~99% background)
    cls = (bce * pos).sum() / npos + (bce * neg).sum() / neg.sum().clamp(min=1)
    box = (F.smooth_l1_loss(box_deltas, targets, reduction="none", beta=1 / 9).sum(-1) * pos).sum() / npos
    return cls, box


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices in descending score.

    Written by hand (no torchvision here); only box pairs whose centres are closer than sqrt(2) x the
    largest box size (any closer pair may overlap) are compared (a KD-tree finds them), so the cost is linear in the number of boxes.
    """
    from scipy.spatial import cKDTree

    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    cen = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    pairs = cKDTree(cen).query_pairs(float(size.max()) * 1.4143, output_type="ndarray")
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        lt = np.maximum(b[i, :2], b[j, :2])
        rb = np.minimum(b[i, 2:], b[j, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        iou = inter / (area[i] + area[j] - inter + 1e-9)
        hit = iou > iou_thresh
        i, j = i[hit], j[hit]
        lo, hi = np.minimum(i, j), np.maximum(i, j)  # lo has the higher score
        srt = np.argsort(lo, kind="stable")
        lo, hi = lo[srt], hi[srt]
        starts = np.searchsorted(lo, np.arange(n + 1))
    else:
        lo = hi = np.zeros(0, dtype=np.int64)
        starts = np.zeros(n + 1, dtype=np.int64)
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for k in range(n):
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed[hi[starts[k]:starts[k + 1]]] = True
    return order[np.asarray(keep, dtype=np.int64)]
