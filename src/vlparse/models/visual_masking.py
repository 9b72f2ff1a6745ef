"""Which visual tokens Masked Feature Regression masks (paper section 3.3, Figure 2).

One visual token (the anchor) is picked at random; it and the ``k - 1`` other tokens it attends
to most in the visual parser's last attention map are masked, and the model regresses their
features (:func:`vlparse.objectives.mfr.mfr_loss`). The ablation's "Rand MFR" masks the anchor
plus ``k - 1`` random other tokens. The anchor is ``argmax`` of uniform noise that the collator
draws per image (``mfr_noise``), so a mask is a pure function of the batch and the model.

Shapes: ``B`` samples, ``m`` visual tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["attention_guided_mask", "mfr_visual_mask", "num_mfr_tokens", "random_mask"]


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


def _checked_anchor(anchor: Tensor, b: int, m: int, device: torch.device, where: str,
                    check_values: bool = True) -> Tensor:
    if anchor.shape != (b,):
        raise ValueError(f"{where}: anchor must be (B,) = ({b},), got {tuple(anchor.shape)}")
    anchor = anchor.to(device=device, dtype=torch.long)
    # the range check reads the anchors back to the host; an argmax needs none
    if check_values and b and (anchor.min() < 0 or anchor.max() >= m):
        raise ValueError(f"{where}: anchor indices must be in [0, {m}), got {anchor.tolist()}")
    return anchor


def _anchor_plus_top(scores: Tensor, anchor: Tensor, k: int, where: str,
                     check_values: bool = True) -> Tensor:
    """Mask of the anchor and the ``k - 1`` other tokens of highest score (ties: lower index).

    scores ``(B, m)``, anchor ``(B,)`` -> ``(B, m)`` bool with exactly ``k`` True per row.
    """
    b, m = scores.shape
    if not 1 <= k <= m:
        raise ValueError(f"{where}: k must be in [1, m={m}], got {k}; see num_mfr_tokens")
    anchor = _checked_anchor(anchor, b, m, scores.device, where, check_values)
    # A stable descending sort keeps equal scores in index order; NaN scores sort first, so
    # they are replaced by -inf.
    scores = torch.nan_to_num(scores.float(), nan=float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)  # (B, m)
    # the anchor moved to the end of each row by a second stable sort (a boolean index would
    # give the same rows, but its size is only known on the host)
    last = (order == anchor[:, None]).to(torch.uint8).argsort(dim=-1, stable=True)
    others = order.gather(1, last)[:, : m - 1]
    mask = torch.zeros(b, m, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, others[:, : k - 1], True)
    mask.scatter_(1, anchor[:, None], True)  # a scalar fill: no value tensor from the host
    return mask


def attention_guided_mask(attention: Tensor, anchor: Tensor, k: int,
                          check_values: bool = True) -> Tensor:
    """MFR mask: each anchor and the ``k - 1`` other tokens it attends to most.

    Args:
        attention: ``(B, m, m)`` visual attention (row = query); the row ``attention[b,
            anchor[b]]`` ranks the candidates, ties broken by lower index.
        anchor: ``(B,)`` long, the randomly picked token of each sample.
        k: tokens to mask per sample, in ``[1, m]``.
        check_values: check that every anchor is in ``[0, m)`` (a read-back to the host).

    Returns:
        ``(B, m)`` bool with exactly ``k`` True per row.
    """
    if attention.dim() != 3 or attention.shape[1] != attention.shape[2]:
        raise ValueError(
            f"attention_guided_mask: attention must be (B, m, m), got {tuple(attention.shape)}"
        )
    b, m = attention.shape[:2]
    anchor = _checked_anchor(anchor, b, m, attention.device, "attention_guided_mask",
                             check_values)
    rows = attention[torch.arange(b, device=attention.device), anchor]
    return _anchor_plus_top(rows, anchor, k, "attention_guided_mask", check_values=False)


def random_mask(noise: Tensor, anchor: Tensor, k: int, check_values: bool = True) -> Tensor:
    """Rand MFR mask: each anchor plus the ``k - 1`` other tokens of largest ``noise``.

    Args:
        noise: ``(B, m)`` float, e.g. uniform draws from a seeded generator.
        anchor: ``(B,)`` long; k: tokens to mask per sample, in ``[1, m]``.
        check_values: check that every anchor is in ``[0, m)`` (a read-back to the host).

    Returns:
        ``(B, m)`` bool with exactly ``k`` True per row.
    """
    if noise.dim() != 2:
        raise ValueError(f"random_mask: noise must be (B, m), got {tuple(noise.shape)}")
    return _anchor_plus_top(noise, anchor, k, "random_mask", check_values)


def mfr_visual_mask(
    mode: str, k: int, ratio: float | None, noise: Tensor, attention: Tensor | None
) -> Tensor | None:
    """The ``(B, m)`` MFR mask of a batch, or ``None`` when MFR is off.

    Args:
        mode: ``objectives.mfr_mode``: ``"attention"`` adds to the anchor its top attended
            tokens in the parser's last layer, ``"random"`` the tokens of largest noise,
            ``"off"`` masks nothing.
        k, ratio: ``objectives.mfr_k`` / ``mfr_ratio`` (:func:`num_mfr_tokens`).
        noise: ``(B, m)`` uniform draws; the anchor is their ``argmax``.
        attention: ``(B, m, m)`` the parser's last attention map (``"attention"`` mode only).
    """
    if mode == "off":
        return None
    m = noise.shape[1]
    count = num_mfr_tokens(m, k, ratio)
    anchor = noise.argmax(dim=1)
    if mode == "attention":
        if attention is None:
            raise ValueError(
                "objectives.mfr_mode='attention' needs the visual embedder's attention; this "
                "embedder has none. Use objectives.mfr_mode=random or off."
            )
        return attention_guided_mask(attention.float(), anchor, count, check_values=False)
    if mode != "random":
        raise ValueError(f"mfr mode must be 'attention', 'random' or 'off', got {mode!r}")
    return random_mask(noise, anchor, count, check_values=False)
