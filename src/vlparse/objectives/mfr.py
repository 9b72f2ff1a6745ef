"""Masked Feature Regression (paper section 3.3, Eq. 9): the loss.

The model masks visual tokens (:mod:`vlparse.models.visual_masking`: an anchor and the tokens
it attends to most, or random ones) and regresses their features; this is the regression loss.

Shapes: ``K`` masked tokens in the batch, ``c`` visual feature width.
"""

from __future__ import annotations

from torch import Tensor

from vlparse.objectives.mlm import scale_sum

__all__ = ["mfr_loss"]


def mfr_loss(pred: Tensor, target: Tensor, num_samples: int | float | Tensor) -> Tensor:
    """Eq. 9: squared L2 distance summed over the masked tokens, divided by ``num_samples``.

    Per sample Eq. 9 sums over its ``k`` masked tokens; dividing the batch sum by the number of
    samples gives the mean over samples. The target is detached here: the regression trains the
    multi-modal Transformer and the MFR head, and does not pull the visual tokens towards the
    predictions (which would let both collapse together).

    Args:
        pred: ``(K, c)`` MFR head output at the masked tokens.
        target: ``(K, c)`` the visual tokens before masking.
        num_samples: samples (image-text pairs) the ``K`` tokens come from, or a global count.

    Returns:
        A scalar float32 tensor.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"mfr_loss: expected pred and target (K, c) of the same shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    total = (pred.float() - target.detach().float()).pow(2).sum()
    return scale_sum(total, num_samples, 0)
