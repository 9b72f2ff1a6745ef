"""Grounding recall, referring-expression accuracy and the baselines, against brute force."""

from __future__ import annotations

import pytest
import torch

from vlparse.eval.grounding import (
    largest_box_baseline,
    paired_iou,
    phrase_recall_at_k,
    random_box_baseline,
    refexp_accuracy,
)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _giou(a, b) -> float:
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return _iou(a, b) - (hull - union) / hull


def _random_boxes(gen, n):
    xy = torch.rand(n, 2, generator=gen) * 50
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=gen) * 40], dim=1)


def test_recall_by_hand():
    gt = [torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]]), torch.tensor([[0.0, 0, 10, 10]])]
    ranked = [torch.tensor([[100.0, 100, 110, 110], [50.0, 50, 60, 61]]),  # 2nd box, 2nd gt
              torch.zeros(0, 4)]                                           # nothing predicted
    assert phrase_recall_at_k(ranked, gt, ks=(1, 2)) == {1: 0.0, 2: 0.5}
    with pytest.raises(ValueError, match="no ground-truth box"):
        phrase_recall_at_k([torch.zeros(0, 4)], [torch.zeros(0, 4)])


@pytest.mark.parametrize("seed", range(3))
def test_recall_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    ranked, gt = [], []
    for _ in range(60):
        truth = _random_boxes(gen, int(torch.randint(1, 4, (1,), generator=gen)))
        preds = _random_boxes(gen, int(torch.randint(0, 12, (1,), generator=gen)))
        if preds.shape[0] and torch.rand(1, generator=gen) < 0.6:  # a near-copy at some rank
            at = int(torch.randint(0, preds.shape[0], (1,), generator=gen))
            preds[at] = truth[0] + torch.randn(4, generator=gen) * 3
        ranked.append(preds)
        gt.append(truth)
    got = phrase_recall_at_k(ranked, gt, ks=(1, 5, 10))
    for k in (1, 5, 10):
        hits = sum(any(_iou(p, g) >= 0.5 for p in r.tolist()[:k] for g in t.tolist())
                   for r, t in zip(ranked, gt, strict=True))
        assert got[k] == pytest.approx(hits / len(gt))
    assert 0 < got[1] < got[10]  # both hits and misses occur


def test_refexp_accuracy_iou_and_giou():
    pred = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 10],        # exact
                       [1.8, 1.8, 11.8, 11.8],   # IoU 0.506, GIoU 0.460
                       [5.0, 5, 15, 15]])        # IoU 0.143
    assert refexp_accuracy(pred, gt) == pytest.approx(2 / 3)
    assert refexp_accuracy(pred, gt, generalized=True) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        refexp_accuracy(pred, gt[:2])


def test_paired_iou_matches_brute_force():
    gen = torch.Generator().manual_seed(5)
    a, b = _random_boxes(gen, 50), _random_boxes(gen, 50)
    want = torch.tensor([_iou(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    assert torch.allclose(paired_iou(a, b), want, atol=1e-6)
    want_g = torch.tensor([_giou(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    assert torch.allclose(paired_iou(a, b, generalized=True), want_g, atol=1e-5)
    acc = refexp_accuracy(a, b)
    assert acc == pytest.approx(float((want >= 0.5).float().mean()))


def test_largest_box_baseline():
    cands = [torch.tensor([[0.0, 0, 5, 5], [0.0, 0, 10, 3], [1.0, 1, 8, 8]]),
             torch.tensor([[2.0, 2, 4, 4]])]
    assert largest_box_baseline(cands).tolist() == [[1, 1, 8, 8], [2, 2, 4, 4]]
    with pytest.raises(ValueError, match="no candidate"):
        largest_box_baseline([torch.zeros(0, 4)])


def test_random_box_baseline():
    gt = torch.tensor([[10.0, 10, 30, 50], [0.0, 0, 100, 10]])
    sizes = torch.tensor([[60, 40], [20, 80]])  # (H, W); the 2nd box is wider than its image
    a = random_box_baseline(gt, sizes, seed=3)
    assert torch.equal(a, random_box_baseline(gt, sizes, seed=3))
    assert not torch.equal(a, random_box_baseline(gt, sizes, seed=4))
    assert torch.allclose(a[:, 2:] - a[:, :2], gt[:, 2:] - gt[:, :2])
    assert (a[0, :2] >= 0).all() and a[0, 2] <= 40 and a[0, 3] <= 60
    assert a[1, 0] == 0  # no room to move sideways
    many = random_box_baseline(gt[:1].repeat(2000, 1), sizes[:1].repeat(2000, 1), seed=0)
    assert many[:, 0].min() < 1 and many[:, 0].max() > 19  # x1 spans [0, 20]
