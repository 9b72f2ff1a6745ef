"""Masked Language Modeling (paper section 3.3, Eq. 7): the loss, its accuracy and the weight
schedule. The masking itself is data preparation (:mod:`vlparse.data.masking`).

Shapes: ``K`` masked positions gathered by the model, ``V`` vocabulary size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "mlm_accuracy", "mlm_loss", "ramp_weight", "scale_sum"]


def scale_sum(total: Tensor, normalizer: float | Tensor | None, default: int) -> Tensor:
    """Divide a summed loss by ``normalizer`` (or by ``default`` when it is ``None``).

    Shared by the objective losses. ``default`` is the local count of terms; a count of 0 divides
    by 1 (the sum is then 0). A tensor normalizer (e.g. a count all-reduced over processes) is
    clamped away from 0 so that an empty global batch gives 0, not NaN.
    """
    if normalizer is None:
        return total / max(int(default), 1)
    if isinstance(normalizer, Tensor):
        return total / normalizer.to(device=total.device, dtype=total.dtype).clamp_min(1e-12)
    if normalizer <= 0:
        raise ValueError(
            f"normalizer must be > 0, got {normalizer!r}; pass None to divide by the local count"
        )
    return total / float(normalizer)


def mlm_loss(logits: Tensor, labels: Tensor, normalizer: float | Tensor | None = None) -> Tensor:
    """Cross-entropy of the masked positions, summed and divided by ``normalizer``.

    Args:
        logits: ``(K, V)`` logits gathered at the masked positions by the caller.
        labels: ``(K,)`` original ids (entries equal to -100 are ignored).
        normalizer: divisor of the sum; default the number of labels that are not -100 (``K``),
            which makes the result ``F.cross_entropy(logits, labels)``.

    Returns:
        A scalar float32 tensor.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"mlm_loss: expected logits (K, V) and labels (K,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}; gather the masked positions first"
        )
    total = F.cross_entropy(
        logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    if normalizer is None:  # counting the labels reads them back to the host: only when asked
        return scale_sum(total, None, int((labels != IGNORE_INDEX).sum()))
    return scale_sum(total, normalizer, 0)


def ramp_weight(step: int, delay: int = 0, ramp: int = 0) -> float:
    """A loss weight that is 0 for ``step < delay``, then rises linearly to 1 over ``ramp``
    steps (``ramp = 0``: a jump to 1 at ``delay``). ``step`` counts the optimizer steps taken
    before the current one, so ``ramp_weight(0)`` with the defaults is 1.

    >>> [ramp_weight(s, delay=2, ramp=4) for s in (0, 2, 3, 6, 9)]
    [0.0, 0.0, 0.25, 1.0, 1.0]
    """
    if step < 0 or delay < 0 or ramp < 0:
        raise ValueError(
            f"ramp_weight: step, delay and ramp must be >= 0, got {step}, {delay}, {ramp}"
        )
    if step < delay:
        return 0.0
    if ramp == 0:
        return 1.0
    return min(1.0, (step - delay) / ramp)


def mlm_accuracy(logits: Tensor, labels: Tensor) -> tuple[int, int]:
    """``(correct, total)`` of arg-max predictions over labels that are not -100.

    Args:
        logits: ``(K, V)``; labels: ``(K,)``.
    """
    valid = labels != IGNORE_INDEX
    correct = ((logits.argmax(-1) == labels) & valid).sum()
    return int(correct), int(valid.sum())
