"""FIBER's text backbone as a causal caption decoder that cross-attends to the image.

The text layers below the first fused one run with causal self-attention only; the fused layers
add their pre-trained text-to-image cross-attention (:class:`~vlparse.models.fiber.
GatedCrossAttention`, gate included) on image tokens; the MLM head is the language-model head.
The image backbone runs alone (no image-to-text fusion), once per image. Each layer calls the
transformers layer's own modules (query/key/value, output dense, LayerNorms, feed-forward) in
the order :meth:`~vlparse.models.fiber.text_tower.TextTower.fused_layer` calls them, with a
causal mask: with the gates at 0 and a full-length prefix, position ``t`` computes what the stock
layer computes on the first ``t + 1`` tokens (tested).

**Which image tokens each fused layer attends to** (``image_features``):

- ``"paired"`` (default): the tokens its paired image block read in pre-training, i.e. that
  block's input when the image backbone runs alone (FIBER-B: text layers 7-10 the stage-3 tokens,
  11-12 the stage-4 tokens). The pre-trained cross-attention sees the features it was trained
  on and no weight is new.
- ``"last_stage"``: as the released code, every fused layer attends to the last stage's tokens
  (final LayerNorm as ``model.fusion.final_norms`` says); a layer paired with a narrower stage
  reads them through a new ``Linear(C_last -> C_stage)`` adapter, the others read them as they
  are.

**Decoding** (the protocol of :mod:`vlparse.models.generation`): :meth:`FiberCaptionDecoder.
encode` computes, once per image, the tokens and, through each fused layer's own
``keys_values``, the image keys and values; with the cache a step feeds one token, appends its
self-attention keys/values per layer and reuses the image keys/values; without it
(:meth:`FiberCaptionDecoder.full`, as the released code decodes) every step runs the whole
prefix and projects the image tokens again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGE_FEATURES",
    "CaptionMemory",
    "DecoderCache",
    "FiberCaptionDecoder",
    "build_image_adapters",
]

IMAGE_FEATURES = ("paired", "last_stage")
ImageFeatures = Literal["paired", "last_stage"]
KeyValue = tuple[Tensor, Tensor]


@dataclass
class CaptionMemory:
    """What the decoder computes once per batch of ``B`` images.

    Attributes:
        tokens: per fused layer, bottom up, the image tokens it attends to ``(B, M_k, C_k)``.
        keys_values: per fused layer, its image keys and values ``(B, H, M_k, Dt / H)`` each.
    """

    tokens: list[Tensor]
    keys_values: list[KeyValue]

    @property
    def batch_size(self) -> int:
        return self.tokens[0].shape[0]


@dataclass
class DecoderCache:
    """The decoding state of ``N`` sequences.

    Attributes:
        self_kv: per text layer, the self-attention keys and values of the tokens fed so far
            ``(N, H, t, Dt / H)`` each (``None`` before the first step).
        image_kv: per fused layer, the image keys and values of each sequence's image
            ``(N, H, M_k, Dt / H)`` (gathered once from the memory; reordering never moves a
            sequence to another image, so they never move).
        length: ``t``, tokens fed so far.
    """

    self_kv: list[KeyValue | None]
    image_kv: list[KeyValue]
    length: int = 0


def build_image_adapters(model: nn.Module, image_features: ImageFeatures) -> nn.ModuleList:
    """The adapters of ``image_features`` for a :class:`~vlparse.models.fiber.FiberModel`:
    none for ``paired``; for ``last_stage``, per fused pair a ``Linear(C_last -> C_stage)``
    where the pair's stage is narrower than the last, else ``Identity``."""
    if image_features not in IMAGE_FEATURES:
        raise ValueError(f"image_features must be one of {IMAGE_FEATURES}, got {image_features!r}")
    if image_features == "paired":
        return nn.ModuleList()
    last = model.image.out_dim
    std = model.cfg.text.initializer_range
    adapters = nn.ModuleList()
    for pair in model.pairs:
        if pair.image_width == last:
            adapters.append(nn.Identity())
            continue
        layer = nn.Linear(last, pair.image_width)
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
        adapters.append(layer)
    return adapters


def _self_attention(attn: nn.Module, h: Tensor, past: KeyValue | None,
                    training: bool) -> tuple[Tensor, KeyValue]:
    """Causal multi-head self-attention of a transformers ``BertSelfAttention`` /
    ``RobertaSelfAttention`` (its projections): ``h (N, T, Dt)`` after ``past`` keys/values of
    ``t`` earlier tokens -> context ``(N, T, Dt)`` and the keys/values of all ``t + T``."""
    n, length, _ = h.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size

    def split(x: Tensor) -> Tensor:
        return x.view(n, length, heads, size).transpose(1, 2)

    q, k, v = split(attn.query(h)), split(attn.key(h)), split(attn.value(h))
    earlier = 0
    if past is not None:
        earlier = past[0].shape[2]
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    mask = None
    if length > 1 and earlier:  # query i sees keys up to earlier + i
        rows = torch.arange(length, device=h.device)[:, None] + earlier
        mask = rows >= torch.arange(earlier + length, device=h.device)[None, :]
    drop = attn.dropout.p if training else 0.0
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=drop, is_causal=length > 1 and not earlier
    )
    return context.transpose(1, 2).reshape(n, length, heads * size), (k, v)


