"""Metrics of phrase grounding and referring expressions, and the baselines reported beside them.

- Flickr30K Entities, Recall@k (any-box protocol): a phrase counts as found at ``k`` when one of
  its ``k`` best predicted boxes has IoU >= 0.5 with *any* ground-truth box of the phrase.
- Referring expressions (RefCOCO/+/g): top-1 accuracy, the best box correct when its IoU with the
  referred box is >= 0.5. FIBER's evaluator uses generalised IoU instead (a little stricter, since
  GIoU <= IoU); ``generalized=True`` switches to it.
- Baselines: the largest candidate box of the image; a box of the ground truth's size at a
  uniformly random place in the image (seeded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_area, box_iou, generalized_box_iou_loss

__all__ = [
    "largest_box_baseline",
    "paired_iou",
    "phrase_recall_at_k",
    "random_box_baseline",
    "refexp_accuracy",
]


def phrase_recall_at_k(
    ranked_boxes: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    ks: Sequence[int] = (1, 5, 10),
    iou_threshold: float = 0.5,
) -> dict[int, float]:
    """Recall@k over phrases, any-box protocol.

    Args:
        ranked_boxes: per phrase ``(K_p, 4)`` xyxy predictions, best first (may be empty: a miss).
        gt_boxes: per phrase ``(G_p, 4)`` xyxy ground-truth boxes (at least one each).
        ks: cut-offs.
        iou_threshold: IoU a prediction needs with some ground-truth box.

    Returns:
        ``{k: fraction of phrases found among their k best boxes}``.
    """
    if len(ranked_boxes) != len(gt_boxes):
        raise ValueError(f"{len(ranked_boxes)} rankings for {len(gt_boxes)} phrases")
    if not gt_boxes:
        raise ValueError("phrase_recall_at_k: no phrases")
    hits = {k: 0 for k in ks}
    for p, (pred, gt) in enumerate(zip(ranked_boxes, gt_boxes, strict=True)):
        if gt.shape[0] == 0:
            raise ValueError(f"phrase {p} has no ground-truth box")
        if pred.shape[0] == 0:
            continue
        # rank of the first prediction that matches some ground-truth box
        matches = (box_iou(pred.float(), gt.float()) >= iou_threshold).any(dim=1)
        if bool(matches.any()):
            first = int(matches.nonzero()[0])
            for k in ks:
                hits[k] += first < k
    return {k: hits[k] / len(gt_boxes) for k in ks}


def paired_iou(boxes1: Tensor, boxes2: Tensor, generalized: bool = False) -> Tensor:
    """``(N,)`` IoU (or generalised IoU) of row ``i`` of ``boxes1`` with row ``i`` of ``boxes2``
    (both ``(N, 4)`` xyxy)."""
    boxes1, boxes2 = boxes1.float(), boxes2.float()
    if generalized:
        return 1.0 - generalized_box_iou_loss(boxes1, boxes2, reduction="none")
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union.clamp(min=1e-9)


def refexp_accuracy(pred_boxes: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5,
                    generalized: bool = False) -> float:
    """Fraction of expressions whose top box ``(N, 4)`` matches the referred box ``(N, 4)``
    (xyxy) at IoU (or GIoU with ``generalized=True``) >= ``iou_threshold``."""
    if pred_boxes.shape != gt_boxes.shape or pred_boxes.ndim != 2 or pred_boxes.shape[1] != 4:
        raise ValueError(f"expected two (N, 4) tensors, got {tuple(pred_boxes.shape)} and "
                         f"{tuple(gt_boxes.shape)}")
    if pred_boxes.shape[0] == 0:
        raise ValueError("refexp_accuracy: no expressions")
    ok = paired_iou(pred_boxes, gt_boxes, generalized) >= iou_threshold
    return float(ok.float().mean())


def largest_box_baseline(candidates: Sequence[Tensor]) -> Tensor:
    """``(N, 4)``: per query, the candidate ``(C_i, 4)`` xyxy box of largest area (the first on
    ties), e.g. among all annotated objects of the image."""
    out = []
    for i, boxes in enumerate(candidates):
        if boxes.shape[0] == 0:
            raise ValueError(f"query {i} has no candidate box")
        out.append(boxes[int(box_area(boxes.float()).argmax())])
    return torch.stack(out).float()


def random_box_baseline(gt_boxes: Tensor, image_sizes: Tensor, seed: int = 0) -> Tensor:
    """``(N, 4)``: boxes of the ground truth's width and height at a uniformly random position
    inside the image (the size is known, the place is chance).

    Args:
        gt_boxes: ``(N, 4)`` xyxy.
        image_sizes: ``(N, 2)`` image ``(height, width)``.
        seed: the draws depend on it only.
    """
    gen = torch.Generator().manual_seed(seed)
    gt = gt_boxes.float().cpu()
    wh = gt[:, 2:] - gt[:, :2]
    room = (image_sizes.float().cpu().flip(1) - wh).clamp(min=0)  # (N, 2) as (x, y)
    top_left = torch.rand(gt.shape[0], 2, generator=gen) * room
    return torch.cat([top_left, top_left + wh], dim=1)
