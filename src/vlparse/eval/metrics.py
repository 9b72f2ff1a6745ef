"""Metrics as plain tensor code."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["recall_at_k", "majority_fraction"]


def recall_at_k(
    scores: Tensor, positives: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k of a query-by-candidate score matrix.

    Args:
        scores: ``(Q, C)`` higher = better.
        positives: ``(Q, C)`` bool, the correct candidates of each query (at least one per row).
        ks: cut-offs.

    Returns:
        ``{k: fraction of queries with a correct candidate among the top k}``. Ties are broken
        pessimistically (a correct candidate tied with an incorrect one ranks below it).
    """
    if scores.shape != positives.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ"
        )
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive candidate")
    scores = scores.float()
    best_pos = scores.masked_fill(~positives, float("-inf")).max(dim=1).values
    # rank of the best positive = number of negatives scoring >= it
    neg_ge = ((scores >= best_pos[:, None]) & ~positives).sum(dim=1)
    return {k: float((neg_ge < k).float().mean()) for k in ks}


def majority_fraction(values: Tensor) -> float:
    """Share of the most frequent value: the accuracy of always predicting it."""
    if values.numel() == 0:
        return float("nan")
    return float(torch.bincount(values.flatten()).max()) / values.numel()
