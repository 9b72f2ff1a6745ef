"""Tests of vlparse.objectives.itm: label layout, negative sampling, loss and accuracy."""

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


def test_sample_negatives_excludes_index_and_is_distinct():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        n, index = 2 + seed % 7, seed % (2 + seed % 7)
        num_neg = min(2, n - 1)
        neg = itm.sample_negatives(index, n, num_neg, g)
        assert len(neg) == num_neg
        assert index not in neg and all(0 <= j < n for j in neg)
        assert len(set(neg)) == num_neg
    # With replacement when there are fewer other images than negatives.
    neg = itm.sample_negatives(1, 2, 3, torch.Generator().manual_seed(0))
    assert neg == [0, 0, 0]


def test_sample_negatives_covers_all_others_and_is_deterministic():
    seen = set()
    for seed in range(200):
        seen.update(itm.sample_negatives(3, 6, 2, torch.Generator().manual_seed(seed)))
    assert seen == {0, 1, 2, 4, 5}
    a = itm.sample_negatives(0, 1000, 5, torch.Generator().manual_seed(7))
    b = itm.sample_negatives(0, 1000, 5, torch.Generator().manual_seed(7))
    c = itm.sample_negatives(0, 1000, 5, torch.Generator().manual_seed(8))
    assert a == b and a != c


def test_sample_negatives_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="at least 2"):
        itm.sample_negatives(0, 1, 1, g)
    with pytest.raises(ValueError, match="outside"):
        itm.sample_negatives(5, 5, 1, g)


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
