"""Phrase-to-token targets ("positive maps") from character spans and a fast tokenizer's offsets.

A grounding annotation names the caption characters a box grounds (``tokens_positive``: a list of
``[start, end)`` character spans). The model scores boxes against *tokens*, so each box needs the
set of token positions its spans cover. A token counts as covered when its character range
overlaps a span by at least one character (``tok_start < span_end and tok_end > span_start``):

- a word split into several word pieces gives all its pieces;
- a span whose edge falls on a space or on punctuation outside the word takes no extra token
  (the released code instead probes ``char_to_token`` at ``start + 1``, ``start + 2``, ...);
- special tokens and padding have the empty range ``(0, 0)`` in Hugging Face offsets and never
  overlap anything;
- a span cut away by truncation covers nothing: its row may end up empty, which
  :func:`positive_map` reports so that callers can drop the box.

Both :mod:`vlparse.data` (targets) and :mod:`vlparse.models` (inference per phrase) use this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenizedCaptions", "positive_map", "tokenize_with_offsets"]

Span = tuple[int, int]


@dataclass
class TokenizedCaptions:
    """Captions tokenised with character offsets.

    Attributes:
        input_ids: ``(B, L)`` token ids, padded to ``L``.
        attention_mask: ``(B, L)`` 1 for real tokens (special tokens included), 0 for padding.
        offsets: ``(B, L, 2)`` character ``[start, end)`` of each token in its caption; ``(0, 0)``
            for special tokens and padding.
    """

    input_ids: Tensor
    attention_mask: Tensor
    offsets: Tensor


def tokenize_with_offsets(
    tokenizer, captions: Sequence[str], max_length: int = 256, pad_to_max: bool = False
) -> TokenizedCaptions:
    """Tokenise ``captions`` with a fast tokenizer, keeping character offsets.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (``return_offsets_mapping`` needs one).
        captions: ``B`` texts.
        max_length: truncation length, special tokens included (FIBER pads text to 256).
        pad_to_max: pad to ``max_length`` instead of the longest caption.

    Raises:
        ValueError: the tokenizer is not a fast one.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} has no character offsets; use a fast tokenizer "
            "(transformers' *TokenizerFast, or AutoTokenizer with use_fast=True)"
        )
    enc = tokenizer(
        list(captions), padding="max_length" if pad_to_max else "longest", truncation=True,
        max_length=max_length, return_offsets_mapping=True, return_special_tokens_mask=True,
        return_tensors="pt",
    )
    # some tokenizers give special tokens a non-empty range; make every one empty
    empty = enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0)
    offsets = enc["offset_mapping"].long().masked_fill(empty[..., None], 0)
    return TokenizedCaptions(enc["input_ids"], enc["attention_mask"], offsets)


def positive_map(
    spans: Sequence[Sequence[Span]], offsets: Tensor, num_tokens: int | None = None
) -> tuple[Tensor, Tensor]:
    """Which tokens each box's character spans cover.

    Args:
        spans: one list of ``(start, end)`` character spans per box (``N`` boxes); the spans of
            one box may overlap each other or another box's spans.
        offsets: ``(L, 2)`` token character ranges of the caption (``(0, 0)`` = no character,
            for special tokens and padding).
        num_tokens: width of the map (``>= L``; default ``L``), e.g. 256 for a fixed text length.

    Returns:
        ``(map, found)``: ``map`` ``(N, num_tokens)`` bool, ``map[i, j]`` true when token ``j``
        overlaps a span of box ``i``; ``found`` ``(N,)`` bool, whether box ``i`` covers any token
        (false when all its spans were truncated away or are empty).

    Raises:
        ValueError: a span is not ``start <= end`` with ``start >= 0``, or ``num_tokens < L``.
    """
    length = offsets.shape[0]
    width = length if num_tokens is None else num_tokens
    if width < length:
        raise ValueError(f"num_tokens={width} is shorter than the {length} tokens given")
    out = torch.zeros(len(spans), width, dtype=torch.bool)
    starts, ends = offsets[:, 0], offsets[:, 1]
    for i, box_spans in enumerate(spans):
        for start, end in box_spans:
            if start < 0 or end < start:
                raise ValueError(f"box {i}: span ({start}, {end}) is not a character range")
            out[i, :length] |= (starts < end) & (ends > start)
    return out, out.any(dim=1)
