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


@pytest.mark.parametrize("g", [2, 3, 5, 8])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_batch_partners_is_a_derangement_per_slot(g, n):
    partners = itm.batch_partners(torch.rand(g, generator=torch.Generator().manual_seed(g + n)), n)
    assert partners.shape == (g, n)
    for slot in range(n):
        col = partners[:, slot]
        assert sorted(col.tolist()) == list(range(g))  # each image lends once per slot
        if (slot + 1) % g:
            assert (col != torch.arange(g)).all()  # nobody lends to itself


def test_batch_partners_follows_the_key_order():
    assert itm.batch_partners(torch.tensor([0.3, 0.1, 0.2]), 1).tolist() == [[1], [2], [0]]
    # slot 1 is two places on: order 1, 2, 0 -> image 0 takes from 2
    assert itm.batch_partners(torch.tensor([0.3, 0.1, 0.2]), 2)[:, 1].tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="G >= 2"):
        itm.batch_partners(torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match="num_neg"):
        itm.batch_partners(torch.rand(3), -1)
