"""Phrase scores, per-phrase NMS and top-k against loops written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.models.detection.postprocess import phrase_rankings, phrase_scores, select_detections


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_phrase_scores_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, -2.0, 3.0]])  # (A=2, L=3)
    centerness = torch.tensor([0.5, -0.5])
    phrases = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    got = phrase_scores(logits, centerness, phrases)
    assert got.shape == (2, 3)
    for a in range(2):
        c = _sig(centerness[a].item())
        mean0 = (_sig(logits[a, 0].item()) + _sig(logits[a, 1].item())) / 2
        assert got[a, 0].item() == pytest.approx(math.sqrt(mean0 * c), rel=1e-6)
        assert got[a, 1].item() == pytest.approx(math.sqrt(_sig(logits[a, 2].item()) * c))
        assert got[a, 2].item() == 0.0  # a phrase without tokens


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_force(boxes, scores, thr, pre_n, nms, top_k):
    cands = [(scores[a][p], a, p) for a in range(len(boxes)) for p in range(len(scores[0]))
             if scores[a][p] > thr]
    cands = sorted(cands, reverse=True)[:pre_n]
    kept = []
    for s, a, p in cands:  # greedy NMS within each phrase
        if all(q != p or _iou(boxes[a], boxes[b]) <= nms for _, b, q in kept):
            kept.append((s, a, p))
    return kept[:top_k]


@pytest.mark.parametrize("seed", range(4))
def test_select_detections_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    num = 40
    xy = torch.rand(num, 2, generator=gen) * 60
    boxes = torch.cat([xy, xy + 10 + torch.rand(num, 2, generator=gen) * 30], dim=1)
    scores = torch.rand(num, 3, generator=gen)
    dets = select_detections(boxes, scores, score_threshold=0.3, pre_nms_top_n=50,
                             nms_threshold=0.6, top_k=20)
    want = brute_force(boxes.tolist(), scores.tolist(), 0.3, 50, 0.6, 20)
    assert dets.phrases.tolist() == [p for _, _, p in want]
    assert torch.allclose(dets.scores, torch.tensor([s for s, _, _ in want]))
    assert torch.equal(dets.boxes, boxes[[a for _, a, _ in want]])
    assert len(want) > 3  # the case is not trivial


def test_clipping_and_rankings():
    boxes = torch.tensor([[-5.0, 0, 10, 10], [0.0, 0, 10, 10], [50.0, 50, 70, 90]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    dets = select_detections(boxes, scores, score_threshold=0.0, image_size=(80, 60))
    # clipped to x >= 0 the first box equals the second: NMS keeps the better of the two for
    # each phrase (phrase 0: the first, 0.9; phrase 1: the second, 0.7)
    assert dets.boxes[0].tolist() == [0, 0, 10, 10] and dets.scores[0].item() == pytest.approx(0.9)
    assert dets.boxes[:, 2].max() <= 60 and dets.boxes[:, 3].max() <= 80
    ranks = phrase_rankings(dets, 2, k=5)
    assert [r.shape[0] for r in ranks] == [2, 2]
    assert ranks[0][1].tolist() == [50, 50, 60, 80]  # score 0.2
    assert ranks[1][0].tolist() == [0, 0, 10, 10]  # score 0.7 beats 0.6
    assert ranks[1][1].tolist() == [50, 50, 60, 80]
    assert dets.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.2])
