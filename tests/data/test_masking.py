"""The collator's BERT masking (vlparse.data.masking): 80/10/10 statistics, min_masked,
determinism and shapes."""

import pytest
import torch

from vlparse.data.masking import mask_tokens

MASK_ID = 103
VOCAB = 30522


def _batch(seed: int = 0, rows: int = 200, length: int = 100):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB, (rows, length), generator=g)  # never the [MASK] id
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    maskable = torch.arange(length)[None, :] < lengths[:, None]
    maskable[:, 0] = False  # e.g. a special token
    return ids, maskable


def test_masking_statistics():
    ids, maskable = _batch()
    masked, labels = mask_tokens(
        ids, maskable, MASK_ID, VOCAB, prob=0.15, generator=torch.Generator().manual_seed(1)
    )
    chosen = labels != -100
    frac = chosen.sum().item() / maskable.sum().item()
    assert abs(frac - 0.15) < 0.01, frac
    n = chosen.sum().item()
    to_mask = (masked == MASK_ID) & chosen
    unchanged = (masked == ids) & chosen
    to_random = chosen & ~to_mask & ~unchanged
    assert abs(to_mask.sum().item() / n - 0.8) < 0.02
    assert abs(unchanged.sum().item() / n - 0.1) < 0.02
    assert abs(to_random.sum().item() / n - 0.1) < 0.02
    assert masked.min() >= 0 and masked.max() < VOCAB
    # Non-maskable positions never change and never get labels; labels are the original ids.
    assert torch.equal(masked[~maskable], ids[~maskable])
    assert (labels[~maskable] == -100).all()
    assert torch.equal(labels[chosen], ids[chosen])
    # Unchosen positions are untouched.
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_determinism_and_seed_dependence():
    ids, maskable = _batch(rows=20, length=30)
    out = [
        mask_tokens(ids, maskable, MASK_ID, VOCAB, generator=torch.Generator().manual_seed(s))
        for s in (5, 5, 6)
    ]
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert not torch.equal(out[0][1], out[2][1])


def test_min_masked_on_one_token_sequence():
    ids = torch.tensor([[2000, 0, 0], [3000, 4000, 0], [5000, 0, 0]])
    maskable = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        _, labels = mask_tokens(ids, maskable, MASK_ID, VOCAB, prob=0.0, generator=g,
                                min_masked=1)
        chosen = labels != -100
        assert chosen.sum(-1).tolist() == [1, 1, 0]  # one per row that has a maskable token
        assert labels[0, 0] == 2000 and not chosen[~maskable].any()
        g = torch.Generator().manual_seed(seed)
        _, labels = mask_tokens(ids, maskable, MASK_ID, VOCAB, prob=0.0, generator=g)
        assert (labels == -100).all()  # BERT's masking, the default: no floor
    # min_masked larger than the maskable count takes all of them, no more.
    _, labels = mask_tokens(ids, maskable, MASK_ID, VOCAB, prob=0.0, min_masked=5)
    assert torch.equal(labels != -100, maskable)


def test_leading_dims_and_errors():
    ids, maskable = _batch(rows=12, length=10)
    masked, labels = mask_tokens(ids.view(3, 4, 10), maskable.view(3, 4, 10), MASK_ID, VOCAB)
    assert masked.shape == labels.shape == (3, 4, 10)
    with pytest.raises(ValueError, match="same shape"):
        mask_tokens(ids, maskable[:, :5], MASK_ID, VOCAB)


def test_the_floor_against_berts_rate_on_five_token_phrases():
    """On 5-word-piece captions BERT's masking (no floor, the default) leaves 0.85^5 = 0.444 of
    them without a target and masks 0.75 tokens a caption; a floor of one adds the 0.444, i.e.
    59 % more masked tokens."""
    ids = torch.full((40000, 5), 2000)
    maskable = torch.ones(40000, 5, dtype=torch.bool)
    chosen = {}
    for floor in (0, 1):
        g = torch.Generator().manual_seed(0)
        chosen[floor] = mask_tokens(ids, maskable, MASK_ID, VOCAB, generator=g,
                                    min_masked=floor)[1] != -100
    none = (~chosen[0].any(-1)).float().mean().item()
    assert none == pytest.approx(0.85**5, abs=0.01)
    assert chosen[0].sum(-1).float().mean().item() == pytest.approx(0.75, abs=0.01)
    assert chosen[1].any(-1).all()
    more = chosen[1].sum().item() / chosen[0].sum().item() - 1
    assert more == pytest.approx(0.85**5 / 0.75, abs=0.02)  # 0.59
