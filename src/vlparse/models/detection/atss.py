"""Anchors (one per location per level) and ATSS assignment of anchors to ground-truth boxes.

Anchors: level ``l`` of stride ``s_l`` and size ``a_l`` puts one square anchor of side ``a_l`` at
each feature location ``(i, j)``, centred on ``((j + 0.5) s_l, (i + 0.5) s_l)`` in input pixels
(continuous coordinates; the released code's ``(s - 1) / 2`` centres and ``+ 1`` widths are a
pixel-index convention we do not keep). FIBER's setting: sizes 64-1024 at strides 8-128, i.e.
``a_l = 8 s_l``. Anchors are listed level by level, row-major within a level, the order in which
a ``(B, C, H, W)`` map flattens to ``(B, H * W, C)``.

ATSS (Zhang et al., CVPR 2020), per ground-truth box ``g``:

1. candidates: on every level, the ``top_k`` anchors whose centres are nearest ``g``'s centre;
2. threshold: mean + standard deviation (unbiased, as ``torch.std``) of the candidates' IoU
   with ``g``;
3. positives: candidates with IoU >= threshold whose centre lies inside ``g`` (by > 0.01 px);
4. an anchor positive for several boxes goes to the one it overlaps most (highest IoU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["FIBER_ANCHOR_SIZES", "FIBER_STRIDES", "atss_assign", "box_centers", "level_anchors"]

FIBER_STRIDES = (8, 16, 32, 64, 128)
FIBER_ANCHOR_SIZES = (64, 128, 256, 512, 1024)


def box_centers(boxes: Tensor) -> Tensor:
    """``(N, 4)`` xyxy boxes -> ``(N, 2)`` centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def level_anchors(
    level_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    anchor_sizes: Sequence[float],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """One square anchor per location of each level.

    Args:
        level_sizes: ``(H_l, W_l)`` of each level's feature map.
        strides: input pixels per feature cell on each level.
        anchor_sizes: anchor side on each level, in input pixels.

    Returns:
        One ``(H_l * W_l, 4)`` xyxy tensor per level, row-major.
    """
    if not len(level_sizes) == len(strides) == len(anchor_sizes):
        raise ValueError(f"{len(level_sizes)} levels, {len(strides)} strides and "
                         f"{len(anchor_sizes)} anchor sizes must agree")
    out = []
    for (h, w), stride, size in zip(level_sizes, strides, anchor_sizes, strict=True):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)
        half = size / 2
        out.append(torch.cat([centres - half, centres + half], dim=1))
    return out


def atss_assign(anchors: Sequence[Tensor], gt_boxes: Tensor, top_k: int = 9) -> Tensor:
    """ATSS: the ground-truth box each anchor learns from, or -1 for a negative anchor.

    Args:
        anchors: one ``(A_l, 4)`` xyxy tensor per level (as :func:`level_anchors` gives).
        gt_boxes: ``(G, 4)`` xyxy boxes of one image.
        top_k: candidates per level and box (9 in ATSS and FIBER).

    Returns:
        ``(A,)`` long, ``A = sum A_l``: index into ``gt_boxes``, -1 for negatives.
    """
    flat = torch.cat(list(anchors), dim=0)
    num_gt = gt_boxes.shape[0]
    assigned = torch.full((flat.shape[0],), -1, dtype=torch.long, device=flat.device)
    if num_gt == 0 or flat.shape[0] == 0:
        return assigned
    ious = box_iou(flat, gt_boxes)  # (A, G)
    distances = torch.cdist(box_centers(flat), box_centers(gt_boxes))  # (A, G)
    candidates, start = [], 0
    for level in anchors:
        n = level.shape[0]
        k = min(top_k, n)
        if k:
            idx = distances[start:start + n].topk(k, dim=0, largest=False).indices
            candidates.append(idx + start)
        start += n
    cand = torch.cat(candidates, dim=0)  # (K, G)
    cand_iou = ious.gather(0, cand)
    std = cand_iou.std(dim=0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])
    positive = cand_iou >= (cand_iou.mean(dim=0) + std)[None, :]
    centres = box_centers(flat)[cand]  # (K, G, 2)
    inside = torch.cat([centres - gt_boxes[None, :, :2], gt_boxes[None, :, 2:] - centres], dim=2)
    positive &= inside.min(dim=2).values > 0.01
    # IoU of every (anchor, box) pair that ATSS made positive; -inf elsewhere
    chosen = torch.full_like(ious, float("-inf"))
    cols = torch.arange(num_gt, device=flat.device).expand_as(cand)
    chosen[cand[positive], cols[positive]] = ious[cand[positive], cols[positive]]
    best, best_gt = chosen.max(dim=1)
    return torch.where(torch.isfinite(best), best_gt, assigned)
