"""Output dataclasses of vlparse models. Tensors that were not asked for are ``None``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class VisualOutput:
    """What a visual embedder returns.

    Attributes:
        tokens: ``(B, m, c)`` visual tokens, row-major over the final ``grid_size`` grid.
        grid_size: ``(h, w)`` of the final feature grid, ``h * w == m``.
        attention: ``(B, m, m)`` last-layer attention of the parser, heads averaged (row = query,
            each row sums to 1), only when ``output_attentions=True`` and the embedder has one.
    """

    tokens: Tensor
    grid_size: tuple[int, int]
    attention: Tensor | None = None


@dataclass
class FusionOutput:
    """What the multi-modal Transformer returns for a sequence ``[CLS] V [SEP] W``.

    Attributes:
        last_hidden_state: ``(B, N, D)`` with ``N = 2 + m + L``.
        attention_mask: ``(B, N)`` 1 for real tokens, 0 for padding.
        num_visual: ``m``; visual tokens sit at positions ``1 .. m``, ``[SEP]`` at ``m + 1``,
            text ``W`` at ``m + 2 ..``.
        hidden_states: ``L_layers + 1`` tensors ``(B, N, D)`` (embeddings first), on request.
        attentions: ``L_layers`` tensors ``(B, H, N, N)`` (row = query), on request.
    """

    last_hidden_state: Tensor
    attention_mask: Tensor
    num_visual: int
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None

    @property
    def cls(self) -> Tensor:
        """``(B, D)`` the ``[CLS]`` state."""
        return self.last_hidden_state[:, 0]

    @property
    def visual(self) -> Tensor:
        """``(B, m, D)`` states at the visual positions."""
        return self.last_hidden_state[:, 1 : 1 + self.num_visual]

    @property
    def text(self) -> Tensor:
        """``(B, L, D)`` states at the text positions ``W``."""
        return self.last_hidden_state[:, 2 + self.num_visual :]

    @property
    def modality(self) -> Tensor:
        """``(B, N)`` long: 1 vision, 0 language (``[CLS]``, ``[SEP]``), -1 padding."""
        mod = torch.zeros_like(self.attention_mask, dtype=torch.long)
        mod[:, 1 : 1 + self.num_visual] = 1
        return mod.masked_fill(self.attention_mask == 0, -1)
