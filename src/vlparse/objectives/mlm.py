"""Masked Language Modeling (paper section 3.3, Eq. 7): BERT masking and the loss.

Shapes: ``L`` text length, ``K`` masked positions gathered by the caller, ``V`` vocabulary size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
"""Label of positions that carry no MLM target (the ``ignore_index`` of ``F.cross_entropy``)."""


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


def _rand(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws made on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def mask_tokens(
    input_ids: Tensor,
    maskable: Tensor,
    mask_token_id: int,
    vocab_size: int,
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    min_masked: int = 1,
) -> tuple[Tensor, Tensor]:
    """BERT masking of a batch of token ids.

    Each maskable token is chosen with probability ``prob``. Of the chosen tokens, 80% become
    ``mask_token_id``, 10% a random id drawn uniformly over ``[0, vocab_size)`` (special ids
    included, as in BERT) and 10% stay unchanged.

    ``min_masked``: a sequence (last dimension) with maskable tokens but fewer than ``min_masked``
    chosen gets extra tokens chosen at random among its maskable ones (up to the number it has),
    so that short captions still give an MLM target. ``0`` turns this off.

    Args:
        input_ids: ``(..., L)`` long token ids.
        maskable: ``(..., L)`` bool, True where a token may be masked (words, not [CLS], [SEP] or
            padding).
        generator: source of all random draws; the same seed gives the same result.

    Returns:
        ``(masked_ids, labels)``, both ``(..., L)`` long: the ids to feed the model, and the
        original id at the chosen positions, ``-100`` elsewhere.
    """
    if input_ids.shape != maskable.shape:
        raise ValueError(
            f"mask_tokens: input_ids {tuple(input_ids.shape)} and maskable "
            f"{tuple(maskable.shape)} must have the same shape"
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mask_tokens: prob must be in [0, 1], got {prob}")
    if min_masked < 0:
        raise ValueError(f"mask_tokens: min_masked must be >= 0, got {min_masked}")
    if input_ids.dim() == 0:
        raise ValueError("mask_tokens: input_ids must have at least one dimension (..., L)")
    device = input_ids.device
    maskable = maskable.to(device=device, dtype=torch.bool)
    shape = input_ids.shape

    # Every draw has a fixed shape, so the stream of random numbers depends only on the shape.
    choose_u = _rand(shape, generator, device)
    extra_u = _rand(shape, generator, device)
    action_u = _rand(shape, generator, device)
    gen_device = generator.device if generator is not None else device
    random_ids = torch.randint(
        0, vocab_size, shape, generator=generator, device=gen_device, dtype=torch.long
    ).to(device)

    chosen = (choose_u < prob) & maskable
    if min_masked > 0 and shape[-1] > 0:
        need = (min_masked - chosen.sum(-1, keepdim=True)).clamp_min(0)  # (..., 1)
        candidates = maskable & ~chosen
        score = torch.where(candidates, extra_u, torch.full_like(extra_u, -1.0))
        order = score.argsort(dim=-1, descending=True, stable=True)
        rank = order.argsort(dim=-1)  # rank of each position among the candidates
        chosen = chosen | (candidates & (rank < need))

    to_mask = chosen & (action_u < 0.8)
    to_random = chosen & (action_u >= 0.8) & (action_u < 0.9)
    masked_ids = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked_ids = torch.where(to_random, random_ids, masked_ids)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return masked_ids, labels


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
    return scale_sum(total, normalizer, int((labels != IGNORE_INDEX).sum()))


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
