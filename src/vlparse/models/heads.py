"""Pre-training heads of the single-stream model.

- :class:`MLMHead`: BERT's prediction head (dense, GELU, LayerNorm, decoder); the decoder weight
  is tied to the word embeddings by the model, so BERT's MLM head loads as is.
- :class:`ITMHead`: one Linear layer on the ``[CLS]`` state, as in the paper; there is no BERT
  pooler (``tanh(Linear)``) in between.
- :class:`MFRHead`: the regressor ``r(.)`` of Masked Feature Regression, one Linear layer from the
  Transformer width back to the visual feature width (the paper gives no hidden layer; a plain
  linear map keeps the regression target reachable without extra capacity in the head, so the
  Transformer itself must carry the visual information).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLMHead", "ITMHead", "MFRHead"]


class MLMHead(nn.Module):
    """Masked-language-model logits.

    Args:
        hidden: ``D``.
        vocab_size: ``V``.
        eps: LayerNorm epsilon.
        init_std: std of the normal initialisation of the dense layer.
    """

    def __init__(
        self, hidden: int, vocab_size: int, eps: float = 1e-12, init_std: float = 0.02
    ) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.decoder = nn.Linear(hidden, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=init_std)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """``(..., D)`` -> ``(..., V)`` logits."""
        x = self.norm(F.gelu(self.dense(hidden_states)))
        return self.decoder(x) + self.bias


class ITMHead(nn.Module):
    """Image-text matching logits from the ``[CLS]`` state: ``(B, D)`` -> ``(B, 2)``.
    Class 1 = matched, 0 = not matched."""

    def __init__(self, hidden: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, 2)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, cls_state: Tensor) -> Tensor:
        return self.fc(cls_state)


class MFRHead(nn.Module):
    """Masked feature regression: ``(..., D)`` -> ``(..., c)`` predicted visual features."""

    def __init__(self, hidden: int, visual_dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, visual_dim)
        nn.init.normal_(self.fc.weight, std=init_std)
        nn.init.zeros_(self.fc.bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.fc(hidden_states)


class ITCHead(nn.Module):
    """Projections for the optional image-text contrastive loss.

    ``image(tokens (B, m, c)) -> (B, d)``: max over the parser's tokens, then Linear c->d. (Max,
    not mean: the mean of a randomly initialised Swin's LayerNorm-ed tokens hardly differs between
    images, and an ITC on it stayed at chance; with max it learned. Measured on the quickstart
    world, 32 images a batch.)
    ``text(word_emb (T, L, D), mask (T, L)) -> (T, d)``: mean of the word embeddings over real
    tokens (before fusion; the embedding table is the one the Transformer and MLM use), then
    Linear D->d.
    """

    def __init__(self, visual_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(visual_dim, dim)
        self.text_proj = nn.Linear(hidden, dim)

    def image(self, tokens: Tensor) -> Tensor:
        return self.image_proj(tokens.amax(1))

    def text(self, word_emb: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(word_emb.dtype)[..., None]
        pooled = (word_emb * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.text_proj(pooled)


class MLPHead(nn.Module):
    """``Linear(in, hidden) -> GELU -> LayerNorm -> Linear(hidden, out)``: ``(B, in)`` ->
    ``(B, out)`` logits. Weights ``N(0, 0.02)``, biases zero."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        for fc in (self.fc1, self.fc2):
            nn.init.normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    @property
    def out_dim(self) -> int:
        return self.fc2.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.norm(F.gelu(self.fc1(x))))
