"""Losses of the fine-tuning task heads, pure functions of tensors.

Each takes a ``normalizer``: the number of examples the sum is divided by (default the local
count), so that a fine-tuning step can pass the mean count per process under DDP. Retrieval
trains the two-class matching loss :func:`vlparse.objectives.itm.itm_loss`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.mlm import scale_sum

__all__ = ["classification_loss", "soft_target_bce"]


def soft_target_bce(
    logits: Tensor, targets: Tensor, normalizer: float | Tensor | None = None
) -> Tensor:
    """VQA's loss: binary cross-entropy of ``logits (B, A)`` against soft scores
    ``targets (B, A)`` in ``[0, 1]`` (``min(1, count / 3)``), summed over every entry and divided
    by ``normalizer`` (default ``B``): with ``B`` it is the element mean times ``A``."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(
            f"soft_target_bce: expected logits and targets (B, A) of the same shape, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    total = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return scale_sum(total, normalizer, logits.shape[0])


def classification_loss(
    logits: Tensor, labels: Tensor, normalizer: float | Tensor | None = None
) -> Tensor:
    """Cross-entropy of ``logits (B, C)`` against ``labels (B,)`` summed over the labelled
    examples (labels ``< 0`` are ignored) and divided by ``normalizer`` (default their count)."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"classification_loss: expected logits (B, C) and labels (B,), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    labels = labels.long()
    total = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none")
    valid = labels >= 0
    return scale_sum(total[valid].sum(), normalizer, int(valid.sum()))
