"""Output dataclasses of vlparse models. Tensors that were not asked for are ``None``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["FusionOutput", "PretrainOutput", "TaskOutput", "VisualOutput"]


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


@dataclass
class PretrainOutput:
    """What a model's pre-training pass returns: logits, targets and masks, never losses
    (:func:`vlparse.objectives.pretrain_loss` turns them into one). A field a model family or a
    step does not produce is ``None``.

    Shapes: ``B`` images, ``T`` image-text pairs, ``K`` masked text positions, ``V`` vocabulary,
    ``M`` masked visual tokens, ``c`` visual feature width.

    Attributes:
        itm_logits: ``(T, 2)`` image-text matching logits (class 1 = matched).
        itm_labels: ``(T,)`` long, 1 matched / 0 unmatched.
        vla_distance: ``(T,)`` OT distance between the text and visual tokens of each pair.
        mlm_logits: ``(K, V)`` at the masked text positions only (with the model's static
            shapes: at every text position of the masked rows).
        mlm_labels: ``(K,)`` the original ids there (-100 where nothing was masked).
        mfr_pred: ``(M, c)`` regressed features of the masked visual tokens.
        mfr_target: ``(M, c)`` their features before masking (detached).
        mfr_num_samples: what the MFR sum is divided by (pairs, times ``c`` for a per-channel
            mean).
        itc_logits_i2t: ``(B, C)`` contrastive logits of each local image against ``C``
            texts (e.g. the batch gathered over all processes, then a queue).
        itc_logits_t2i: ``(B, C)`` of each local text against ``C`` images.
        itc_targets: ``(B,)`` long, the matching index of each row.
        diagnostics: scalars to log, not to train (e.g. ``visual_spread``: the std of the
            visual tokens across the images of the batch; near 0 means a collapsed parser).
    """

    itm_logits: Tensor | None = None
    itm_labels: Tensor | None = None
    vla_distance: Tensor | None = None
    mlm_logits: Tensor | None = None
    mlm_labels: Tensor | None = None
    mfr_pred: Tensor | None = None
    mfr_target: Tensor | None = None
    mfr_num_samples: int | None = None
    itc_logits_i2t: Tensor | None = None
    itc_logits_t2i: Tensor | None = None
    itc_targets: Tensor | None = None
    diagnostics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TaskOutput:
    """What a task model's ``forward`` returns.

    Attributes:
        logits: ``(B, C)`` (``C`` = 2 for matching and NLVR2, 3 for entailment, the answers for
            VQA).
        loss: the task loss when labels were given, else ``None``.
    """

    logits: Tensor
    loss: Tensor | None = None
