"""Masked Feature Regression (paper section 3.3, Eq. 9): the loss.

The model masks visual tokens (:mod:`vlparse.models.visual_masking`: an anchor and the tokens
it attends to most, or random ones) and regresses their features; this is the regression loss.

What is normalised by what. Eq. 9 is, for one image-text pair, the squared L2 distance between
each of its ``k`` masked tokens and its regression, summed over the ``k`` tokens:
``sum_i sum_c (r(v_i)_c - v_i,c) ** 2``. The paper does not say how a batch averages it. vlparse
computes MFR on every matched pair (``P = objectives.num_pos`` per image, each with the image's
own mask), sums the squared error over all ``K = B * P * k`` masked tokens and their ``c``
channels, and divides by ``num_samples``, which the model sets
(:meth:`~vlparse.models.single_stream.VisualParsingModel.forward_pretrain`):

- ``objectives.mfr_reduction="sum"`` (the paper's Eq. 9): ``num_samples = B * P``, the matched
  pairs of the process's batch, so the loss is Eq. 9 averaged over pairs;
- ``"mean_channel"``: ``num_samples = B * P * c``, the same further divided by the feature width
  (a mean over channels instead of a sum; ``c`` = 1,024 at ``paper`` size).

Under DDP each process divides by its own pairs, and the gradients are averaged over processes,
which is the mean over the global batch when the processes hold equal batches (they do).

Shapes: ``K`` masked tokens in the batch, ``c`` visual feature width.
"""

from __future__ import annotations

from torch import Tensor

from vlparse.objectives.mlm import scale_sum

__all__ = ["mfr_loss"]


def mfr_loss(pred: Tensor, target: Tensor, num_samples: int | float | Tensor) -> Tensor:
    """Eq. 9: squared error summed over the masked tokens and channels, divided by
    ``num_samples`` (see the module docstring for the two normalisations).

    The target is detached here: the regression trains the multi-modal Transformer and the MFR
    head, and does not pull the visual tokens towards the predictions (which would let both
    collapse together).

    Args:
        pred: ``(K, c)`` MFR head output at the masked tokens.
        target: ``(K, c)`` the visual tokens before masking.
        num_samples: the divisor: the image-text pairs the ``K`` tokens come from (Eq. 9 per
            pair), or pairs times ``c`` (a mean over channels), or a global count.

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
