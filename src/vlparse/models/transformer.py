"""The multi-modal Transformer: BERT-style post-LayerNorm encoder layers.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) unless
attention weights are asked for; then it is computed explicitly as ``softmax(QK^T / sqrt(d))``
with padded keys masked, and the weights are returned. Both paths give the same outputs.
Sub-module names mirror BERT's so :func:`vlparse.models.weights.map_bert_state_dict` is a renaming.

Padded keys are hidden by one additive float bias built once per forward
(:func:`key_padding_bias`), not by a boolean mask in every layer. What the CUDA kernels of
``scaled_dot_product_attention`` accept (torch 2.11): the flash kernel takes no mask at all (only
``is_causal``), bf16/fp16, head size a multiple of 8 up to 256, dropout allowed; the
memory-efficient kernel takes an additive bias (a boolean mask is first turned into a new float
tensor, in every call), but wants every stride of the bias but the last to be a multiple of 8 and
otherwise copies it into a padded tensor, again in every call; under autocast a bias of another
dtype than the autocast dtype is cast, in every call. :func:`key_padding_bias` makes the bias once,
in the dtype the kernel computes in, inside a buffer whose rows are padded to a multiple of 8, so
each layer hands it to the kernel as it is. ``benchmarks/gpu_evidence.py`` records which kernel
each kind of mask gets on the GPU at hand.
The query, key and value projections run as one matrix product (their weights concatenated), one
kernel instead of three.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["EncoderLayer", "MultiModalEncoder", "init_bert_weights", "key_padding_bias"]

BIAS_ALIGN = 8
"""Strides of the attention bias are kept multiples of this (the memory-efficient kernel's
alignment)."""


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype matrix products on ``x`` run in: the autocast dtype when autocast is on for its
    device, else ``x.dtype``.

    The meta device has no autocast (asking whether it is on there raises). That is checked by
    comparing the device type, not with ``torch.amp.is_autocast_available``: Dynamo reported
    that call untraceable when the pre-training step was compiled on CUDA, and a call it cannot
    trace breaks the compiled graph."""
    kind = x.device.type
    if kind != "meta" and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def key_padding_bias(key_mask: Tensor, dtype: torch.dtype, align: int = BIAS_ALIGN) -> Tensor:
    """Additive attention bias of a key-padding mask.

    Args:
        key_mask: ``(B, N)``, true (non-zero) for keys that may be attended to.
        dtype: the dtype of the bias (that of the attention scores, e.g. the autocast dtype).
        align: the bias is a view of a ``(B, 1, 1, N')`` buffer with ``N'`` the next multiple of
            ``align``, so that every stride but the last is a multiple of ``align``.

    Returns:
        ``(B, 1, 1, N)``: 0 on keys to attend to, the lowest finite value of ``dtype`` on the
        others (their softmax weight underflows to exactly 0; a row with no key left stays finite).
    """
    if key_mask.dim() != 2:
        raise ValueError(f"key_padding_bias: key_mask must be (B, N), got {tuple(key_mask.shape)}")
    b, n = key_mask.shape
    width = -(-n // align) * align
    buf = torch.zeros(b, 1, 1, width, dtype=dtype, device=key_mask.device)
    view = buf[..., :n]
    view.masked_fill_(~key_mask.bool()[:, None, None, :], torch.finfo(dtype).min)
    return view


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

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``(B, H, N, d)`` from one matrix product (three when the
        projections are not plain ``nn.Linear``, e.g. FP8 layers of
        :func:`vlparse.models.float8.convert_to_float8`)."""
        projections = (self.query, self.key, self.value)
        if any(type(p) is not nn.Linear for p in projections):
            return tuple(self._heads(p(x)) for p in projections)
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        q, k, v = F.linear(x, weight, bias).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(
        self, x: Tensor, attn_bias: Tensor, output_attentions: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Args:
            x: ``(B, N, D)``.
            attn_bias: ``(B, 1, 1, N)`` additive key bias (:func:`key_padding_bias`): 0 on keys
                that may be attended to, a large negative value on padding.
            output_attentions: compute and return the weights ``(B, H, N, N)``.

        Returns:
            ``(B, N, D)`` and the weights or ``None``.
        """
        b, n, d = x.shape
        q, k, v = self._qkv(x)
        p_drop = self.attention_dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim) + attn_bias
            weights = scores.softmax(dim=-1)  # exactly 0 on masked keys
            ctx = F.dropout(weights, p_drop, self.training) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p_drop)
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
        bias = key_padding_bias(attention_mask, compute_dtype(x))
        hidden: list[Tensor] = [x] if output_hidden_states else []
        attns: list[Tensor] = []
        use_ckpt = self.grad_checkpointing and self.training and not output_attentions
        for layer in self.layers:
            if use_ckpt and torch.is_grad_enabled():
                x, w = checkpoint(layer, x, bias, False, use_reentrant=False)
            else:
                x, w = layer(x, bias, output_attentions)
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
