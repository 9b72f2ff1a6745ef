"""Gated cross-attention, the one module both fusion directions use.

``y = gate * proj(attention(query(norm(x)), key/value(context)))``: multi-head attention of every
query token over every context token (no windows; padded context tokens masked), an output
projection, and a learnable scalar gate that starts at 0, so that a freshly built fused backbone
computes exactly what its unimodal backbone computes. The caller adds ``y`` where its backbone
adds the self-attention output (``x + gate * y`` in the released code's notation).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` unless its weights
are asked for; then they are computed explicitly and returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GatedCrossAttention"]


class GatedCrossAttention(nn.Module):
    """Queries of width ``D`` attend to a context of width ``Dc``.

    Args:
        dim: ``D``, width of the queries and of the output.
        context_dim: ``Dc``, width of the context tokens (keys and values come from one
            ``Linear(Dc -> 2 D)``).
        num_heads: attention heads (``D`` must be divisible by it).
        query_norm: put a LayerNorm (epsilon ``eps``) on the queries before their projection.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        init_std: std of the truncated-normal initialisation of the linear layers (biases 0).

    Attributes:
        gate: the scalar gate, initialised to 0.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        query_norm: bool = False,
        eps: float = 1e-5,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GatedCrossAttention: width {dim} is not divisible by {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim, eps=eps) if query_norm else nn.Identity()
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        self.gate = nn.Parameter(torch.zeros(()))
        for layer in (self.query, self.key_value, self.proj):
            nn.init.trunc_normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)

    def keys_values(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``context (B, M, Dc)``: two ``(B, H, M, D / H)`` tensors. A caller
        that attends to one context many times (a caption decoder, once per generated token)
        computes them once."""
        b, m, _ = context.shape
        kv = self.key_value(context).view(b, m, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        context_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x`` to ``context``.

        Args:
            x: ``(B, N, D)`` queries.
            context: ``(B, M, Dc)`` keys and values.
            context_mask: ``(B, M)``, nonzero / ``True`` for real context tokens, 0 for padding
                (every row needs one real token); ``None``: all real.
            need_weights: also return the attention weights.

        Returns:
            ``(gate * y, weights)``: ``(B, N, D)`` and, when asked, ``(B, H, N, M)`` (rows sum
            to 1, before dropout), else ``None``.
        """
        k, v = self.keys_values(context)
        return self.attend(x, k, v, context_mask, need_weights)

    def attend(
        self,
        x: Tensor,
        keys: Tensor,
        values: Tensor,
        context_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward` on keys and values from :meth:`keys_values` (``(B, H, M, D / H)``
        each); same arguments and result."""
        b, n, d = x.shape
        q = self.query(self.norm(x)).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        mask = None
        if context_mask is not None:
            mask = context_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, M)
        drop = self.attn_drop if self.training else 0.0
        weights = None
        if need_weights:
            logits = (q * self.head_dim**-0.5) @ keys.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1)
            y = F.dropout(weights, drop, self.training) @ values
        else:
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=drop)
        y = self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))
        return self.gate * y, weights
