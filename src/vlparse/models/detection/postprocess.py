"""Inference post-processing of the detection head, for one image at a time (pure functions).

A phrase's score at an anchor is ``sqrt(mean over the phrase's tokens of sigmoid(alignment logit)
x sigmoid(centerness logit))`` (FIBER/GLIP). Each (anchor, phrase) pair above a score threshold
is a candidate; the best ``pre_nms_top_n`` candidates go through NMS per phrase
(``torchvision.ops.batched_nms``, IoU 0.6) and the best ``top_k`` survivors are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

__all__ = ["Detections", "phrase_rankings", "phrase_scores", "select_detections"]


@dataclass
class Detections:
    """Boxes found in one image.

    Attributes:
        boxes: ``(K, 4)`` xyxy, best first.
        scores: ``(K,)`` in [0, 1].
        phrases: ``(K,)`` long, the phrase (row of the phrase map) each box grounds.
    """

    boxes: Tensor
    scores: Tensor
    phrases: Tensor


def phrase_scores(alignment_logits: Tensor, centerness_logits: Tensor, phrase_map: Tensor
                  ) -> Tensor:
    """``(A, P)`` score of each phrase at each anchor.

    Args:
        alignment_logits: ``(A, L)``.
        centerness_logits: ``(A,)``.
        phrase_map: ``(P, L)`` bool, the tokens of each phrase (a phrase without tokens scores 0).
    """
    token_prob = alignment_logits.float().sigmoid()
    weights = phrase_map.float()
    mean = token_prob @ weights.t() / weights.sum(dim=1).clamp(min=1.0)
    return (mean * centerness_logits.float().sigmoid()[:, None]).sqrt()


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    score_threshold: float = 0.05,
    pre_nms_top_n: int = 1000,
    nms_threshold: float = 0.6,
    top_k: int = 100,
    image_size: tuple[int, int] | None = None,
) -> Detections:
    """Threshold, per-phrase NMS and top-k over every (anchor, phrase) pair.

    Args:
        boxes: ``(A, 4)`` decoded xyxy boxes.
        scores: ``(A, P)`` from :func:`phrase_scores`.
        score_threshold: candidates must score above it (0 keeps every pair).
        pre_nms_top_n: candidates kept before NMS.
        nms_threshold: IoU above which a lower-scoring box of the same phrase is dropped.
        top_k: boxes kept after NMS.
        image_size: ``(H, W)`` to clip boxes to, if given.
    """
    if image_size is not None:
        boxes = clip_boxes_to_image(boxes, image_size)
    flat = scores.reshape(-1)
    keep = (flat > score_threshold).nonzero().squeeze(1)
    if keep.numel() > pre_nms_top_n:
        keep = keep[flat[keep].topk(pre_nms_top_n).indices]
    num_phrases = scores.shape[1]
    anchor_idx, phrase_idx = keep // num_phrases, keep % num_phrases
    cand_boxes, cand_scores = boxes[anchor_idx], flat[keep]
    kept = batched_nms(cand_boxes.float(), cand_scores.float(), phrase_idx, nms_threshold)
    kept = kept[:top_k]  # batched_nms sorts by decreasing score
    return Detections(cand_boxes[kept], cand_scores[kept], phrase_idx[kept])


def phrase_rankings(detections: Detections, num_phrases: int, k: int | None = None
                    ) -> list[Tensor]:
    """Per phrase, its boxes ``(K_p, 4)`` best first (at most ``k``)."""
    out = []
    for p in range(num_phrases):
        mine = detections.phrases == p
        order = detections.scores[mine].argsort(descending=True, stable=True)
        out.append(detections.boxes[mine][order][:k])
    return out

