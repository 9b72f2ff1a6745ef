"""The multi-modal Transformer: BERT-style post-LayerNorm encoder layers.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) unless
attention weights are asked for; then it is computed explicitly as ``softmax(QK^T / sqrt(d))``
with padded keys masked, and the weights are returned. Both paths give the same outputs.
Sub-module names mirror BERT's so :func:`vlparse.models.weights.map_bert_state_dict` is a renaming.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["EncoderLayer", "MultiModalEncoder", "init_bert_weights"]


class EncoderLayer(nn.Module):
    """One post-LN layer: ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``.

    BERT names: ``query/key/value`` = ``attention.self.*``, ``attn_out`` / ``attn_norm`` =
    ``attention.output.{dense,LayerNorm}``, ``ffn_in`` = ``intermediate.dense``, ``ffn_out`` /
    ``ffn_norm`` = ``output.{dense,LayerNorm}``.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        intermediate: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if hidden % num_heads != 0:
            raise ValueError(f"hidden size {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = attention_dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)

    def forward(
        self, x: Tensor, key_mask: Tensor, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Args:
            x: ``(B, N, D)``.
            key_mask: ``(B, N)`` bool, ``True`` for keys that may be attended to.
            output_attentions: compute and return the weights ``(B, H, N, N)``.

        Returns:
            ``(B, N, D)`` and the weights or ``None``.
        """
        b, n, d = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        p_drop = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)  # exactly 0 on masked keys
            ctx = F.dropout(weights, p_drop, self.training) @ v
        else:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=p_drop
            )
        ctx = ctx.transpose(1, 2).reshape(b, n, d)
        x = self.attn_norm(x + self.dropout(self.attn_out(ctx)))
        h = self.ffn_out(F.gelu(self.ffn_in(x)))
        x = self.ffn_norm(x + self.dropout(h))
        return x, weights


class MultiModalEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` (the paper's multi-modal Transformer MT).

    Args:
        hidden: ``D``.
        num_layers: number of layers.
        num_heads: attention heads ``H``.
        intermediate: FFN width.
        dropout: hidden dropout.
        attention_dropout: dropout on attention weights.
        eps: LayerNorm epsilon.
        init_std: std of the normal initialisation of every Linear weight (BERT: 0.02).
    """

    def __init__(
        self,
        hidden: int,
        num_layers: int,
        num_heads: int,
        intermediate: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        eps: float = 1e-12,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, num_heads, intermediate, dropout, attention_dropout, eps)
            for _ in range(num_layers)
        )
        self.grad_checkpointing = False
        self.apply(partial(init_bert_weights, std=init_std))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer in the backward pass (training only, not with attentions)."""
        self.grad_checkpointing = enable

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        """Encode a sequence.

        Args:
            x: ``(B, N, D)`` embeddings.
            attention_mask: ``(B, N)`` 1 for real tokens, 0 for padding (keys never attended).
            output_attentions: return per-layer weights ``(B, H, N, N)``.
            output_hidden_states: return the input and every layer's output ``(B, N, D)``.

        Returns:
            ``(last (B, N, D), hidden_states | None, attentions | None)``.
        """
        if attention_mask.shape != x.shape[:2]:
            raise ValueError(
                f"attention_mask must be (B, N) = {tuple(x.shape[:2])}, "
                f"got {tuple(attention_mask.shape)}"
            )
        key_mask = attention_mask.bool()
        hidden: list[Tensor] = [x] if output_hidden_states else []
        attns: list[Tensor] = []
        use_ckpt = self.grad_checkpointing and self.training and not output_attentions
        for layer in self.layers:
            if use_ckpt and torch.is_grad_enabled():
                x, w = checkpoint(layer, x, key_mask, False, use_reentrant=False)
            else:
                x, w = layer(x, key_mask, output_attentions)
            if output_hidden_states:
                hidden.append(x)
            if w is not None:
                attns.append(w)
        return (
            x,
            tuple(hidden) if output_hidden_states else None,
            tuple(attns) if output_attentions else None,
        )


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation of one module: normal(0, ``std``) Linear weights, zero biases, unit
    LayerNorm (use with ``Module.apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
