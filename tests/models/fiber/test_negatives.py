"""ITM negatives of FIBER's pre-training: which entries may be drawn, how often each is drawn,
the assembled fused pass, and the learnable ITC temperature on the model."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.config import OptimConfig
from vlparse.config.fiber import FiberObjectiveConfig
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.negatives import (
    allowed_negatives,
    draw_negatives,
    itm_inputs,
    sample_rows,
)
from vlparse.objectives.contrastive import clamp_temperature, contrastive_logits, itc_loss

# 4 images with 3 captions each, interleaved: pair k shows image k % 4
IDS = torch.arange(12) % 4


def _same_image_favoured(draws: int) -> torch.Tensor:
    """Embeddings where each pair's other captions are by far its most similar entries,
    repeated ``draws`` times: a rule that let them through would draw them almost always."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g)
    emb = centres[IDS] + 0.05 * torch.randn(12, 8, generator=g)
    return emb.repeat(draws, 1), IDS.repeat(draws)


def test_hard_negatives_never_pick_a_caption_of_the_same_image():
    emb, ids = _same_image_favoured(200)
    logits = contrastive_logits(emb, emb, 0.05, ids)
    neg = draw_negatives(logits, generator=torch.Generator().manual_seed(1))
    assert neg.fallbacks == 0 and neg.text_for_image.shape == (2400,)
    for drawn in (neg.text_for_image, neg.image_for_text):
        assert bool((ids[drawn] != ids).all())
        assert len(set(drawn.tolist())) > 100  # draws, not one fixed choice


def test_pair_mode_draws_other_captions_of_the_image_but_never_the_pair():
    emb, ids = _same_image_favoured(1)
    gen = torch.Generator().manual_seed(2)
    for given in (ids, None):  # ITC with and without image ids
        logits = contrastive_logits(emb, emb, 0.05, given)
        drawn = torch.stack([draw_negatives(logits, exclude="pair", generator=gen).text_for_image
                             for _ in range(100)])
        assert bool((drawn != torch.arange(12)).all())
        assert (ids[drawn] == ids).float().mean() > 0.9  # the released rule's false negatives


def test_hard_draws_follow_the_softmax_over_the_allowed_entries():
    row = [2.0, 0.5, -1.0, 1.0, 3.0, 0.0]
    allowed = torch.tensor([[True, True, True, True, False, True]])  # the pair: column 4
    n = 20000
    gen = torch.Generator().manual_seed(3)
    drawn = sample_rows(torch.tensor([row]).expand(n, 6), allowed.expand(n, 6), "hard", gen)
    counts = torch.bincount(drawn, minlength=6).tolist()
    assert counts[4] == 0
    mass = sum(math.exp(x) for k, x in enumerate(row) if k != 4)
    expected = [0.0 if k == 4 else n * math.exp(x) / mass for k, x in enumerate(row)]
    chi2 = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True) if e)
    assert chi2 < 20.5  # the 0.1 % point of chi-square with 4 degrees of freedom is 18.47
    for c, e in zip(counts, expected, strict=True):
        assert abs(c - e) / n < 0.012


def test_random_draws_are_uniform_and_a_tiny_temperature_does_not_underflow():
    n = 12000
    row = torch.tensor([[-1000.0, -1200.0, 900.0, -1100.0]])  # the excluded pair holds the mass
    allowed = torch.tensor([[True, True, False, True]])
    gen = torch.Generator().manual_seed(4)
    uniform = sample_rows(row.expand(n, 4), allowed.expand(n, 4), "random", gen)
    freq = torch.bincount(uniform, minlength=4).float() / n
    torch.testing.assert_close(freq, torch.tensor([1 / 3, 1 / 3, 0.0, 1 / 3]), atol=0.02, rtol=0)
    hard = sample_rows(row, allowed, "hard", gen)  # softmax over the allowed: column 0
    assert hard.tolist() == [0]
    with pytest.raises(ValueError, match="no allowed entry"):
        sample_rows(row[:, :1], torch.tensor([[False]]))


def test_allowed_entries_and_the_fallback_for_a_pool_of_one_image():
    own = torch.tensor([0, 1, 2])
    ids = torch.tensor([5, 6, 5])
    got = allowed_negatives(own, 3, ids, ids, "same_image")
    assert got.tolist() == [[False, True, False], [True, False, True], [False, True, False]]
    assert allowed_negatives(own, 3, ids, ids, "pair").tolist() == [
        [False, True, True], [True, False, True], [True, True, False]]
    emb = torch.randn(2, 4)
    logits = contrastive_logits(emb, emb, 0.1, torch.tensor([3, 3]))  # two captions, one image
    neg = draw_negatives(logits, pool="local")
    assert neg.fallbacks == 2 and neg.text_for_image.tolist() == [1, 0]


