"""Heads on the multi-modal Transformer's states: pre-training and task heads.

- :class:`MLMHead`: BERT's prediction head (dense, GELU, LayerNorm, decoder); the decoder weight
  is tied to the word embeddings by the model, so BERT's MLM head loads as is.
- :class:`MatchHead`: one Linear layer on the ``[CLS]`` state, as in the paper; there is no BERT
  pooler (``tanh(Linear)``) in between. The ITM head of pre-training and the retrieval head.
- :class:`MFRHead`: the regressor ``r(.)`` of Masked Feature Regression, one Linear layer from the
  Transformer width back to the visual feature width (the paper gives no hidden layer; a plain
  linear map keeps the regression target reachable without extra capacity in the head, so the
  Transformer itself must carry the visual information).
- :class:`MLPHead`: the classifier of the VQA, NLVR2 and SNLI-VE task models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MFRHead", "MLMHead", "MLPHead", "MatchHead"]


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


class MatchHead(nn.Module):
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
