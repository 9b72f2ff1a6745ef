"""FIBER's heads: cross-modal transforms and poolers, the dual-encoder (ITC) projections and the
ITM head. (The MLM head is transformers' own, built by the text adapter.)

- :class:`CrossModalPooler`: text states ``Linear(Dt -> D)``, image tokens ``Linear(C -> D)``;
  text pooled ``tanh(dense(first token))``, image pooled ``tanh(dense(mean of image tokens))``;
  the fused feature is both, concatenated (``2 D``), as in the released model and BridgeTower's
  ``pooler_output``.
- :class:`ITCProjection`: the dual encoder's L2-normalised embeddings: text ``Linear(Dt -> E)``
  of the first token, image ``Linear(C -> E)`` of the mean token; and the learnable ITC
  temperature (a scalar, as released; the loss clamps what it divides by).
- :class:`ITMHead`: ``Linear(2 D -> 2)`` on the fused feature (class 1 = matched).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Pooler", "CrossModalPooler", "ITCProjection", "ITMHead"]


def _init_linear(layer: nn.Linear, std: float) -> nn.Linear:
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


class Pooler(nn.Module):
    """``tanh(Linear(D -> D))``: ``(B, D)`` -> ``(B, D)``."""

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.dense = _init_linear(nn.Linear(dim, dim), init_std)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.dense(x))


class CrossModalPooler(nn.Module):
    """Cross-modal features and the fused pooled feature.

    Args:
        text_dim: ``Dt``. image_dim: ``C`` of the last image stage. hidden: ``D``.
    """

    def __init__(self, text_dim: int, image_dim: int, hidden: int, init_std: float = 0.02):
        super().__init__()
        self.text_transform = _init_linear(nn.Linear(text_dim, hidden), init_std)
        self.image_transform = _init_linear(nn.Linear(image_dim, hidden), init_std)
        self.text_pooler = Pooler(hidden, init_std)
        self.image_pooler = Pooler(hidden, init_std)

    def forward(self, text: Tensor, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``text (B, L, Dt)``, ``image (B, N, C)`` -> ``(text_features (B, L, D),
        image_features (B, N, D), pooled (B, 2 D))``."""
        text_features = self.text_transform(text)
        image_features = self.image_transform(image)
        pooled = torch.cat(
            [self.text_pooler(text_features[:, 0]), self.image_pooler(image_features.mean(1))],
            dim=-1,
        )
        return text_features, image_features, pooled


class ITCProjection(nn.Module):
    """Dual-encoder embeddings for image-text contrastive learning and fast retrieval.

    Args:
        text_dim: ``Dt``. image_dim: ``C``. dim: ``E``.
        temperature: initial value of :attr:`temperature` (FIBER: 0.07).
    """

    def __init__(self, text_dim: int, image_dim: int, dim: int, init_std: float = 0.02,
                 temperature: float = 0.07):
        super().__init__()
        self.text_proj = _init_linear(nn.Linear(text_dim, dim), init_std)
        self.image_proj = _init_linear(nn.Linear(image_dim, dim), init_std)
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))

    def embed_text(self, states: Tensor) -> Tensor:
        """``(B, L, Dt)`` unimodal text states -> ``(B, E)`` unit vectors (first token)."""
        return F.normalize(self.text_proj(states[:, 0]), dim=-1)

    def embed_image(self, tokens: Tensor) -> Tensor:
        """``(B, N, C)`` unimodal image tokens -> ``(B, E)`` unit vectors (mean token)."""
        return F.normalize(self.image_proj(tokens.mean(1)), dim=-1)


class ITMHead(nn.Module):
    """``(B, 2 D)`` fused feature -> ``(B, 2)`` matching logits (class 1 = matched)."""

    def __init__(self, hidden: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.fc = _init_linear(nn.Linear(2 * hidden, 2), init_std)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)
