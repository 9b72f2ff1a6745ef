"""Tests of vlparse.objectives.itm: label layout, loss and accuracy."""

import pytest
import torch
import torch.nn.functional as F

from vlparse.objectives import itm


def test_itm_labels_layout():
    assert itm.itm_labels(2).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    assert itm.itm_labels(3, num_pos=1, num_neg=2).tolist() == [1, 0, 0] * 3
    assert itm.itm_labels(2, num_neg=0).tolist() == [1, 1, 1, 1]
    assert itm.itm_labels(0).numel() == 0
    assert itm.itm_labels(1).dtype == torch.long


def test_itm_loss_and_accuracy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 2, generator=g)
    labels = itm.itm_labels(2)
    torch.testing.assert_close(itm.itm_loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(
        itm.itm_loss(logits, labels, normalizer=16),
        F.cross_entropy(logits, labels, reduction="sum") / 16,
    )
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        itm.itm_loss(torch.zeros(4, 3), labels[:4])
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert itm.itm_accuracy(logits, torch.tensor([1, 1, 0, 0])) == (2, 4)
