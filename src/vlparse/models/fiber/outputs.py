"""Output dataclasses of the FIBER model (BridgeTower's names where they exist). Tensors that were
not asked for are ``None``."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["FiberImageOutput", "FiberTextOutput", "FiberOutput"]


@dataclass
class FiberImageOutput:
    """The image backbone alone (fusion off).

    Attributes:
        last_hidden_state: ``(B, N, C)`` tokens of the last stage (after the final LayerNorm),
            row-major over the last grid.
        embeds: ``(B, E)`` L2-normalised ITC embeddings.
    """

    last_hidden_state: Tensor
    embeds: Tensor


@dataclass
class FiberTextOutput:
    """The text backbone alone (fusion off).

    Attributes:
        last_hidden_state: ``(B, L, Dt)`` last hidden states.
        embeds: ``(B, E)`` L2-normalised ITC embeddings.
    """

    last_hidden_state: Tensor
    embeds: Tensor


@dataclass
class FiberOutput:
    """What :meth:`~vlparse.models.fiber.FiberModel.forward` returns.

    Attributes:
        text_features: ``(B, L, D)`` text states through the cross-modal text transform.
        image_features: ``(B, N, D)`` image tokens through the cross-modal image transform.
        pooler_output: ``(B, 2 D)`` text pooled (first token) and image pooled (mean token),
            concatenated: the fused feature the ITM head and task heads read.
        text_hidden_state: ``(B, L, Dt)`` the text backbone's last states (the MLM head reads
            them).
        image_hidden_state: ``(B, N, C)`` the image backbone's last tokens.
        attention_mask: ``(B, L)`` the text mask given.
        fused: whether the two backbones ran with cross-attention.
        text_embeds: ``(B, E)`` ITC embeddings of the text, fusion off only.
        image_embeds: ``(B, E)`` ITC embeddings of the image, fusion off only.
        cross_attentions_i2t: per fused pair, ``(B, H_k, N_k, L)`` image-to-text weights
            (``N_k`` tokens of the pair's stage), with ``output_attentions`` and fusion on.
        cross_attentions_t2i: per fused pair, ``(B, H_t, L, N_k)`` text-to-image weights.
    """

    text_features: Tensor
    image_features: Tensor
    pooler_output: Tensor
    text_hidden_state: Tensor
    image_hidden_state: Tensor
    attention_mask: Tensor
    fused: bool
    text_embeds: Tensor | None = None
    image_embeds: Tensor | None = None
    cross_attentions_i2t: tuple[Tensor, ...] | None = None
    cross_attentions_t2i: tuple[Tensor, ...] | None = None
