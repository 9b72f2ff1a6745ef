"""BERT masking of token ids for Masked Language Modeling (paper section 3.3), done by the
collator (:class:`~vlparse.data.collate.PretrainCollator`) the way transformers'
``DataCollatorForLanguageModeling`` does it; the loss is :func:`vlparse.objectives.mlm.mlm_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["mask_tokens"]


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
    min_masked: int = 0,
) -> tuple[Tensor, Tensor]:
    """BERT masking of a batch of token ids.

    Each maskable token is chosen with probability ``prob``. Of the chosen tokens, 80% become
    ``mask_token_id``, 10% a random id drawn uniformly over ``[0, vocab_size)`` (special ids
    included, as in BERT) and 10% stay unchanged.

    ``min_masked``: a sequence (last dimension) with maskable tokens but fewer than ``min_masked``
    chosen gets extra tokens chosen at random among its maskable ones (up to the number it has),
    so that short captions still give an MLM target. ``0`` (default) is BERT's masking, with no
    floor (``objectives.mlm_min_masked``). The random draws do not depend on it: the same
    generator state chooses the same tokens with and without the floor, plus the extra ones.

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
