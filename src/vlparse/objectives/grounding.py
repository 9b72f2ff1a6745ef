"""Losses of the fine-grained stage (boxes from phrases), as pure functions of tensors.

Box coding (as FIBER's ATSS head, after Faster R-CNN): the head regresses, per anchor, deltas
``(dx, dy, dw, dh)`` = ``(wx (cx - cx_a) / w_a, wy (cy - cy_a) / h_a, ww log(w / w_a),
wh log(h / h_a))`` with weights ``(10, 10, 5, 5)``; decoding clamps ``dw, dh`` at
``log(1000 / 16)``. Boxes are continuous xyxy (width = x2 - x1, no ``+ 1``).

Per image and anchor, ATSS (:func:`vlparse.models.detection.atss.atss_assign`) gives the matched
ground-truth box or none; :func:`build_targets` turns that into tensors. The terms:

- alignment: sigmoid focal loss (alpha 0.25, gamma 2) over every (anchor, real token) pair; a
  positive anchor's targets are the tokens of its box's phrase, a negative anchor's are all 0;
  padding tokens are left out; the sum is divided by the number of positive anchors;
- box: GIoU loss of the decoded boxes of positive anchors, weighted by their centerness targets
  and divided by the sum of those weights;
- centerness: binary cross-entropy of the centerness logits against
  ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` (distances from the anchor centre to
  the box sides), divided by the number of positive anchors.

FIBER weights the terms 1 / 2 / 1 (:data:`DEFAULT_WEIGHTS`). A ``reduce_count`` callable turns a
local normaliser into the mean over processes (identity on one process).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

__all__ = [
    "BOX_CODER_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "GroundingLoss",
    "GroundingTargets",
    "alignment_focal_loss",
    "box_giou_loss",
    "build_targets",
    "centerness_loss",
    "centerness_targets",
    "decode_boxes",
    "encode_boxes",
    "grounding_loss",
]

BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
DEFAULT_WEIGHTS = {"alignment": 1.0, "box": 2.0, "centerness": 1.0}
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def _cxcywh(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h


def encode_boxes(boxes: Tensor, anchors: Tensor,
                 weights: Sequence[float] = BOX_CODER_WEIGHTS) -> Tensor:
    """Deltas ``(..., 4)`` that turn ``anchors`` into ``boxes`` (both ``(..., 4)`` xyxy)."""
    cx, cy, w, h = _cxcywh(boxes)
    acx, acy, aw, ah = _cxcywh(anchors)
    wx, wy, ww, wh = weights
    return torch.stack([wx * (cx - acx) / aw, wy * (cy - acy) / ah,
                        ww * torch.log(w / aw), wh * torch.log(h / ah)], dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor,
                 weights: Sequence[float] = BOX_CODER_WEIGHTS) -> Tensor:
    """xyxy boxes ``(..., 4)`` from ``deltas`` relative to ``anchors`` (inverse of encoding)."""
    acx, acy, aw, ah = _cxcywh(anchors)
    wx, wy, ww, wh = weights
    cx = deltas[..., 0] / wx * aw + acx
    cy = deltas[..., 1] / wy * ah + acy
    w = torch.exp((deltas[..., 2] / ww).clamp(max=_MAX_LOG_SCALE)) * aw
    h = torch.exp((deltas[..., 3] / wh).clamp(max=_MAX_LOG_SCALE)) * ah
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def centerness_targets(anchors: Tensor, boxes: Tensor) -> Tensor:
    """``(P,)`` centerness of each anchor centre in its box (``(P, 4)`` xyxy each); the centre
    must lie inside the box (ATSS positives do)."""
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    lr = torch.stack([cx - boxes[:, 0], boxes[:, 2] - cx], dim=1)
    tb = torch.stack([cy - boxes[:, 1], boxes[:, 3] - cy], dim=1)
    ratio = (lr.min(dim=1).values / lr.max(dim=1).values) * (
        tb.min(dim=1).values / tb.max(dim=1).values)
    return ratio.clamp(min=0).sqrt()


@dataclass
class GroundingTargets:
    """Per-anchor targets of a batch.

    Attributes:
        positive: ``(B, A)`` bool, the anchor has a matched box.
        tokens: ``(B, A, L)`` bool, the tokens of the matched box's phrase (all false for
            negative anchors).
        boxes: ``(B, A, 4)`` xyxy matched boxes (zeros for negative anchors).
    """

    positive: Tensor
    tokens: Tensor
    boxes: Tensor


def build_targets(assignments: Sequence[Tensor], gt_boxes: Sequence[Tensor],
                  gt_tokens: Sequence[Tensor]) -> GroundingTargets:
    """Stack per-image ATSS results into batch targets.

    Args:
        assignments: per image ``(A,)`` long, the matched box index or -1.
        gt_boxes: per image ``(G_b, 4)`` xyxy boxes.
        gt_tokens: per image ``(G_b, L)`` bool positive map (which tokens each box grounds).
    """
    positive, tokens, boxes = [], [], []
    for assigned, gb, gt in zip(assignments, gt_boxes, gt_tokens, strict=True):
        pos = assigned >= 0
        idx = assigned.clamp(min=0)
        positive.append(pos)
        if gb.shape[0] == 0:
            tokens.append(torch.zeros(assigned.shape[0], gt.shape[1], dtype=torch.bool,
                                      device=assigned.device))
            boxes.append(torch.zeros(assigned.shape[0], 4, device=assigned.device))
            continue
        tokens.append(gt.bool()[idx] & pos[:, None])
        boxes.append(gb[idx] * pos[:, None])
    return GroundingTargets(torch.stack(positive), torch.stack(tokens), torch.stack(boxes))


def _normalizer(count: Tensor, reduce_count: Callable[[Tensor], Tensor], floor: float) -> Tensor:
    return reduce_count(count.detach().float()).clamp(min=floor)


def alignment_focal_loss(logits: Tensor, targets: Tensor, token_mask: Tensor, normalizer: Tensor,
                         alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss over (anchor, real token) pairs, summed, over ``normalizer``.

    Args:
        logits: ``(B, A, L)`` alignment logits.
        targets: ``(B, A, L)`` bool.
        token_mask: ``(B, L)``, nonzero for real tokens; padding pairs are left out.
        normalizer: number of positive anchors (a scalar >= 1).
    """
    keep = token_mask.bool()[:, None, :].expand_as(logits)
    loss = sigmoid_focal_loss(logits[keep].float(), targets[keep].float(), alpha=alpha,
                              gamma=gamma, reduction="sum")
    return loss / normalizer


