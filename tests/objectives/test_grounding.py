"""Box coding, targets and the three losses of the fine-grained stage against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.objectives.grounding import (
    GroundingTargets,
    alignment_focal_loss,
    box_giou_loss,
    build_targets,
    centerness_loss,
    centerness_targets,
    decode_boxes,
    encode_boxes,
    grounding_loss,
)


def test_box_coding_by_hand_and_against_torchvision():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    box = torch.tensor([[5.0, 5.0, 15.0, 25.0]])  # centre (10, 15), 10 x 20
    deltas = encode_boxes(box, anchor)
    expected = torch.tensor([[10 * 5 / 10, 10 * 10 / 10, 5 * math.log(1.0), 5 * math.log(2.0)]])
    assert torch.allclose(deltas, expected)
    assert torch.allclose(decode_boxes(deltas, anchor), box, atol=1e-5)

    from torchvision.models.detection._utils import BoxCoder

    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    gen = torch.Generator().manual_seed(0)
    anchors = torch.rand(20, 2, generator=gen) * 50
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(20, 2, generator=gen) * 40], 1)
    d = torch.randn(20, 4, generator=gen)
    assert torch.allclose(decode_boxes(d, anchors), coder.decode_single(d, anchors), atol=1e-4)
    boxes = decode_boxes(d, anchors)
    assert torch.allclose(encode_boxes(boxes, anchors), coder.encode_single(boxes, anchors),
                          atol=1e-4)


def test_decode_clamps_extreme_scales():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    box = decode_boxes(torch.tensor([[0.0, 0.0, 500.0, 500.0]]), anchor)
    assert torch.allclose(box[0, 2] - box[0, 0], torch.tensor(1000.0))


def test_centerness_by_hand():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])  # centre (5, 5)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0],   # l=r=5, t=5, b=15
                          [1.0, 4.0, 9.0, 6.0]])    # l=r=4, t=b=1
    assert torch.allclose(centerness_targets(anchors, boxes),
                          torch.tensor([math.sqrt(1 / 3), 1.0]))


def _focal(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    pt = p if t else 1 - p
    at = alpha if t else 1 - alpha
    return -at * (1 - pt) ** gamma * math.log(pt)


def test_focal_loss_leaves_padding_out():
    logits = torch.tensor([[[2.0, -1.0, 30.0], [0.5, -3.0, -30.0]]])  # (B=1, A=2, L=3)
    targets = torch.tensor([[[True, False, False], [False, True, True]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    got = alignment_focal_loss(logits, targets, mask, torch.tensor(2.0))
    want = (_focal(2.0, 1) + _focal(-1.0, 0) + _focal(0.5, 0) + _focal(-3.0, 1)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_giou_loss_weighted_by_hand():
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0],    # identical: loss 0
                           [2.0, 0.0, 3.0, 1.0]])   # IoU 0, hull 3, union 2: loss 1 + 1/3
    weight = torch.tensor([1.0, 3.0])
    assert box_giou_loss(pred, target, weight).item() == pytest.approx((4 / 3 * 3) / 4)
    assert box_giou_loss(pred, target, weight, torch.tensor(2.0)).item() == pytest.approx(2.0)


def test_centerness_bce_by_hand():
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([0.5, 1.0])
    want = (math.log(2) + math.log(1 + math.exp(-2.0))) / 4
    assert centerness_loss(logits, targets, torch.tensor(4.0)).item() == pytest.approx(want)


def test_build_targets():
    assigned = [torch.tensor([-1, 1, 0, 1]), torch.tensor([-1, -1, -1, -1])]
    boxes = [torch.tensor([[0.0, 0, 4, 4], [2.0, 2, 8, 8]]), torch.zeros(0, 4)]
    tokens = [torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool),
              torch.zeros(0, 3, dtype=torch.bool)]
    t = build_targets(assigned, boxes, tokens)
    assert t.positive.tolist() == [[False, True, True, True], [False] * 4]
    assert t.tokens[0].tolist() == [[0, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 1]]
    assert not t.tokens[1].any()
    assert t.boxes[0, 1].tolist() == [2, 2, 8, 8] and t.boxes[0, 0].tolist() == [0, 0, 0, 0]


def _batch(positive: bool):
    torch.manual_seed(0)
    anchors = torch.tensor([[0.0, 0, 16, 16], [8.0, 0, 24, 16], [0.0, 4, 16, 20]])
    logits = torch.randn(1, 3, 4, requires_grad=True)
    deltas = (0.1 * torch.randn(1, 3, 4)).requires_grad_()
    center = torch.randn(1, 3, requires_grad=True)
    assigned = torch.tensor([0, -1, 0]) if positive else torch.tensor([-1, -1, -1])
    targets = build_targets([assigned], [torch.tensor([[2.0, 2, 14, 14]])],
                            [torch.tensor([[0, 1, 1, 0]], dtype=torch.bool)])
    mask = torch.tensor([[1, 1, 1, 0]])
    return logits, deltas, center, anchors, targets, mask


def test_grounding_loss_combines_the_terms():
    logits, deltas, center, anchors, targets, mask = _batch(positive=True)
    out = grounding_loss(logits, deltas, center, anchors, targets, mask)
    two = torch.tensor(2.0)
    assert out.num_positive == 2
    assert torch.allclose(out.parts["alignment"],
                          alignment_focal_loss(logits, targets.tokens, mask, two))
    pos = targets.positive[0]
    ct = centerness_targets(anchors[pos], targets.boxes[0, pos])
    assert torch.allclose(out.parts["box"],
                          box_giou_loss(decode_boxes(deltas[0, pos], anchors[pos]),
                                        targets.boxes[0, pos], ct))
    assert torch.allclose(out.parts["centerness"], centerness_loss(center[0, pos], ct, two))
    want = out.parts["alignment"] + 2 * out.parts["box"] + out.parts["centerness"]
    assert torch.allclose(out.total, want)
    halved = grounding_loss(logits, deltas, center, anchors, targets, mask,
                            weights={"box": 0.0}, reduce_count=lambda t: t * 2)
    assert torch.allclose(halved.parts["alignment"], out.parts["alignment"] / 2)
    assert torch.allclose(halved.total, halved.parts["alignment"] + halved.parts["centerness"])


def test_grounding_loss_without_positives_keeps_gradients():
    logits, deltas, center, anchors, targets, mask = _batch(positive=False)
    out = grounding_loss(logits, deltas, center, anchors, targets, mask)
    assert out.num_positive == 0
    assert out.parts["box"].item() == 0 and out.parts["centerness"].item() == 0
    out.total.backward()
    assert logits.grad.abs().sum() > 0 and deltas.grad is not None and center.grad is not None
    assert logits.grad[..., 3].abs().sum() == 0  # padding gets no gradient
    assert isinstance(targets, GroundingTargets)
