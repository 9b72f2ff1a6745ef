"""The pairing rule: the last F image blocks across stages with the last F text layers, checked
against pairings written out by hand (FIBER-B's is the one the released code hard-wires)."""

from __future__ import annotations

import pytest

from vlparse.models.fiber import fusion_pairs


def _table(depths, widths, heads, layers, fused):
    return [
        (p.image_stage, p.image_block, p.text_layer, p.image_width, p.image_heads)
        for p in fusion_pairs(depths, widths, heads, layers, fused)
    ]


def test_fiber_base_pairs_stage3_with_text_7_to_10_and_stage4_with_11_12() -> None:
    got = _table([2, 2, 18, 2], [128, 256, 512, 1024], [4, 8, 16, 32], 12, 6)
    # 1-based: stage 3 blocks 15-18 with text layers 7-10, stage 4 blocks 1-2 with 11-12
    assert got == [
        (2, 14, 6, 512, 16), (2, 15, 7, 512, 16), (2, 16, 8, 512, 16), (2, 17, 9, 512, 16),
        (3, 0, 10, 1024, 32), (3, 1, 11, 1024, 32),
    ]


def test_swin_small_depths_with_four_fused() -> None:
    got = _table([2, 2, 6, 2], [96, 192, 384, 768], [3, 6, 12, 24], 12, 4)
    assert got == [(2, 4, 8, 384, 12), (2, 5, 9, 384, 12), (3, 0, 10, 768, 24),
                   (3, 1, 11, 768, 24)]


def test_two_stages_with_six_text_layers() -> None:
    got = _table([2, 2], [48, 96], [2, 4], 6, 2)
    assert got == [(1, 0, 4, 96, 4), (1, 1, 5, 96, 4)]


def test_fusion_deeper_than_the_last_stage_crosses_two_stages() -> None:
    got = _table([1, 1, 2], [32, 64, 128], [1, 2, 4], 6, 4)
    assert got == [(0, 0, 2, 32, 1), (1, 0, 3, 64, 2), (2, 0, 4, 128, 4), (2, 1, 5, 128, 4)]


def test_every_block_fused_when_f_equals_the_image_depth() -> None:
    got = _table([2, 2], [8, 16], [1, 2], 4, 4)
    assert [(s, b, t) for s, b, t, _, _ in got] == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]


@pytest.mark.parametrize("fused", [0, 5])
def test_f_out_of_range_is_refused(fused: int) -> None:
    with pytest.raises(ValueError, match="fused pairs"):
        fusion_pairs([2, 2], [8, 16], [1, 2], 6, fused)  # 4 image blocks


def test_lists_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per stage"):
        fusion_pairs([2, 2], [8], [1, 2], 4, 2)
