"""Anchors and ATSS assignment: hand-made cases and a brute-force reference in plain Python."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from vlparse.models.detection.atss import atss_assign, level_anchors


def test_level_anchors_by_hand():
    (a,) = level_anchors([(2, 3)], [8], [16])
    assert a.shape == (6, 4)
    assert a[0].tolist() == [-4, -4, 12, 12]   # centre (4, 4)
    assert a[1].tolist() == [4, -4, 20, 12]    # next column: centre (12, 4)
    assert a[3].tolist() == [-4, 4, 12, 20]    # next row: centre (4, 12)
    with pytest.raises(ValueError, match="must agree"):
        level_anchors([(2, 2)], [8, 16], [16])


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _centre(b):
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def brute_force_atss(levels: list[list[list[float]]], gts: list[list[float]], top_k: int
                     ) -> list[int]:
    """ATSS written out with loops, sorts and the statistics module."""
    flat = [a for level in levels for a in level]
    positives: list[set[int]] = []
    for g in gts:
        gx, gy = _centre(g)
        candidates, start = [], 0
        for level in levels:
            order = sorted(range(len(level)),
                           key=lambda i, lv=level: math.dist(_centre(lv[i]), (gx, gy)))
            candidates += [start + i for i in order[:top_k]]
            start += len(level)
        ious = [_iou(flat[c], g) for c in candidates]
        spread = statistics.stdev(ious) if len(ious) > 1 else 0.0
        threshold = statistics.mean(ious) + spread
        chosen = set()
        for c, iou in zip(candidates, ious, strict=True):
            cx, cy = _centre(flat[c])
            inside = min(cx - g[0], cy - g[1], g[2] - cx, g[3] - cy) > 0.01
            if iou >= threshold and inside:
                chosen.add(c)
        positives.append(chosen)
    out = []
    for a in range(len(flat)):
        owners = [(_iou(flat[a], gts[j]), -j) for j in range(len(gts)) if a in positives[j]]
        out.append(-max(owners)[1] if owners else -1)
    return out


def test_single_box_by_hand():
    # a 3x3 grid of 20-px anchors at stride 10; the box [10, 10, 20, 20] sits on the centre one
    anchors = level_anchors([(3, 3)], [10], [20])
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    expected = [-1] * 9
    expected[4] = 0
    assert atss_assign(anchors, box, top_k=1).tolist() == expected
    # five candidates: IoU 0.25 (centre) and 1/9 (x4); mean + std = 0.201, so only the centre
    assert atss_assign(anchors, box, top_k=5).tolist() == expected


def test_shared_anchor_goes_to_the_higher_iou():
    anchors = level_anchors([(3, 3)], [10], [20])
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0],   # IoU 0.25 with the centre anchor
                          [6.0, 6.0, 24.0, 24.0]])    # IoU 0.81
    assigned = atss_assign(anchors, boxes, top_k=1)
    assert assigned[4] == 1 and (assigned[torch.arange(9) != 4] == -1).all()


def test_no_boxes_and_small_levels():
    anchors = level_anchors([(4, 4), (1, 1)], [8, 32], [32, 128])
    assert (atss_assign(anchors, torch.zeros(0, 4)) == -1).all()
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0]])
    got = atss_assign(anchors, boxes, top_k=9)  # the 1x1 level offers a single candidate
    levels = [a.tolist() for a in anchors]
    assert got.tolist() == brute_force_atss(levels, boxes.tolist(), 9)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_scenes(seed):
    gen = torch.Generator().manual_seed(seed)
    size = 96
    sizes = [(12, 12), (6, 6), (3, 3)]
    anchors = level_anchors(sizes, [8, 16, 32], [32.0, 64.0, 128.0])
    num = int(torch.randint(1, 7, (1,), generator=gen))
    xy = torch.rand(num, 2, generator=gen) * (size - 10)
    wh = 4 + torch.rand(num, 2, generator=gen) * 60
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
    top_k = (3, 9)[seed % 2]
    got = atss_assign(anchors, boxes, top_k=top_k)
    want = brute_force_atss([a.tolist() for a in anchors], boxes.tolist(), top_k)
    assert got.tolist() == want
    assert (got >= 0).any()  # every scene has positives, so the comparison is not vacuous


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_when_boxes_compete(seed):
    # nested boxes around one point: many anchors are positive for several boxes at once
    gen = torch.Generator().manual_seed(100 + seed)
    anchors = level_anchors([(12, 12), (6, 6)], [8, 16], [24.0, 48.0])
    centre = 40 + torch.rand(1, 2, generator=gen) * 16
    half = 6 + torch.rand(5, 2, generator=gen) * 30
    boxes = torch.cat([centre - half, centre + half], dim=1)
    levels, gts = [a.tolist() for a in anchors], boxes.tolist()
    want = brute_force_atss(levels, gts, 9)
    alone = [brute_force_atss(levels, [g], 9) for g in gts]  # each box's positives on its own
    shared = sum(sum(s[a] >= 0 for s in alone) > 1 for a in range(len(want)))
    assert shared > 0
    assert atss_assign(anchors, boxes, top_k=9).tolist() == want
