"""The fused forward: both backbones run side by side and update at once in the fused pairs.

The image blocks below the first fused one and the text layers below the first fused one run as
their libraries run them (the *bottoms*, :func:`image_bottom` and :func:`text_bottom`). Then,
pair by pair, the image block and the text layer each read the other stream's states from
before the pair (:func:`fused_top`): the image block attends to the text layer's input states
(padding masked), the text layer to the image block's input tokens (after the patch merging that
opens a stage, so a stage-4 block's text partner sees stage-4 tokens). With
``final_norms=False`` the fused path ends without Swin's final LayerNorm and without the last text
layer's closing LayerNorm, as the released code does. :func:`unfused_top` runs the same top
blocks and layers without cross-attention: bottom and unfused top together are the dual
encoder's towers, operation for operation.

A bottom does not depend on the other modality, so one bottom serves every fused row that pairs
its image (or text) with something: the pre-training passes compute each image's and each text's
bottom once (:mod:`~vlparse.models.fiber.pretraining`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from vlparse.models.fiber.image_tower import SwinTower
from vlparse.models.fiber.pairing import FusionPair
from vlparse.models.fiber.text_tower import TextTower

__all__ = ["FusedStates", "image_bottom", "text_bottom", "fused_top", "unfused_top", "run_fused"]


@dataclass
class FusedStates:
    """``text (B, L, Dt)``, ``image (B, N, C)`` and, on request, the cross-attention weights of
    each pair (see :class:`~vlparse.models.fiber.outputs.FiberOutput`)."""

    text: Tensor
    image: Tensor
    i2t_weights: tuple[Tensor, ...] | None = None
    t2i_weights: tuple[Tensor, ...] | None = None


def image_bottom(tower: SwinTower, pairs: Sequence[FusionPair], images: Tensor,
                 stage_outputs: list[Tensor] | None = None) -> Tensor:
    """``(B, 3, S, S)`` -> ``(B, H, W, C)``: the patch embedding and the image blocks below the
    first fused one (the first fused block's input, before the patch merging that opens its
    stage when it is a stage's first block). ``stage_outputs``, when given, receives the
    ``(B, H_s, W_s, C_s)`` output of every stage that ends below the fused blocks."""
    blocks = [(s, b) for s, depth in enumerate(tower.depths) for b in range(depth)]
    x = tower.embed(images)
    for stage, block in blocks[: len(blocks) - len(pairs)]:
        x = tower.block(tower.enter(x, stage, block), stage, block)
        if stage_outputs is not None and block == tower.depths[stage] - 1:
            stage_outputs.append(x)
    return x


def text_bottom(tower: TextTower, pairs: Sequence[FusionPair], input_ids: Tensor,
                attention_mask: Tensor) -> Tensor:
    """``(B, L)`` ids and mask -> ``(B, L, Dt)``: the embeddings and the text layers below the
    first fused one."""
    h, self_mask = tower.embed(input_ids, attention_mask)
    for index in range(pairs[0].text_layer):
        h = tower.layer(h, index, self_mask)
    return h


def fused_top(
    image_tower: SwinTower,
    text_tower: TextTower,
    pairs: Sequence[FusionPair],
    i2t: nn.ModuleList,
    t2i: nn.ModuleList,
    x: Tensor,
    h: Tensor,
    attention_mask: Tensor,
    final_norms: bool = True,
    need_weights: bool = False,
    stage_outputs: list[Tensor] | None = None,
) -> FusedStates:
    """The fused pairs on the bottoms' states: ``x (B, H, W, C)`` from :func:`image_bottom`,
    ``h (B, L, Dt)`` from :func:`text_bottom` with its padding mask ``(B, L)``.
    ``stage_outputs``, when given, receives the ``(B, H_s, W_s, C_s)`` output of every image
    stage that ends in a fused block (before the final LayerNorm)."""
    if x.shape[0] != h.shape[0]:
        raise ValueError(f"one text per image: {x.shape[0]} images but {h.shape[0]} texts")
    self_mask = text_tower.self_attention_mask(h, attention_mask)
    i2t_weights, t2i_weights = [], []
    for k, pair in enumerate(pairs):
        x_in = image_tower.enter(x, pair.image_stage, pair.image_block)
        x, wi = image_tower.fused_block(
            x_in, pair.image_stage, pair.image_block, i2t[k], h, attention_mask, need_weights
        )
        last = k == len(pairs) - 1
        h, wt = text_tower.fused_layer(
            h, pair.text_layer, self_mask, t2i[k], x_in.flatten(1, 2), need_weights,
            final_norm=final_norms or not last,
        )
        i2t_weights.append(wi)
        t2i_weights.append(wt)
        if stage_outputs is not None and pair.image_block == image_tower.depths[
                pair.image_stage] - 1:
            stage_outputs.append(x)
    return FusedStates(
        text=h,
        image=image_tower.finish(x, final_norm=final_norms),
        i2t_weights=tuple(i2t_weights) if need_weights else None,
        t2i_weights=tuple(t2i_weights) if need_weights else None,
    )


def unfused_top(image_tower: SwinTower, text_tower: TextTower, pairs: Sequence[FusionPair],
                x: Tensor | None = None, h: Tensor | None = None,
                attention_mask: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
    """The top blocks and layers without cross-attention, each stream on its own: image tokens
    ``(B, N, C)`` after the final LayerNorm from ``x``, text states ``(B, L, Dt)`` from ``h``
    (with ``attention_mask``); ``None`` for a stream not given."""
    image = text = None
    if x is not None:
        for pair in pairs:
            stage, block = pair.image_stage, pair.image_block
            x = image_tower.block(image_tower.enter(x, stage, block), stage, block)
        image = image_tower.finish(x)
    if h is not None:
        self_mask = text_tower.self_attention_mask(h, attention_mask)
        for pair in pairs:
            h = text_tower.layer(h, pair.text_layer, self_mask)
        text = h
    return image, text


def run_fused(
    image_tower: SwinTower,
    text_tower: TextTower,
    pairs: Sequence[FusionPair],
    i2t: nn.ModuleList,
    t2i: nn.ModuleList,
    images: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    final_norms: bool = True,
    need_weights: bool = False,
) -> FusedStates:
    """Run the fused backbones: the bottoms, then :func:`fused_top`.

    Args:
        pairs: the fused pairs, bottom up (:func:`~vlparse.models.fiber.fusion_pairs`); they must
            be the last image blocks and the last text layers.
        i2t: one image-to-text cross-attention per pair. t2i: one text-to-image per pair.
        images: ``(B, 3, S, S)``. input_ids, attention_mask: ``(B, L)``.
        final_norms: end with the final LayerNorms of the unimodal path.
        need_weights: return the cross-attention weights.
    """
    if images.shape[0] != input_ids.shape[0]:
        raise ValueError(
            f"one text per image: {images.shape[0]} images but {input_ids.shape[0]} texts"
        )
    x = image_bottom(image_tower, pairs, images)
    h = text_bottom(text_tower, pairs, input_ids, attention_mask)
    return fused_top(image_tower, text_tower, pairs, i2t, t2i, x, h, attention_mask,
                     final_norms, need_weights)
