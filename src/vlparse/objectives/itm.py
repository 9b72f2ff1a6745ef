"""Image-Text Matching (paper section 3.3, Eq. 8): labels, negative sampling and the loss.

Each image is paired with ``P`` matched then ``N`` unmatched texts (the paper: 2 and 2), so a
batch of ``B`` images gives ``T = B * (P + N)`` pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.mlm import scale_sum


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
    one = torch.cat(
        [torch.ones(num_pos, dtype=torch.long), torch.zeros(num_neg, dtype=torch.long)]
    )
    return one.repeat(num_images).to(device)


def sample_negatives(index: int, n: int, num_neg: int, generator: torch.Generator) -> list[int]:
    """Indices of ``num_neg`` other images to take unmatched captions from.

    Never returns ``index``. The indices are distinct when ``n - 1 >= num_neg``; otherwise they
    are drawn with replacement among the ``n - 1`` other images.

    Args:
        index: the image whose negatives are drawn, in ``[0, n)``.
        n: the number of images to draw from (at least 2).
        generator: a CPU generator; the same state gives the same indices.
    """
    if n < 2:
        raise ValueError(
            f"sample_negatives: need at least 2 images to draw an unmatched one, got n={n}"
        )
    if not 0 <= index < n:
        raise ValueError(f"sample_negatives: index {index} is outside [0, {n})")
    if num_neg < 0:
        raise ValueError(f"sample_negatives: num_neg must be >= 0, got {num_neg}")
    if n - 1 >= num_neg:
        others = torch.randperm(n - 1, generator=generator)[:num_neg]
    else:
        others = torch.randint(0, n - 1, (num_neg,), generator=generator)
    # Skip over ``index``: draws in [0, n-1) map to [0, n) minus {index}.
    return [int(j) + int(j >= index) for j in others.tolist()]


def batch_partners(keys: Tensor, num_neg: int) -> Tensor:
    """Which image of a group lends each image its unmatched captions (``itm_negatives="batch"``).

    The ``G`` images are put in the cyclic order of their random ``keys``; image ``a`` takes its
    ``n``-th unmatched caption from the image ``n + 1`` places after it in that order. For every
    ``n`` the partners are a permutation without fixed points (``G >= 2``), so each image lends
    exactly one caption per slot: over the group, every lent caption is a matched caption of its
    own image as well, and the texts alone say nothing about the label.

    Args:
        keys: ``(G,)`` distinct random numbers (ties are broken by position).
        num_neg: ``N``, unmatched captions per image.

    Returns:
        ``(G, N)`` long tensor of partner positions in ``[0, G)``; with ``G >= 2``,
        ``partners[a, n] != a`` whenever ``(n + 1) % G != 0``.

    Example: keys ``[0.3, 0.1, 0.2]`` give the order ``1, 2, 0``, so with ``N = 1`` image 1 takes
    from 2, 2 from 0 and 0 from 1: ``[[1], [2], [0]]``.
    """
    if keys.dim() != 1 or keys.numel() < 2:
        raise ValueError(
            f"batch_partners: need (G,) keys with G >= 2, got shape {tuple(keys.shape)}"
        )
    if num_neg < 0:
        raise ValueError(f"batch_partners: num_neg must be >= 0, got {num_neg}")
    g = keys.numel()
    order = torch.sort(keys, stable=True).indices  # position in the cycle -> image
    rank = torch.empty_like(order)
    rank[order] = torch.arange(g)  # image -> position in the cycle
    shift = torch.arange(1, num_neg + 1)
    return order[(rank[:, None] + shift[None, :]) % g]


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
