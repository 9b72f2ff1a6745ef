"""Caption decoding: greedy, sampling and beam search, batched over images.

The searches drive any decoder that follows :class:`CaptionDecoder`: one token per step with a
key/value cache, or (``use_cache=False``) the whole prefix every step, as FIBER's released code
decodes. Both paths give the same captions (tested); the cache makes a step cost one token
instead of the prefix.

Shapes: ``B`` images, ``K`` beams or samples per image, ``N`` rows being decoded (``B * K``,
image-major: row ``i`` decodes image ``i // K``), ``T`` prefix length, ``V`` vocabulary size,
``L`` generated length (at most ``max_length``).

Generated sequences exclude the start token, include the end token, and are padded with the pad
id after it; ``lengths`` counts the tokens up to and including the end token (``L`` when a row
never ends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CaptionDecoder", "GenerationOutput", "greedy_search", "sample", "beam_search"]


class CaptionDecoder(Protocol):
    """What the searches need from an image-conditioned causal decoder.

    ``memory`` is whatever the model computes once per batch of ``B`` images before decoding,
    typically each cross-attention layer's image keys and values (batch first). The cache is
    opaque to the searches: they only pass it back to :meth:`step` and :meth:`reorder`.
    """

    bos_token_id: int
    eos_token_id: int
    pad_token_id: int

    def init_cache(self, memory: Any, rows: Tensor) -> Any:
        """An empty self-attention cache for ``N = len(rows)`` sequences; sequence ``i`` reads
        image ``rows[i]`` of ``memory`` (``rows`` ``(N,)`` long)."""
        ...

    def step(self, input_ids: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """Feed one token per sequence: ``input_ids (N, 1)`` -> next-token logits ``(N, V)`` and
        the cache grown by that token."""
        ...

    def reorder(self, cache: Any, index: Tensor) -> Any:
        """Cache of the sequences ``index (N,)`` (index_select on the batch dimension). The
        searches only map a row to a row of the same image, so per-image state needs no move."""
        ...

    def full(self, input_ids: Tensor, memory: Any, rows: Tensor) -> Tensor:
        """No-cache path: logits ``(N, T, V)`` of every position of the prefixes ``(N, T)``."""
        ...


@dataclass
class GenerationOutput:
    """Decoded captions.

    Attributes:
        sequences: ``(N, L)`` long token ids after the start token, padded after the end token.
        lengths: ``(N,)`` long, tokens up to and including the end token.
        scores: ``(N,)`` greedy and sampling: sum of the token log-probs; beam search: that sum
            divided by ``length ** length_alpha``.
        token_logprobs: ``(N, L)`` log-prob of each chosen token (0 on padding), greedy and
            sampling only; differentiable when sampling ran with gradients enabled.
    """

    sequences: Tensor
    lengths: Tensor
    scores: Tensor
    token_logprobs: Tensor | None = None

    def token_mask(self) -> Tensor:
        """``(N, L)`` bool, True for the tokens up to and including the end token."""
        steps = torch.arange(self.sequences.shape[1], device=self.sequences.device)
        return steps[None, :] < self.lengths[:, None]


class _Prefixes:
    """The prefixes being decoded and, with ``use_cache``, their decoder cache."""

    def __init__(self, decoder: CaptionDecoder, memory: Any, rows: Tensor, use_cache: bool):
        self.decoder, self.memory, self.rows, self.use_cache = decoder, memory, rows, use_cache
        self.ids = torch.full((len(rows), 1), decoder.bos_token_id, device=rows.device)
        self.cache = decoder.init_cache(memory, rows) if use_cache else None

    def next_logits(self) -> Tensor:
        """``(N, V)`` logits of the token after each prefix."""
        if self.use_cache:
            logits, self.cache = self.decoder.step(self.ids[:, -1:], self.cache)
            return logits
        return self.decoder.full(self.ids, self.memory, self.rows)[:, -1]

    def append(self, tokens: Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)

    def reorder(self, index: Tensor) -> None:
        self.ids, self.rows = self.ids.index_select(0, index), self.rows.index_select(0, index)
        if self.use_cache:
            self.cache = self.decoder.reorder(self.cache, index)


def _rows(batch_size: int, per_image: int, device: torch.device | str | None) -> Tensor:
    return torch.arange(batch_size, device=device).repeat_interleave(per_image)


def _decode(prefixes: _Prefixes, choose, max_length: int) -> GenerationOutput:
    """Token-by-token loop shared by greedy search and sampling; ``choose(logits (N, V))``
    returns the chosen tokens ``(N,)`` and their log-probs ``(N,)``."""
    eos, pad = prefixes.decoder.eos_token_id, prefixes.decoder.pad_token_id
    n = prefixes.ids.shape[0]
    finished = torch.zeros(n, dtype=torch.bool, device=prefixes.ids.device)
    lengths = torch.zeros(n, dtype=torch.long, device=prefixes.ids.device)
    picked: list[Tensor] = []
    for _ in range(max_length):
        tokens, logp = choose(prefixes.next_logits())
        tokens = tokens.masked_fill(finished, pad)
        picked.append(logp.masked_fill(finished, 0.0))
        lengths += (~finished).long()
        prefixes.append(tokens)
        finished = finished | (tokens == eos)
        if bool(finished.all()):
            break
    logprobs = torch.stack(picked, dim=1)
    return GenerationOutput(prefixes.ids[:, 1:], lengths, logprobs.sum(dim=1), logprobs)


def _check_length(max_length: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")


@torch.no_grad()
def greedy_search(
    decoder: CaptionDecoder,
    memory: Any,
    batch_size: int,
    *,
    max_length: int = 50,
    use_cache: bool = True,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """The most likely token at every step, for ``batch_size`` images (``N = B``)."""
    _check_length(max_length)

    def choose(logits: Tensor) -> tuple[Tensor, Tensor]:
        logp = F.log_softmax(logits.float(), dim=-1)
        tokens = logp.argmax(dim=-1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)

    prefixes = _Prefixes(decoder, memory, _rows(batch_size, 1, device), use_cache)
    return _decode(prefixes, choose, max_length)


def sample(
    decoder: CaptionDecoder,
    memory: Any,
    batch_size: int,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    max_length: int = 50,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """``num_samples`` captions per image drawn from ``softmax(logits / temperature)``,
    restricted to the ``top_k`` most likely tokens when ``top_k > 0`` (``N = B * num_samples``).

    Runs under the caller's gradient mode: with gradients enabled, ``token_logprobs`` is
    differentiable (the log-probs of the distribution the tokens were drawn from).
    """
    _check_length(max_length)
    if num_samples < 1 or temperature <= 0 or top_k < 0:
        raise ValueError(
            f"sample: need num_samples >= 1, temperature > 0, top_k >= 0; got {num_samples}, "
            f"{temperature}, {top_k}"
        )

    def choose(logits: Tensor) -> tuple[Tensor, Tensor]:
        scaled = logits.float() / temperature
        if top_k > 0:
            kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        logp = F.log_softmax(scaled, dim=-1)
        tokens = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
        return tokens, logp.gather(1, tokens[:, None]).squeeze(1)

    prefixes = _Prefixes(decoder, memory, _rows(batch_size, num_samples, device), use_cache)
    return _decode(prefixes, choose, max_length)


@torch.no_grad()
def beam_search(
    decoder: CaptionDecoder,
    memory: Any,
    batch_size: int,
    *,
    num_beams: int = 5,
    length_alpha: float = 1.0,
    max_length: int = 50,
    use_cache: bool = True,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """Beam search ranked by the length-normalised score ``sum log p / length ** length_alpha``.

    ``length_alpha = 1`` (default) ranks by the mean token log-prob; ``0`` by the plain sum,
    which favours short captions. Every step keeps the ``num_beams`` best candidates of each
    image by that score; a finished caption stays in its slot, unchanged, until better candidates
    push it out, and the best finished caption of each image is remembered even then. Decoding
    stops when every slot holds a finished caption or after ``max_length`` tokens; the result is
    the best finished caption, or a running one cut at ``max_length`` if that scores higher.
    With ``num_beams = 1`` this is greedy search.

    Returns:
        One caption per image (``N = B``); ``scores`` are the length-normalised scores.
    """
    _check_length(max_length)
    if num_beams < 1:
        raise ValueError(f"beam_search: num_beams must be >= 1, got {num_beams}")
    eos, pad = decoder.eos_token_id, decoder.pad_token_id
    b, k = batch_size, num_beams
    prefixes = _Prefixes(decoder, memory, _rows(b, k, device), use_cache)
    dev = prefixes.ids.device
    image = torch.arange(b, device=dev)
    sums = torch.zeros(b, k, device=dev)
    sums[:, 1:] = float("-inf")  # all beams start as the same prefix: expand only the first
    lengths = torch.zeros(b, k, dtype=torch.long, device=dev)
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    best = _Best(b, max_length, pad, dev)
    for _ in range(max_length):
        logp = F.log_softmax(prefixes.next_logits().float(), dim=-1).view(b, k, -1)
        vocab = logp.shape[-1]
        if vocab < k:
            raise ValueError(f"beam_search: num_beams {k} exceeds the vocabulary size {vocab}")
        frozen = torch.full((vocab,), float("-inf"), device=dev)
        frozen[pad] = 0.0  # a finished caption only continues with padding, at no cost
        logp = torch.where(finished[..., None], frozen, logp)
        cand = sums[..., None] + logp  # (B, K, V)
        cand_len = lengths + (~finished).long()  # (B, K)
        key = cand / cand_len.clamp_min(1)[..., None].float().pow(length_alpha)
        key, flat = key.view(b, -1).topk(k, dim=1)  # (B, K)
        beam, tokens = flat // vocab, flat % vocab
        sums = cand.view(b, -1).gather(1, flat)
        lengths = cand_len.gather(1, beam)
        finished = finished.gather(1, beam) | (tokens == eos)
        prefixes.reorder((beam + image[:, None] * k).view(-1))
        prefixes.append(tokens.view(-1))
        best.update(key.masked_fill(~finished, float("-inf")), prefixes.ids[:, 1:], lengths)
        if bool(finished.all()):
            break
    # captions cut at max_length compete with the finished ones
    running = (sums / lengths.clamp_min(1).float().pow(length_alpha)).masked_fill(
        finished, float("-inf")
    )
    best.update(running, prefixes.ids[:, 1:], lengths)
    steps = prefixes.ids.shape[1] - 1
    return GenerationOutput(best.sequences[:, :steps], best.lengths, best.scores)


class _Best:
    """The best caption seen so far for each image of a beam search."""

    def __init__(self, batch_size: int, max_length: int, pad: int, device: torch.device):
        self.scores = torch.full((batch_size,), float("-inf"), device=device)
        self.sequences = torch.full((batch_size, max_length), pad, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)

    def update(self, keys: Tensor, sequences: Tensor, lengths: Tensor) -> None:
        """Offer the ``(B, K)`` candidates scored ``keys`` (-inf: not a candidate), whose
        sequences are ``(B * K, t)`` and lengths ``(B, K)``."""
        b, k = keys.shape
        top, j = keys.max(dim=1)
        better = top > self.scores
        if not bool(better.any()):
            return
        image = torch.arange(b, device=keys.device)
        seq = sequences.view(b, k, -1)[image, j]  # (B, t)
        t = seq.shape[1]
        self.sequences[:, :t] = torch.where(better[:, None], seq, self.sequences[:, :t])
        self.lengths = torch.where(better, lengths[image, j], self.lengths)
        self.scores = torch.where(better, top, self.scores)
