"""Tests of vlparse.objectives.mlm: the loss, its accuracy and the weight schedule."""

import pytest
import torch
import torch.nn.functional as F

from vlparse.objectives import mlm


def test_mlm_loss_and_accuracy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (7,), generator=g)
    torch.testing.assert_close(mlm.mlm_loss(logits, labels), F.cross_entropy(logits, labels))
    summed = F.cross_entropy(logits, labels, reduction="sum")
    torch.testing.assert_close(mlm.mlm_loss(logits, labels, normalizer=3.5), summed / 3.5)
    torch.testing.assert_close(
        mlm.mlm_loss(logits, labels, normalizer=torch.tensor(20.0)), summed / 20.0
    )
    mlm.mlm_loss(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    empty = mlm.mlm_loss(torch.zeros(0, 11), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="normalizer"):
        mlm.mlm_loss(logits, labels, normalizer=0)

    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    labels = torch.tensor([1, 1, -100, 0])
    assert mlm.mlm_accuracy(logits, labels) == (2, 3)


def test_ramp_weight():
    assert mlm.ramp_weight(0) == 1.0 and mlm.ramp_weight(7) == 1.0
    assert [mlm.ramp_weight(s, delay=3) for s in (0, 2, 3, 4)] == [0.0, 0.0, 1.0, 1.0]
    got = [mlm.ramp_weight(s, delay=2, ramp=4) for s in range(8)]
    assert got == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="must be >= 0"):
        mlm.ramp_weight(-1)
