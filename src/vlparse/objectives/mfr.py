"""Masked Feature Regression (paper section 3.3, Eq. 9).

One visual token (the anchor) is picked at random; it and the ``k - 1`` other tokens it attends
to most in the visual parser's last attention map are masked, and the model regresses their
features. The ablation's "Rand MFR" masks the anchor plus ``k - 1`` random other tokens.

Shapes: ``B`` samples, ``m`` visual tokens, ``c`` visual feature width, ``K`` masked tokens in the
batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlparse.objectives.mlm import scale_sum


def num_mfr_tokens(m: int, k: int, ratio: float | None) -> int:
    """Tokens to mask per sample: ``k``, or ``round(m * ratio)`` when ``ratio`` is given (the
    ablation's ``k = m * p``); either way clamped to ``[1, m]``."""
    if m < 1:
        raise ValueError(f"num_mfr_tokens: need at least one visual token, got m={m}")
    if ratio is not None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"num_mfr_tokens: ratio must be in (0, 1], got {ratio}")
        k = round(m * ratio)
    elif k < 1:
        raise ValueError(f"num_mfr_tokens: k must be >= 1, got {k}")
    return min(max(int(k), 1), m)


def _checked_anchor(anchor: Tensor, b: int, m: int, device: torch.device, where: str) -> Tensor:
    if anchor.shape != (b,):
        raise ValueError(f"{where}: anchor must be (B,) = ({b},), got {tuple(anchor.shape)}")
    anchor = anchor.to(device=device, dtype=torch.long)
    if b and (anchor.min() < 0 or anchor.max() >= m):
        raise ValueError(f"{where}: anchor indices must be in [0, {m}), got {anchor.tolist()}")
    return anchor


def _anchor_plus_top(scores: Tensor, anchor: Tensor, k: int, where: str) -> Tensor:
    """Mask of the anchor and the ``k - 1`` other tokens of highest score (ties: lower index).

    scores ``(B, m)``, anchor ``(B,)`` -> ``(B, m)`` bool with exactly ``k`` True per row.
    """
    b, m = scores.shape
    if not 1 <= k <= m:
        raise ValueError(f"{where}: k must be in [1, m={m}], got {k}; see num_mfr_tokens")
    anchor = _checked_anchor(anchor, b, m, scores.device, where)
    # A stable descending sort keeps equal scores in index order; NaN scores sort first, so
    # they are replaced by -inf.
    scores = torch.nan_to_num(scores.float(), nan=float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)  # (B, m)
    others = order[order != anchor[:, None]].view(b, m - 1)  # the anchor removed from each row
    mask = torch.zeros(b, m, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, others[:, : k - 1], True)
    mask[torch.arange(b, device=scores.device), anchor] = True
    return mask


def attention_guided_mask(attention: Tensor, anchor: Tensor, k: int) -> Tensor:
    """MFR mask: each anchor and the ``k - 1`` other tokens it attends to most.

    Args:
        attention: ``(B, m, m)`` visual attention (row = query); the row ``attention[b,
            anchor[b]]`` ranks the candidates, ties broken by lower index.
        anchor: ``(B,)`` long, the randomly picked token of each sample.
        k: tokens to mask per sample, in ``[1, m]``.

    Returns:
        ``(B, m)`` bool with exactly ``k`` True per row.
    """
    if attention.dim() != 3 or attention.shape[1] != attention.shape[2]:
        raise ValueError(
            f"attention_guided_mask: attention must be (B, m, m), got {tuple(attention.shape)}"
        )
    b, m = attention.shape[:2]
    anchor = _checked_anchor(anchor, b, m, attention.device, "attention_guided_mask")
    rows = attention[torch.arange(b, device=attention.device), anchor]
    return _anchor_plus_top(rows, anchor, k, "attention_guided_mask")


def random_mask(noise: Tensor, anchor: Tensor, k: int) -> Tensor:
    """Rand MFR mask: each anchor plus the ``k - 1`` other tokens of largest ``noise``.

    Args:
        noise: ``(B, m)`` float, e.g. uniform draws from a seeded generator.
        anchor: ``(B,)`` long; k: tokens to mask per sample, in ``[1, m]``.

    Returns:
        ``(B, m)`` bool with exactly ``k`` True per row.
    """
    if noise.dim() != 2:
        raise ValueError(f"random_mask: noise must be (B, m), got {tuple(noise.shape)}")
    return _anchor_plus_top(noise, anchor, k, "random_mask")


def mfr_loss(pred: Tensor, target: Tensor, num_samples: int | float | Tensor) -> Tensor:
    """Eq. 9: squared L2 distance summed over the masked tokens, divided by ``num_samples``.

    Per sample Eq. 9 sums over its ``k`` masked tokens; dividing the batch sum by the number of
    samples gives the mean over samples. The target is detached here: the regression trains the
    multi-modal Transformer and the MFR head, and does not pull the visual tokens towards the
    predictions (which would let both collapse together).

    Args:
        pred: ``(K, c)`` MFR head output at the masked tokens.
        target: ``(K, c)`` the visual tokens before masking.
        num_samples: samples (image-text pairs) the ``K`` tokens come from, or a global count.

    Returns:
        A scalar float32 tensor.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"mfr_loss: expected pred and target (K, c) of the same shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    total = (pred.float() - target.detach().float()).pow(2).sum()
    return scale_sum(total, num_samples, 0)