def box_giou_loss(pred_boxes: Tensor, target_boxes: Tensor, weight: Tensor,
                  normalizer: Tensor | None = None) -> Tensor:
    """Sum of ``weight * (1 - GIoU)`` over ``(P, 4)`` xyxy pairs, over ``normalizer``
    (default: the sum of ``weight``)."""
    losses = generalized_box_iou_loss(pred_boxes.float(), target_boxes.float(), reduction="none")
    total = (losses * weight).sum()
    return total / (weight.sum().clamp(min=1e-6) if normalizer is None else normalizer)


def centerness_loss(logits: Tensor, targets: Tensor, normalizer: Tensor) -> Tensor:
    """Binary cross-entropy of ``(P,)`` logits against ``(P,)`` targets in [0, 1], summed, over
    ``normalizer``."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum") / (
        normalizer)


@dataclass
class GroundingLoss:
    """``total`` (weighted sum), its unweighted ``parts`` and the number of positive anchors."""

    total: Tensor
    parts: dict[str, Tensor]
    num_positive: int


def grounding_loss(
    alignment_logits: Tensor,
    box_regression: Tensor,
    centerness: Tensor,
    anchors: Tensor,
    targets: GroundingTargets,
    token_mask: Tensor,
    weights: Mapping[str, float] | None = None,
    reduce_count: Callable[[Tensor], Tensor] = lambda t: t,
) -> GroundingLoss:
    """The three terms of the fine-grained stage and their weighted sum.

    Args:
        alignment_logits: ``(B, A, L)``.
        box_regression: ``(B, A, 4)`` deltas (see :func:`decode_boxes`).
        centerness: ``(B, A)`` logits.
        anchors: ``(A, 4)`` xyxy, shared by the batch.
        targets: from :func:`build_targets`.
        token_mask: ``(B, L)`` real tokens.
        weights: ``{"alignment", "box", "centerness"}`` (default :data:`DEFAULT_WEIGHTS`).
        reduce_count: local count -> mean over processes.
    """
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    pos = targets.positive
    num_pos = _normalizer(pos.sum(), reduce_count, 1.0)
    parts = {"alignment": alignment_focal_loss(alignment_logits, targets.tokens, token_mask,
                                               num_pos)}
    if bool(pos.any()):
        pos_anchors = anchors[None].expand(pos.shape[0], -1, -1)[pos]
        center_t = centerness_targets(pos_anchors, targets.boxes[pos])
        pred = decode_boxes(box_regression[pos].float(), pos_anchors)
        parts["box"] = box_giou_loss(pred, targets.boxes[pos], center_t,
                                     _normalizer(center_t.sum(), reduce_count, 1e-6))
        parts["centerness"] = centerness_loss(centerness[pos], center_t, num_pos)
    else:  # keep the graph connected so that every parameter gets a (zero) gradient
        parts["box"] = box_regression.sum() * 0.0
        parts["centerness"] = centerness.sum() * 0.0
    total = sum(w[k] * v for k, v in parts.items())
    return GroundingLoss(total=total, parts=parts, num_positive=int(pos.sum()))
