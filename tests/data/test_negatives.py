"""Where unmatched captions come from (vlparse.data.negatives): data-set draws and partners in
the batch."""

import pytest
import torch

from vlparse.data.negatives import batch_partners, sample_negatives


def test_sample_negatives_excludes_index_and_is_distinct():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        n, index = 2 + seed % 7, seed % (2 + seed % 7)
        num_neg = min(2, n - 1)
        neg = sample_negatives(index, n, num_neg, g)
        assert len(neg) == num_neg
        assert index not in neg and all(0 <= j < n for j in neg)
        assert len(set(neg)) == num_neg
    # With replacement when there are fewer other images than negatives.
    neg = sample_negatives(1, 2, 3, torch.Generator().manual_seed(0))
    assert neg == [0, 0, 0]


def test_sample_negatives_covers_all_others_and_is_deterministic():
    seen = set()
    for seed in range(200):
        seen.update(sample_negatives(3, 6, 2, torch.Generator().manual_seed(seed)))
    assert seen == {0, 1, 2, 4, 5}
    a = sample_negatives(0, 1000, 5, torch.Generator().manual_seed(7))
    b = sample_negatives(0, 1000, 5, torch.Generator().manual_seed(7))
    c = sample_negatives(0, 1000, 5, torch.Generator().manual_seed(8))
    assert a == b and a != c


def test_sample_negatives_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="at least 2"):
        sample_negatives(0, 1, 1, g)
    with pytest.raises(ValueError, match="outside"):
        sample_negatives(5, 5, 1, g)


@pytest.mark.parametrize("g", [2, 3, 5, 8])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_batch_partners_is_a_derangement_per_slot(g, n):
    partners = batch_partners(torch.rand(g, generator=torch.Generator().manual_seed(g + n)), n)
    assert partners.shape == (g, n)
    for slot in range(n):
        col = partners[:, slot]
        assert sorted(col.tolist()) == list(range(g))  # each image lends once per slot
        if (slot + 1) % g:
            assert (col != torch.arange(g)).all()  # nobody lends to itself


def test_batch_partners_follows_the_key_order():
    assert batch_partners(torch.tensor([0.3, 0.1, 0.2]), 1).tolist() == [[1], [2], [0]]
    # slot 1 is two places on: order 1, 2, 0 -> image 0 takes from 2
    assert batch_partners(torch.tensor([0.3, 0.1, 0.2]), 2)[:, 1].tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="G >= 2"):
        batch_partners(torch.tensor([0.5]), 1)
    with pytest.raises(ValueError, match="num_neg"):
        batch_partners(torch.rand(3), -1)
