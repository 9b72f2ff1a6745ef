"""Which visual tokens MFR masks (vlparse.models.visual_masking): token counts, attention-guided
and random masks against a brute-force reference, and the mask of a batch by mode."""

import pytest
import torch

from vlparse.models import visual_masking as vm


def _reference(scores: torch.Tensor, anchor: torch.Tensor, k: int) -> torch.Tensor:
    """Python loop: the anchor plus the k-1 other tokens of highest score, lower index on ties."""
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for b in range(scores.shape[0]):
        a = int(anchor[b])
        others = sorted(
            (j for j in range(scores.shape[1]) if j != a), key=lambda j: (-float(scores[b, j]), j)
        )
        out[b, a] = True
        for j in others[: k - 1]:
            out[b, j] = True
    return out


def test_num_mfr_tokens():
    assert vm.num_mfr_tokens(144, 7, None) == 7
    assert vm.num_mfr_tokens(49, 7, 0.15) == 7  # round(7.35)
    assert vm.num_mfr_tokens(144, 7, 0.15) == 22  # round(21.6)
    assert vm.num_mfr_tokens(4, 7, None) == 4  # at most m
    assert vm.num_mfr_tokens(4, 7, 0.01) == 1  # at least 1
    assert vm.num_mfr_tokens(10, 3, 1.0) == 10
    with pytest.raises(ValueError, match="ratio"):
        vm.num_mfr_tokens(10, 3, 1.5)
    with pytest.raises(ValueError, match="k must be"):
        vm.num_mfr_tokens(10, 0, None)


def test_attention_guided_mask_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for m, k in [(16, 7), (49, 7), (9, 1), (9, 9), (25, 4)]:
        attention = torch.rand(6, m, m, generator=g).softmax(-1)
        anchor = torch.randint(0, m, (6,), generator=g)
        mask = vm.attention_guided_mask(attention, anchor, k)
        rows = attention[torch.arange(6), anchor]
        assert mask.dtype == torch.bool and mask.shape == (6, m)
        assert (mask.sum(-1) == k).all()
        assert mask[torch.arange(6), anchor].all()
        assert torch.equal(mask, _reference(rows, anchor, k))


def test_attention_guided_mask_ties_and_self_attention():
    # The anchor attends most to itself; equal weights are broken by the lower index.
    attention = torch.zeros(1, 6, 6)
    attention[0, 2] = torch.tensor([0.1, 0.2, 0.9, 0.2, 0.2, 0.1])
    mask = vm.attention_guided_mask(attention, torch.tensor([2]), 3)
    assert mask[0].nonzero().flatten().tolist() == [1, 2, 3]
    # Block-diagonal attention with zeros everywhere: still exactly k per row.
    mask = vm.attention_guided_mask(torch.zeros(2, 5, 5), torch.tensor([4, 0]), 3)
    assert mask.tolist() == [[True, True, False, False, True], [True, True, True, False, False]]


def test_random_mask_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(8, 30, generator=g)
    anchor = torch.randint(0, 30, (8,), generator=g)
    mask = vm.random_mask(noise, anchor, 5)
    assert (mask.sum(-1) == 5).all()
    assert torch.equal(mask, _reference(noise, anchor, 5))


def test_mask_errors():
    with pytest.raises(ValueError, match="k must be in"):
        vm.random_mask(torch.rand(2, 4), torch.tensor([0, 1]), 5)
    with pytest.raises(ValueError, match="anchor indices"):
        vm.attention_guided_mask(torch.rand(2, 4, 4), torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError, match="anchor must be"):
        vm.random_mask(torch.rand(2, 4), torch.tensor([0]), 2)


def test_mfr_visual_mask_by_mode():
    g = torch.Generator().manual_seed(2)
    noise = torch.rand(2, 36, generator=g)
    assert vm.mfr_visual_mask("off", 4, None, noise, None) is None
    mask = vm.mfr_visual_mask("random", 4, None, noise, None)
    assert mask.sum(1).tolist() == [4, 4]
    assert mask[torch.arange(2), noise.argmax(1)].all()  # the anchor is masked
    with pytest.raises(ValueError, match="needs the visual embedder's attention"):
        vm.mfr_visual_mask("attention", 4, None, noise, None)
    att = torch.rand(2, 36, 36, generator=g).softmax(-1)
    assert vm.mfr_visual_mask("attention", 4, 0.25, noise, att).sum(1).tolist() == [9, 9]
    assert torch.equal(vm.mfr_visual_mask("attention", 4, None, noise, att),
                       _reference(att[torch.arange(2), noise.argmax(1)], noise.argmax(1), 4))
