"""Input embeddings of the multi-modal Transformer.

Parameter names follow BERT's (``word_embeddings``, ``position_embeddings``,
``token_type_embeddings``) so that :func:`vlparse.models.weights.map_bert_state_dict` is a
plain renaming. The token-type table has two rows, 0 = language, 1 = vision; it lives in
:class:`TextEmbedding` and the visual side reads row 1 from it, so BERT's
``token_type_embeddings`` initialise both modalities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sine_position_embedding_2d", "VisualEmbedding", "TextEmbedding"]

LANGUAGE_TYPE = 0
VISION_TYPE = 1


def sine_position_embedding_2d(
    h: int, w: int, dim: int, temperature: float = 10000.0
) -> Tensor:
    """Fixed 2-D sine position embedding (DETR-style) of an ``h x w`` grid, row-major.

    Coordinates are cell centres normalised to ``(0, 2*pi)`` (``(y + 0.5) / h * 2*pi``), so grids
    of different sizes cover the same range. The first ``dim / 2`` channels encode ``y``, the
    last ``dim / 2`` encode ``x``; within each half the ``sin`` terms of all frequencies come
    first, then the ``cos`` terms (concatenated, not interleaved). Frequency ``k`` of
    ``dim / 4`` is ``temperature ** (-k / (dim / 4))``.

    Returns:
        ``(h * w, dim)`` float32.
    """
    if dim % 4 != 0:
        raise ValueError(f"sine_position_embedding_2d: dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = temperature ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 * math.pi
    ay = ys[:, None] * freqs[None, :]  # (h, quarter)
    ax = xs[:, None] * freqs[None, :]  # (w, quarter)
    ey = torch.cat([ay.sin(), ay.cos()], dim=-1)  # (h, dim/2)
    ex = torch.cat([ax.sin(), ax.cos()], dim=-1)  # (w, dim/2)
    grid = torch.cat(
        [ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)], dim=-1
    )
    return grid.reshape(h * w, dim).float()


class VisualEmbedding(nn.Module):
    """Visual tokens into the Transformer width: ``LN(Linear(v)) + pos_2d + type[vision]``.

    Args:
        in_dim: ``c``, width of the visual tokens.
        hidden: ``D``, Transformer width.
        grid_size: ``(h, w)`` of the visual token grid (``m = h * w``).
        eps: LayerNorm epsilon.
        dropout: dropout on the result.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        grid_size: tuple[int, int],
        eps: float = 1e-12,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.proj = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "position_embeddings",
            sine_position_embedding_2d(*self.grid_size, hidden),
            persistent=False,
        )

    def forward(
        self,
        features: Tensor,
        type_embedding: Tensor,
        visual_mask: Tensor | None = None,
        mask_token: Tensor | None = None,
    ) -> Tensor:
        """Embed visual tokens.

        Args:
            features: ``(B, m, c)`` visual tokens.
            type_embedding: ``(D,)`` the vision row of the shared token-type table.
            visual_mask: ``(B, m)`` bool; ``True`` rows are replaced by ``mask_token`` after the
                projection and LayerNorm, before the position and type embeddings.
            mask_token: ``(D,)`` the learned mask embedding (needed when ``visual_mask`` is set).

        Returns:
            ``(B, m, D)``.
        """
        m = self.position_embeddings.shape[0]
        if features.dim() != 3 or features.shape[1] != m:
            raise ValueError(
                f"VisualEmbedding: expected features (B, {m}, c) for grid {self.grid_size}, "
                f"got {tuple(features.shape)}"
            )
        x = self.norm(self.proj(features))
        if visual_mask is not None:
            if mask_token is None:
                raise ValueError("VisualEmbedding: visual_mask given without a mask_token")
            if visual_mask.shape != x.shape[:2]:
                raise ValueError(
                    f"visual_mask must be (B, m) = {tuple(x.shape[:2])}, "
                    f"got {tuple(visual_mask.shape)}"
                )
            x = torch.where(visual_mask.bool()[..., None], mask_token.to(x.dtype), x)
        x = x + self.position_embeddings.to(x.dtype) + type_embedding.to(x.dtype)
        return self.dropout(x)


class TextEmbedding(nn.Module):
    """BERT embeddings: ``LN(word + position + token_type)`` then dropout.

    Args:
        vocab_size: ``V``.
        hidden: ``D``.
        max_positions: rows of the position table.
        eps: LayerNorm epsilon.
        dropout: dropout probability.
        type_vocab_size: rows of the token-type table (0 language, 1 vision).
        init_std: std of the normal initialisation of the three tables (BERT: 0.02).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        max_positions: int,
        eps: float = 1e-12,
        dropout: float = 0.1,
        type_vocab_size: int = 2,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        for emb in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(emb.weight, std=init_std)

    @property
    def max_positions(self) -> int:
        return self.position_embeddings.num_embeddings

    def no_weight_decay(self) -> set[str]:
        """The position and token-type tables: learned offsets, not weights to shrink (timm's
        convention, read by :func:`vlparse.models.base.role_param_groups`)."""
        return {"position_embeddings.weight", "token_type_embeddings.weight"}

    def type_embedding(self, token_type: int) -> Tensor:
        """``(D,)`` one row of the token-type table."""
        return self.token_type_embeddings.weight[token_type]

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Embed token ids.

        Args:
            input_ids: ``(B, L)`` long.
            position_ids: ``(B, L)`` or ``(L,)`` long; default ``0 .. L-1``.
            token_type_ids: ``(B, L)`` long; default all 0 (language).

        Returns:
            ``(B, L, D)``.
        """
        length = input_ids.shape[-1]
        if position_ids is None:
            if length > self.max_positions:
                raise ValueError(
                    f"TextEmbedding: {length} tokens but the position table has "
                    f"{self.max_positions} rows; shorten the text (text.max_text_len)"
                )
            position_ids = torch.arange(length, device=input_ids.device)
        if token_type_ids is None:
            types = self.token_type_embeddings.weight[LANGUAGE_TYPE]
        else:
            types = self.token_type_embeddings(token_type_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) + types
        return self.dropout(self.norm(x))
