"""Captioning losses: maximum likelihood and self-critical sequence training (SCST).

Shapes: ``B`` captions, ``T`` tokens, ``V`` vocabulary size, ``N`` sampled captions.

- :func:`caption_mle_loss`: next-token cross-entropy (labels shifted by one inside), padding
  ignored, optional label smoothing.
- :func:`self_critical_loss`: REINFORCE on sampled captions with the greedy caption's reward as
  the baseline (Rennie et al. 2017). FIBER's released code uses a constant baseline instead; the
  self-critical baseline is per image and needs no tuning.
- :func:`mix_caption_losses`: the two mixed by one weight (FIBER: 0.3 MLE + 0.7 RL).

The rewards (e.g. :class:`vlparse.eval.cider.CiderD` scores) are computed by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.mlm import IGNORE_INDEX, scale_sum

__all__ = [
    "caption_mle_loss",
    "token_logprobs",
    "self_critical_loss",
    "mix_caption_losses",
]


def caption_mle_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Teacher-forced next-token cross-entropy of a causal decoder.

    Args:
        logits: ``(B, T, V)`` decoder outputs for the input ids ``(B, T)``.
        labels: ``(B, T)`` the input ids with padding set to ``ignore_index``; ``logits[:, t]``
            is scored against ``labels[:, t + 1]`` (the shift happens here), so ``labels[:, 0]``
            (the start token) is never a target.
        label_smoothing: ``eps`` of ``F.cross_entropy``: the target is ``1 - eps`` on the label
            plus ``eps / V`` on every id.
        normalizer: divisor of the summed loss; default the number of target tokens.

    Returns:
        A scalar float32 tensor: the mean loss per target token.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"caption_mle_loss: expected logits (B, T, V) and labels (B, T), got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"caption_mle_loss: label_smoothing must be in [0, 1), got {label_smoothing}"
        )
    pred = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1)
    total = F.cross_entropy(
        pred, target, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum"
    )
    return scale_sum(total, normalizer, int((target != ignore_index).sum()))


def token_logprobs(logits: Tensor, tokens: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Log-probability of each chosen token.

    Args:
        logits: ``(N, T, V)``; ``logits[:, t]`` is the distribution ``tokens[:, t]`` was drawn
            from (already aligned: no shift here).
        tokens: ``(N, T)`` long.
        temperature: the sampling temperature; the log-probs are those of ``softmax(logits / T)``.

    Returns:
        ``(N, T)`` float32.
    """
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def self_critical_loss(
    logprobs: Tensor,
    mask: Tensor,
    rewards: Tensor,
    baseline: Tensor,
    *,
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Self-critical policy-gradient loss of sampled captions.

    ``-sum_{i,t} (rewards_i - baseline_i) * logprobs_{i,t} * mask_{i,t} / normalizer``: its
    gradient raises the probability of every sample that scores above the baseline (the greedy
    caption of its image) and lowers that of every sample below it.

    Args:
        logprobs: ``(N, T)`` log-probabilities of the sampled tokens (with gradient).
        mask: ``(N, T)`` 1 for the sampled tokens up to and including the end token, 0 for the
            padding after it.
        rewards: ``(N,)`` reward of each sample, e.g. its CIDEr-D.
        baseline: ``(N,)`` reward of the greedy caption of the sample's image (repeat it for the
            samples of one image). Rewards and baseline carry no gradient.
        normalizer: divisor of the sum; default the number of sampled tokens (``mask.sum()``).

    Returns:
        A scalar float32 tensor.
    """
    n = logprobs.shape[0]
    if logprobs.dim() != 2 or mask.shape != logprobs.shape:
        raise ValueError(
            f"self_critical_loss: expected logprobs and mask (N, T), got {tuple(logprobs.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if rewards.shape != (n,) or baseline.shape != (n,):
        raise ValueError(
            f"self_critical_loss: rewards {tuple(rewards.shape)} and baseline "
            f"{tuple(baseline.shape)} must be ({n},)"
        )
    mask = mask.to(logprobs.dtype)
    advantage = (rewards - baseline).detach().to(device=logprobs.device, dtype=torch.float32)
    total = -(advantage[:, None] * logprobs.float() * mask).sum()
    return scale_sum(total, normalizer, int(mask.sum()))


def mix_caption_losses(mle: Tensor, rl: Tensor, rl_weight: float) -> Tensor:
    """``(1 - rl_weight) * mle + rl_weight * rl``; FIBER's CIDEr stage uses ``rl_weight = 0.7``."""
    if not 0.0 <= rl_weight <= 1.0:
        raise ValueError(f"mix_caption_losses: rl_weight must be in [0, 1], got {rl_weight}")
    return (1.0 - rl_weight) * mle + rl_weight * rl
