"""The detection head of FIBER's fine-grained stage: an FPN over the backbone's last stages, a
convolutional tower, and per location one anchor with box deltas, centerness and token-alignment
logits.

- Inputs: the fused image backbone's stage outputs ``(B, C_l, H_l, W_l)`` (FIBER: Swin stages 2-4,
  strides 8/16/32), each through its own LayerNorm over channels, then torchvision's
  ``FeaturePyramidNetwork`` with ``LastLevelP6P7`` (P6 and P7 from P5), all at ``channels``.
- Tower: ``num_convs`` x (3x3 conv, GroupNorm, ReLU), shared by the levels. FIBER uses GLIP's
  dynamic head (deformable convolutions, DyReLU, scale attention) as a plain vision tower; this
  plain convolutional tower stands in for it.
- Box deltas: a 3x3 conv to 4 values, times a learnable scale per level (initially 1); decode
  with :func:`vlparse.objectives.grounding.decode_boxes`. Centerness: a 3x3 conv to 1 logit.
- Alignment: token features are L2-normalised; ``proj = Linear(D -> channels)(normalised / 2)``;
  ``logit = <anchor feature, proj> / exp(s) + <normalised token, bias vector> + b0``, with ``s``
  and the bias vector starting at 0 and ``b0 = -log((1 - p) / p)`` for a prior probability
  ``p = 0.01`` (``-log 99``), so that every pair starts near probability 0.01.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from vlparse.models.detection.atss import level_anchors

__all__ = ["DetectionHead", "DetectionHeadOutput"]


@dataclass
class DetectionHeadOutput:
    """Per-anchor outputs, anchors of all levels concatenated (level by level, row-major).

    Attributes:
        box_regression: ``(B, A, 4)`` box deltas relative to ``anchors``.
        centerness: ``(B, A)`` logits.
        alignment_logits: ``(B, A, L)``; padding tokens hold the dtype's lowest value.
        anchors: ``(A, 4)`` xyxy in input pixels.
        level_sizes: ``(H_l, W_l)`` of each pyramid level.
    """

    box_regression: Tensor
    centerness: Tensor
    alignment_logits: Tensor
    anchors: Tensor
    level_sizes: list[tuple[int, int]]


def _tower(channels: int, num_convs: int, norm_groups: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1),
                   nn.GroupNorm(norm_groups, channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DetectionHead(nn.Module):
    """FPN + tower + box / centerness / token-alignment predictions.

    Args:
        in_channels: channels of each input level (FIBER-B: 256, 512, 1024).
        text_dim: width ``D`` of the token features (768 for RoBERTa-base).
        channels: FPN and tower width (256).
        in_strides: stride of each input level (8, 16, 32); P6 and P7 add two halvings.
        anchor_sizes: anchor side per output level (default ``8 x stride``: 64-1024).
        num_convs: tower depth; norm_groups: GroupNorm groups.
        input_norm: a LayerNorm over channels on each input level (FIBER's setting).
        prior_prob: the initial probability of every (anchor, token) pair.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        text_dim: int,
        channels: int = 256,
        in_strides: Sequence[int] = (8, 16, 32),
        anchor_sizes: Sequence[float] | None = None,
        num_convs: int = 6,
        norm_groups: int = 16,
        input_norm: bool = True,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_strides):
            raise ValueError(f"{len(in_channels)} input levels but {len(in_strides)} strides")
        self.strides = [*in_strides, in_strides[-1] * 2, in_strides[-1] * 4]
        self.anchor_sizes = [8.0 * s for s in self.strides] if anchor_sizes is None else [
            float(a) for a in anchor_sizes]
        if len(self.anchor_sizes) != len(self.strides):
            raise ValueError(f"{len(self.anchor_sizes)} anchor sizes for {len(self.strides)} "
                             "levels (the input levels plus P6 and P7)")
        self.input_norms = nn.ModuleList(
            nn.LayerNorm(c) if input_norm else nn.Identity() for c in in_channels)
        self.fpn = FeaturePyramidNetwork(list(in_channels), channels,
                                         extra_blocks=LastLevelP6P7(channels, channels))
        self.tower = _tower(channels, num_convs, norm_groups)
        self.box_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness_pred = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(self.strides)))
        self.text_proj = nn.Linear(text_dim, channels)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias_lang = nn.Parameter(torch.zeros(text_dim))
        self.bias0 = nn.Parameter(torch.tensor(-math.log((1 - prior_prob) / prior_prob)))
        for module in [*self.tower, self.box_pred, self.centerness_pred]:
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def pyramid(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Input levels ``(B, C_l, H_l, W_l)`` -> FPN levels ``(B, channels, H, W)`` + P6, P7."""
        if len(features) != len(self.input_norms):
            raise ValueError(f"expected {len(self.input_norms)} feature levels, "
                             f"got {len(features)}")
        normed = OrderedDict(
            (str(i), norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            for i, (norm, x) in enumerate(zip(self.input_norms, features, strict=True)))
        return list(self.fpn(normed).values())

    def align(self, anchor_features: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        """``(B, A, L)`` logits of anchor features ``(B, A, C)`` against tokens ``(B, L, D)``."""
        normed = F.normalize(tokens, p=2, dim=-1)
        proj = self.text_proj(normed / 2.0)
        bias = normed @ self.bias_lang + self.bias0  # (B, L)
        logits = anchor_features @ proj.transpose(1, 2) / self.log_scale.exp() + bias[:, None]
        return logits.masked_fill(~token_mask.bool()[:, None, :], torch.finfo(logits.dtype).min)

    def forward(self, features: Sequence[Tensor], tokens: Tensor, token_mask: Tensor
                ) -> DetectionHeadOutput:
        """Predictions for every anchor.

        Args:
            features: input levels ``(B, C_l, H_l, W_l)``, finest first.
            tokens: ``(B, L, D)`` token features of the (fused) text backbone.
            token_mask: ``(B, L)``, nonzero for real tokens.
        """
        boxes, centers, anchor_feats, sizes = [], [], [], []
        for level, p in enumerate(self.pyramid(features)):
            t = self.tower(p)
            sizes.append((p.shape[2], p.shape[3]))
            boxes.append((self.box_pred(t) * self.scales[level]).flatten(2).transpose(1, 2))
            centers.append(self.centerness_pred(t).flatten(1))
            anchor_feats.append(t.flatten(2).transpose(1, 2))
        anchors = level_anchors(sizes, self.strides, self.anchor_sizes, device=tokens.device)
        return DetectionHeadOutput(
            box_regression=torch.cat(boxes, dim=1),
            centerness=torch.cat(centers, dim=1),
            alignment_logits=self.align(torch.cat(anchor_feats, dim=1), tokens, token_mask),
            anchors=torch.cat(anchors, dim=0),
            level_sizes=sizes,
        )