def _decoder_layer(layer: nn.Module, h: Tensor, past: KeyValue | None, cross: nn.Module | None,
                   image_kv: KeyValue | None, final_norm: bool) -> tuple[Tensor, KeyValue]:
    """One text layer in causal mode, with gated cross-attention to the image when ``cross``
    is given: ``(N, T, Dt)`` -> ``(N, T, Dt)`` and the layer's self-attention keys/values."""
    self_out = layer.attention.output
    context, kv = _self_attention(layer.attention.self, h, past, layer.training)
    a = self_out.dropout(self_out.dense(context))
    if cross is not None:
        a = a + cross.attend(a, *image_kv)[0]
    a = self_out.LayerNorm(a + h)
    out = layer.output.dropout(layer.output.dense(layer.intermediate(a))) + a
    if final_norm:
        out = layer.output.LayerNorm(out)
    return out, kv


class FiberCaptionDecoder:
    """The caption decoder over a :class:`~vlparse.models.fiber.FiberModel`'s modules (it owns
    none: the task model :class:`~vlparse.models.fiber.captioning.FiberForCaptioning` does).
    Implements :class:`~vlparse.models.generation.CaptionDecoder`.

    Args:
        model: the FIBER model.
        adapters: from :func:`build_image_adapters` for ``image_features``.
        bos_token_id, eos_token_id, pad_token_id: the start token (``[CLS]`` / ``<s>``), the
            end token (``[SEP]`` / ``</s>``) and padding.
    """

    def __init__(self, model: nn.Module, adapters: nn.ModuleList, image_features: ImageFeatures,
                 bos_token_id: int, eos_token_id: int, pad_token_id: int) -> None:
        self.model, self.adapters, self.image_features = model, adapters, image_features
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.pad_token_id = pad_token_id
        self.first_fused = model.pairs[0].text_layer

    # ------------------------------------------------------------------ image side

    def image_tokens(self, images: Tensor) -> list[Tensor]:
        """``(B, 3, S, S)`` -> per fused layer the tokens it attends to ``(B, M_k, C_k)``:
        the image backbone alone, block by block."""
        tower, pairs = self.model.image, self.model.pairs
        where = {(p.image_stage, p.image_block): k for k, p in enumerate(pairs)}
        inputs: list[Tensor | None] = [None] * len(pairs)
        x = tower.embed(images)
        for stage, depth in enumerate(tower.depths):
            for block in range(depth):
                x = tower.enter(x, stage, block)
                if (stage, block) in where:
                    inputs[where[(stage, block)]] = x.flatten(1, 2)
                x = tower.block(x, stage, block)
        if self.image_features == "paired":
            return inputs
        last = tower.finish(x, final_norm=self.model.cfg.fusion.final_norms == "keep")
        return [adapter(last) for adapter in self.adapters]

    def keys_values(self, tokens: list[Tensor]) -> list[KeyValue]:
        """Each fused layer's image keys and values from its tokens (its own projection)."""
        return [cross.keys_values(t) for cross, t in zip(self.model.t2i, tokens, strict=True)]

    def encode(self, images: Tensor) -> CaptionMemory:
        """The per-image memory of ``images (B, 3, S, S)``, computed once for decoding."""
        tokens = self.image_tokens(images)
        return CaptionMemory(tokens, self.keys_values(tokens))

    # ------------------------------------------------------------------ text side

    def logits(self, input_ids: Tensor, image_kv: list[KeyValue],
               cache: DecoderCache | None = None) -> tuple[Tensor, list[KeyValue]]:
        """Next-token logits ``(N, T, V)`` of ``input_ids (N, T)`` (after the ``cache.length``
        tokens of ``cache``, if given) and each layer's self-attention keys/values."""
        text = self.model.text
        earlier = cache.length if cache is not None else 0
        if earlier + input_ids.shape[1] > text.cfg.max_positions:
            raise ValueError(f"caption length {earlier + input_ids.shape[1]} exceeds the "
                             f"position table ({text.cfg.max_positions} tokens)")
        h = text.model.embeddings(input_ids=input_ids, cache_length=earlier)
        keep_last_norm = self.model.cfg.fusion.final_norms == "keep"
        layers, kvs = text.layers, []
        for i, layer in enumerate(layers):
            k = i - self.first_fused
            cross, kv = (self.model.t2i[k], image_kv[k]) if k >= 0 else (None, None)
            past = cache.self_kv[i] if cache is not None else None
            final = keep_last_norm or i < len(layers) - 1
            h, new = _decoder_layer(layer, h, past, cross, kv, final)
            kvs.append(new)
        return self.model.mlm_head(h), kvs

    def forward(self, input_ids: Tensor, memory: CaptionMemory) -> Tensor:
        """Teacher forcing: logits ``(B, T, V)`` of captions ``(B, T)`` (start token first),
        one per image of ``memory``."""
        return self.logits(input_ids, memory.keys_values)[0]

    # ------------------------------------------------------------------ protocol

    def init_cache(self, memory: CaptionMemory, rows: Tensor) -> DecoderCache:
        image_kv = [(k[rows], v[rows]) for k, v in memory.keys_values]
        return DecoderCache([None] * len(self.model.text.layers), image_kv, 0)

    def step(self, input_ids: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache]:
        logits, kvs = self.logits(input_ids, cache.image_kv, cache)
        return logits[:, -1], DecoderCache(kvs, cache.image_kv, cache.length + input_ids.shape[1])

    def reorder(self, cache: DecoderCache, index: Tensor) -> DecoderCache:
        self_kv = [None if kv is None else (kv[0].index_select(0, index),
                                            kv[1].index_select(0, index))
                   for kv in cache.self_kv]
        return DecoderCache(self_kv, cache.image_kv, cache.length)

    def full(self, input_ids: Tensor, memory: CaptionMemory, rows: Tensor) -> Tensor:
        """No cache: the whole prefix, the image keys/values projected again every call."""
        image_kv = self.keys_values([t[rows] for t in memory.tokens])
        return self.logits(input_ids, image_kv)[0]
