"""The fine-tuning losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.objectives.tasks import classification_loss, soft_target_bce


def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_soft_target_bce_sums_answers_and_averages_questions():
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 0.3], [0.0, 2 / 3, 0.0]])
    by_hand = sum(_bce(float(x), float(y)) for x, y in
                  zip(logits.flatten(), targets.flatten(), strict=True))
    assert float(soft_target_bce(logits, targets)) == pytest.approx(by_hand / 2, rel=1e-6)
    assert float(soft_target_bce(logits, targets, 4.0)) == pytest.approx(by_hand / 4, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        soft_target_bce(logits, targets[:, :2])


def test_classification_loss_ignores_unlabelled_examples():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
    labels = torch.tensor([0, 2, -1])

    def ce(row, y):
        return -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))

    by_hand = ce([2.0, 0.0, -1.0], 0) + ce([0.0, 1.0, 0.0], 2)
    assert float(classification_loss(logits, labels)) == pytest.approx(by_hand / 2, rel=1e-6)
    assert float(classification_loss(logits, labels, 8.0)) == pytest.approx(by_hand / 8, rel=1e-6)
    assert float(classification_loss(logits[2:], labels[2:])) == 0.0  # nothing labelled
