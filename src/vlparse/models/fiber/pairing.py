"""Which image block fuses with which text layer: one rule over the configured depths.

The image backbone's blocks are counted across its stages in order (stage 0 block 0, stage 0
block 1, ..., the last block of the last stage). The last ``F`` image blocks pair, in order, with
the last ``F`` text layers. A pair's keys and values on the text side come from the image block's
input tokens, whose width is its stage's width; on the image side, from the text layer's input
states. FIBER-B (Swin depths 2-2-18-2, 12 text layers, ``F = 6``) so pairs the last 4 blocks of
stage 3 (512 wide) with text layers 7-10 and both blocks of stage 4 (1024 wide) with 11-12
(1-based), the pairing the released code hard-wires for that one size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FusionPair", "fusion_pairs"]


@dataclass(frozen=True)
class FusionPair:
    """One fused image block and the text layer it runs beside (all indices 0-based).

    Attributes:
        image_stage: the Swin stage of the block.
        image_block: the block's index within its stage (0 = the block right after the stage's
            patch merging, which then runs before the pair).
        text_layer: the text layer's index.
        image_width: the stage's width ``C``: the image-side query width and the width of the
            image tokens the text layer attends to.
        image_heads: the stage's head count, used by the image-to-text cross-attention.
    """

    image_stage: int
    image_block: int
    text_layer: int
    image_width: int
    image_heads: int


def fusion_pairs(
    depths: Sequence[int],
    widths: Sequence[int],
    heads: Sequence[int],
    num_text_layers: int,
    num_fused: int,
) -> list[FusionPair]:
    """The ``F`` fused pairs, from the bottom one up.

    Args:
        depths: blocks per image stage, e.g. ``[2, 2, 18, 2]``.
        widths: width of each stage, e.g. ``[128, 256, 512, 1024]``.
        heads: attention heads of each stage, e.g. ``[4, 8, 16, 32]``.
        num_text_layers: layers of the text backbone.
        num_fused: ``F``, fused pairs (>= 1).

    Raises:
        ValueError: the lists differ in length, or ``F`` exceeds the image blocks or the text
            layers.
    """
    if not len(depths) == len(widths) == len(heads):
        raise ValueError(
            f"fusion_pairs: depths {list(depths)}, widths {list(widths)} and heads {list(heads)} "
            "need one entry per stage"
        )
    blocks = [(stage, b) for stage, depth in enumerate(depths) for b in range(depth)]
    if not 1 <= num_fused <= min(len(blocks), num_text_layers):
        raise ValueError(
            f"fusion_pairs: {num_fused} fused pairs, but the image backbone has {len(blocks)} "
            f"blocks and the text backbone {num_text_layers} layers"
        )
    first_text = num_text_layers - num_fused
    return [
        FusionPair(stage, b, first_text + k, int(widths[stage]), int(heads[stage]))
        for k, (stage, b) in enumerate(blocks[len(blocks) - num_fused:])
    ]
