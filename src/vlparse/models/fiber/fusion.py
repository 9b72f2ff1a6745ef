"""The fused forward: both backbones run side by side and update at once in the fused pairs.

The image blocks below the first fused one and the text layers below the first fused one run as
their libraries run them. Then, pair by pair, the image block and the text layer each read the
other stream's states from before the pair: the image block attends to the text layer's input
states (padding masked), the text layer to the image block's input tokens (after the patch merging
that opens a stage, so a stage-4 block's text partner sees stage-4 tokens). With
``final_norms=False`` the fused path ends without Swin's final LayerNorm and without the last text
layer's closing LayerNorm, as the released code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from vlparse.models.fiber.image_tower import SwinTower
from vlparse.models.fiber.pairing import FusionPair
from vlparse.models.fiber.text_tower import TextTower

__all__ = ["FusedStates", "run_fused"]


@dataclass
class FusedStates:
    """``text (B, L, Dt)``, ``image (B, N, C)`` and, on request, the cross-attention weights of
    each pair (see :class:`~vlparse.models.fiber.outputs.FiberOutput`)."""

    text: Tensor
    image: Tensor
    i2t_weights: tuple[Tensor, ...] | None = None
    t2i_weights: tuple[Tensor, ...] | None = None


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
    """Run the fused backbones.

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
    blocks = [(s, b) for s, depth in enumerate(image_tower.depths) for b in range(depth)]
    x = image_tower.embed(images)
    for stage, block in blocks[: len(blocks) - len(pairs)]:
        x = image_tower.block(image_tower.enter(x, stage, block), stage, block)
    h, self_mask = text_tower.embed(input_ids, attention_mask)
    for index in range(pairs[0].text_layer):
        h = text_tower.layer(h, index, self_mask)
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
    return FusedStates(
        text=h,
        image=image_tower.finish(x, final_norm=final_norms),
        i2t_weights=tuple(i2t_weights) if need_weights else None,
        t2i_weights=tuple(t2i_weights) if need_weights else None,
    )
