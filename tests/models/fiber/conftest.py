"""Fixtures of the FIBER tests: configs small enough for a shared 2-core CPU.

The default test model has a two-stage Swin on 40 px images with 4-pixel patches (grids 10x10 and
5x5, widths 8 and 16) and window 4, so both stages have several windows, shifted windows in every
second block, and padding (10 and 5 are not multiples of 4); a 4-layer, 16-wide text backbone;
and ``F = 3`` fused pairs: stage 0 block 1 with text layer 1, both blocks of stage 1 with layers 2
and 3 (0-based), leaving one unfused image block and one unfused text layer below them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vlparse.config.fiber import (
    FiberFusionConfig,
    FiberModelConfig,
    FiberTextConfig,
    FiberVisualConfig,
)

IMAGE = 40
VOCAB = 50


def small_config(kind: str = "bert", fused: int = 3, **fusion) -> FiberModelConfig:
    visual = FiberVisualConfig(
        arch="swin_tiny_patch4_window7_224", image_size=IMAGE, window_size=4, patch_size=4,
        embed_dim=8, depths=[2, 2], num_heads=[1, 2], drop_path_rate=0.0, pretrained=None,
    )
    roberta = kind == "roberta"
    text = FiberTextConfig(
        kind=kind, tokenizer="bert-base-uncased", pretrained=None, vocab_size=VOCAB,
        hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32,
        max_position_embeddings=34 if roberta else 32, type_vocab_size=1 if roberta else 2,
        pad_token_id=1 if roberta else 0, layer_norm_eps=1e-5 if roberta else 1e-12,
        dropout=0.0, attention_dropout=0.0, max_text_len=16,
    )
    return FiberModelConfig(
        name="test", visual=visual, text=text,
        fusion=FiberFusionConfig(num_layers=fused, **fusion), hidden_size=12, itc_dim=6,
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def make_config() -> Callable[..., FiberModelConfig]:
    """``make_config(kind="bert", fused=3, **fusion_options)``."""
    return small_config


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images and two texts; the second text is padded after 5 of its 9 tokens."""
    images = torch.randn(2, 3, IMAGE, IMAGE)
    ids = torch.randint(3, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = 1  # a pad id of either kind; masked anyway
    return images, ids, mask


def _set_gates(model, i2t: float, t2i: float) -> None:
    with torch.no_grad():
        for a, b in zip(model.i2t, model.t2i, strict=True):
            a.gate.fill_(i2t)
            b.gate.fill_(t2i)


@pytest.fixture
def set_gates() -> Callable[..., None]:
    """``set_gates(model, i2t, t2i)``: every image-to-text gate to ``i2t``, every text-to-image
    gate to ``t2i``."""
    return _set_gates