def test_itm_inputs_of_the_local_pool():
    images = torch.arange(3.0)[:, None, None, None].expand(3, 3, 2, 2)
    ids = torch.tensor([[1, 10, 2], [1, 11, 2], [1, 12, 2]])
    mask = torch.ones_like(ids)
    emb = torch.eye(3)
    logits = contrastive_logits(emb, emb, 0.1)
    neg = draw_negatives(logits, mode="random", pool="local",
                         generator=torch.Generator().manual_seed(5))
    itm = itm_inputs(images, ids, mask, neg, pad_id=0)
    ti, it = neg.text_for_image, neg.image_for_text
    assert itm.images[:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, *it.tolist()]
    assert itm.input_ids[:, 1].tolist() == [10, 11, 12, *(10 + ti).tolist(), 10, 11, 12]
    assert itm.labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert bool((ti != torch.arange(3)).all() and (it != torch.arange(3)).all())


def test_the_model_learns_its_itc_temperature_through_a_pretraining_step(make_config, batch):
    objectives = FiberObjectiveConfig(itc_temperature=0.05)
    model = FiberModel(make_config(), objectives)
    tau = model.itc.temperature
    assert tau.item() == pytest.approx(0.05) and FiberModel(make_config()).itc.temperature == 0.07
    names = [g["name"] for g in model.param_groups(OptimConfig())
             if any(p is tau for p in g["params"])]
    assert names == ["head_no_decay"]
    images, ids, mask = batch
    image = model.encode_image(images).embeds
    text = model.encode_text(ids, mask).embeds
    logits = contrastive_logits(image, text, clamp_temperature(tau, 0.001, 1.0),
                                torch.tensor([0, 1]))
    neg = draw_negatives(logits, generator=torch.Generator().manual_seed(6))
    itm = itm_inputs(images, ids, mask, neg, pad_id=0)
    out = model(itm.images, itm.input_ids, itm.attention_mask)
    itm_logits = model.itm_logits(out.pooler_output)
    assert itm_logits.shape == (6, 2)
    loss = itc_loss(logits.i2t, logits.t2i, logits.targets)
    (loss + torch.nn.functional.cross_entropy(itm_logits, itm.labels)).backward()
    assert tau.grad is not None and tau.grad != 0
    assert model.itm_head.fc.weight.grad.abs().sum() > 0


def test_uniforms_pick_the_entry_whose_cumulative_share_holds_them():
    # allowed weights of the hard rule by hand: softmax of [2, 0.5, 1] over columns 0, 1, 3
    row = torch.tensor([[2.0, 0.5, -1.0, 1.0]])
    allowed = torch.tensor([[True, True, False, True]])
    p = torch.tensor([2.0, 0.5, 1.0]).exp()
    p = p / p.sum()  # columns 0, 1, 3
    edges = [float(p[0]), float(p[0] + p[1])]
    cases = [(0.0, 0), (edges[0] - 1e-4, 0), (edges[0] + 1e-4, 1), (edges[1] - 1e-4, 1),
             (edges[1] + 1e-4, 3), (0.999999, 3)]
    for u, column in cases:
        assert int(sample_rows(row, allowed, "hard", noise=torch.tensor([u]))) == column, u
    # random: each allowed column a third of [0, 1)
    for u, column in [(0.1, 0), (0.4, 1), (0.7, 3)]:
        assert int(sample_rows(row, allowed, "random", noise=torch.tensor([u]))) == column
    # a fine grid of uniforms reproduces the distribution within the grid's resolution
    grid = (torch.arange(3000) + 0.5) / 3000
    drawn = sample_rows(row.expand(3000, 4), allowed.expand(3000, 4), noise=grid)
    freq = torch.bincount(drawn, minlength=4).double() / 3000
    torch.testing.assert_close(freq[[0, 1, 3]], p.double(), atol=1e-3, rtol=0)
    assert freq[2] == 0


def test_uniform_draws_depend_on_the_rows_own_uniforms():
    emb, ids = _same_image_favoured(1)
    logits = contrastive_logits(emb, emb, 0.05, ids)
    noise = torch.rand(12, 2, generator=torch.Generator().manual_seed(4))
    whole = draw_negatives(logits, noise=noise)
    assert bool((ids[whole.text_for_image] != ids).all())
    assert bool((ids[whole.image_for_text] != ids).all())
    # new uniforms for the second half: the first half draws what it drew
    other = torch.cat([noise[:6], torch.rand(6, 2, generator=torch.Generator().manual_seed(5))])
    again = draw_negatives(logits, noise=other)
    assert torch.equal(again.text_for_image[:6], whole.text_for_image[:6])
    assert torch.equal(again.image_for_text[:6], whole.image_for_text[:6])
    assert not torch.equal(again.text_for_image, whole.text_for_image)
    with pytest.raises(ValueError, match="noise must be"):
        draw_negatives(logits, noise=noise[:, :1])
