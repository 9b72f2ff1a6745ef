"""Image-Text Matching (paper section 3.3, Eq. 8): labels, the loss and its accuracy.

Each image is paired with ``P`` matched then ``N`` unmatched texts (the paper: 2 and 2), so a
batch of ``B`` images gives ``T = B * (P + N)`` pairs. Where the unmatched texts come from is
data preparation (:mod:`vlparse.data.negatives`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.mlm import scale_sum

__all__ = ["itm_accuracy", "itm_labels", "itm_loss"]


def itm_labels(
    num_images: int, num_pos: int = 2, num_neg: int = 2, device: torch.device | str | None = None
) -> Tensor:
    """ITM targets in the batch layout: per image ``num_pos`` ones, then ``num_neg`` zeros.

    Returns:
        ``(num_images * (num_pos + num_neg),)`` long tensor; 1 = matched, 0 = unmatched.
    """
    if num_images < 0 or num_pos < 0 or num_neg < 0:
        raise ValueError(
            f"itm_labels: counts must be >= 0, got num_images={num_images}, "
            f"num_pos={num_pos}, num_neg={num_neg}"
        )
    # made on the device itself: no copy from the host inside a training step
    one = (torch.arange(num_pos + num_neg, device=device) < num_pos).long()
    return one.repeat(num_images)


def itm_loss(logits: Tensor, labels: Tensor, normalizer: float | Tensor | None = None) -> Tensor:
    """Two-class cross-entropy, summed over pairs and divided by ``normalizer`` (default ``T``).

    Args:
        logits: ``(T, 2)`` ITM head output (class 1 = matched).
        labels: ``(T,)`` long, 1 matched / 0 unmatched.

    Returns:
        A scalar float32 tensor.
    """
    if logits.dim() != 2 or logits.shape[-1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"itm_loss: expected logits (T, 2) and labels (T,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    total = F.cross_entropy(logits.float(), labels.long(), reduction="sum")
    return scale_sum(total, normalizer, labels.numel())


def itm_accuracy(logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """``(correct, total)`` of arg-max predictions; logits ``(T, 2)``, labels ``(T,)``."""
    correct = (logits.argmax(-1) == labels).sum()
    return int(correct), labels.numel()
