"""The detection head: shapes, the initial probability, gradients and padding tokens."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.models.detection.atss import atss_assign
from vlparse.models.detection.head import DetectionHead
from vlparse.objectives.grounding import build_targets, grounding_loss


def _head(text_dim: int = 12) -> DetectionHead:
    return DetectionHead([8, 16, 32], text_dim, channels=16, num_convs=2, norm_groups=4)


def _inputs(text_dim: int = 12, batch: int = 2):
    features = [torch.randn(batch, 8, 16, 16), torch.randn(batch, 16, 8, 8),
                torch.randn(batch, 32, 4, 4)]
    tokens = torch.randn(batch, 5, text_dim)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch]
    return features, tokens, mask


def test_shapes_and_anchors():
    head = _head()
    out = head(*_inputs())
    assert out.level_sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    a = 256 + 64 + 16 + 4 + 1
    assert out.box_regression.shape == (2, a, 4) and out.centerness.shape == (2, a)
    assert out.alignment_logits.shape == (2, a, 5) and out.anchors.shape == (a, 4)
    assert head.strides == [8, 16, 32, 64, 128]
    assert head.anchor_sizes == [64, 128, 256, 512, 1024]
    # first anchor of P3 (centre (4, 4), side 64) and the only anchor of P7 (centre (64, 64))
    assert out.anchors[0].tolist() == [-28, -28, 36, 36]
    assert out.anchors[-1].tolist() == [64 - 512, 64 - 512, 64 + 512, 64 + 512]


def test_initial_probability_is_the_prior():
    head = DetectionHead([8, 16, 32], 768, channels=16, num_convs=2, norm_groups=4)
    assert torch.sigmoid(head.bias0).item() == pytest.approx(0.01)
    assert head.bias0.item() == pytest.approx(-math.log(99))
    features, _, mask = _inputs()
    tokens = torch.randn(2, 5, 768)
    with torch.no_grad():
        prob = head(features, tokens, mask).alignment_logits.sigmoid()[mask.bool()[:, None, :]
                                                                         .expand(-1, 341, -1)]
    assert prob.mean().item() == pytest.approx(0.01, abs=0.002)
    # with the text projection silenced, every logit is exactly b0 (s = 0 and the bias vector 0)
    with torch.no_grad():
        head.text_proj.weight.zero_()
        head.text_proj.bias.zero_()
        logits = head(features, tokens, mask).alignment_logits
    assert torch.allclose(logits[0, :, :3], torch.full((341, 3), -math.log(99)))


def test_padding_tokens_are_excluded():
    head = _head()
    features, tokens, mask = _inputs()
    out = head(features, tokens, mask)
    lowest = torch.finfo(out.alignment_logits.dtype).min
    assert (out.alignment_logits[0, :, 3:] == lowest).all()
    assert (out.alignment_logits[1] > lowest).all()
    changed = tokens.clone()
    changed[0, 3:] = 100 * torch.randn(2, 12)
    again = head(features, changed, mask)
    assert torch.equal(out.alignment_logits, again.alignment_logits)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    head = _head()
    features, tokens, mask = _inputs()
    out = head(features, tokens, mask)
    gt_boxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0]]),
                torch.tensor([[40.0, 30.0, 120.0, 100.0], [0.0, 0.0, 30.0, 30.0]])]
    gt_tokens = [torch.tensor([[0, 1, 1, 0, 0]], dtype=torch.bool),
                 torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)]
    levels = torch.split(out.anchors, [h * w for h, w in out.level_sizes])
    assigned = [atss_assign(levels, b) for b in gt_boxes]
    targets = build_targets(assigned, gt_boxes, gt_tokens)
    loss = grounding_loss(out.alignment_logits, out.box_regression, out.centerness,
                          out.anchors, targets, mask)
    assert loss.num_positive > 0 and torch.isfinite(loss.total)
    loss.total.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_bad_configurations():
    with pytest.raises(ValueError, match="strides"):
        DetectionHead([8, 16], 12, in_strides=(8, 16, 32))
    with pytest.raises(ValueError, match="anchor sizes"):
        DetectionHead([8], 12, in_strides=(8,), anchor_sizes=(64, 128))
    head = _head()
    with pytest.raises(ValueError, match="feature levels"):
        head(_inputs()[0][:2], torch.randn(2, 5, 12), torch.ones(2, 5))


def test_mixed_precision_forward_and_loss():
    head = _head()
    features, tokens, mask = _inputs()
    gt_boxes = [torch.tensor([[10.0, 12.0, 70.0, 90.0]]),
                torch.tensor([[40.0, 30.0, 120.0, 100.0]])]
    gt_tokens = [torch.tensor([[0, 1, 1, 0, 0]], dtype=torch.bool),
                 torch.tensor([[1, 0, 0, 0, 1]], dtype=torch.bool)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(features, tokens, mask)
        levels = torch.split(out.anchors, [h * w for h, w in out.level_sizes])
        targets = build_targets([atss_assign(levels, b) for b in gt_boxes], gt_boxes, gt_tokens)
        loss = grounding_loss(out.alignment_logits, out.box_regression, out.centerness,
                              out.anchors, targets, mask)
    assert out.alignment_logits.dtype == torch.bfloat16 and out.anchors.dtype == torch.float32
    assert loss.total.dtype == torch.float32 and torch.isfinite(loss.total)
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
