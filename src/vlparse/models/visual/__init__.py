"""Visual embedders: modules mapping images ``(B, 3, H, W)`` to tokens ``(B, m, c)``.

Every embedder has ``forward(images, output_attentions=False) -> VisualOutput`` and the
properties ``num_tokens``, ``out_dim``, ``grid_size`` and ``has_attention``.
"""

from __future__ import annotations

from torch import nn

from vlparse.config import VisualConfig
from vlparse.models.visual.swin_parser import SwinParser

__all__ = ["SwinParser", "build_visual_embedder"]


def build_visual_embedder(cfg: VisualConfig) -> nn.Module:
    """Build the visual embedder named by ``cfg.kind`` (randomly initialised, no I/O)."""
    if cfg.kind == "swin":
        return SwinParser(cfg)
    raise ValueError(f"model.visual.kind: unknown embedder '{cfg.kind}'; known: swin")
