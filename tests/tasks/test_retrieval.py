"""Retrieval: recall@k of the ranking, batch composition, cached-token scoring, re-ranking."""

from __future__ import annotations

import pytest
import torch

from vlparse.config import FinetuneConfig, load_config
from vlparse.models.task_registry import task_model_class
from vlparse.tasks.retrieval import (
    chance_recall,
    rerank_candidates,
    retrieval_metrics,
    retrieval_step,
    score_matrix,
    training_pairs,
)

SMALL = [
    "model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.visual.image_size=64",
    "model.visual.window_size=4", "model.text.hidden_size=32", "model.text.num_layers=2",
    "model.text.num_heads=2", "model.text.intermediate_size=64", "model.text.max_text_len=12",
]


def _brute_recall(scores: torch.Tensor, caption_image: torch.Tensor, k: int) -> tuple[float, float]:
    """TR and IR recall@k by sorting every query's candidates in Python."""
    n_img, n_txt = scores.shape
    tr_hits = 0
    for i in range(n_img):
        order = sorted(range(n_txt), key=lambda t: -float(scores[i, t]))
        tr_hits += any(int(caption_image[t]) == i for t in order[:k])
    ir_hits = 0
    for t in range(n_txt):
        order = sorted(range(n_img), key=lambda i: -float(scores[i, t]))
        ir_hits += int(caption_image[t]) in order[:k]
    return tr_hits / n_img, ir_hits / n_txt


def test_recall_matches_brute_force_both_directions():
    g = torch.Generator().manual_seed(0)
    n_img, n_txt = 13, 40
    caption_image = torch.cat([torch.arange(n_img), torch.randint(n_img, (n_txt - n_img,),
                                                                  generator=g)])
    caption_image = caption_image[torch.randperm(n_txt, generator=g)]
    scores = torch.randn(n_img, n_txt, generator=g)
    got = retrieval_metrics(scores, scores, caption_image)
    assert set(got) == {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"}
    for k in (1, 5, 10):
        tr, ir = _brute_recall(scores, caption_image, k)
        assert got[f"tr_r{k}"] == pytest.approx(tr)
        assert got[f"ir_r{k}"] == pytest.approx(ir)
    # a perfect score matrix gives recall 1; its negation gives 0 at k=1
    perfect = (caption_image[None, :] == torch.arange(n_img)[:, None]).float()
    assert all(v == 1.0 for v in retrieval_metrics(perfect, perfect, caption_image).values())
    worst = retrieval_metrics(-perfect, -perfect, caption_image)
    assert worst["tr_r1"] == 0.0 and worst["ir_r1"] == 0.0


def test_chance_recall_closed_form():
    caption_image = torch.tensor([0, 0, 1, 2, 2, 2])  # 3 images, 6 captions
    c = chance_recall(caption_image, 3)
    assert c["chance_ir_r1"] == pytest.approx(1 / 3) and c["chance_ir_r5"] == 1.0
    # TR@1 = mean of p / T over images
    assert c["chance_tr_r1"] == pytest.approx((2 + 1 + 3) / 6 / 3)


def test_training_pairs_composition():
    img, txt, labels = training_pairs(5, 3)
    assert img.shape == txt.shape == labels.shape == (5 * 4,)
    assert labels[:5].tolist() == [1] * 5 and labels[5:].sum() == 0
    assert bool((img[:5] == txt[:5]).all()) and bool((img[5:] != txt[5:]).all())
    # each caption of the batch is an unaligned partner of num_neg distinct images
    for t in range(5):
        partners = img[5:][txt[5:] == t].tolist()
        assert len(partners) == 3 and len(set(partners)) == 3
    # more negatives than other images: capped at B - 1
    assert training_pairs(2, 3)[0].numel() == 2 * 2


@pytest.fixture(scope="module")
def small_model():
    cfg = load_config("retrieval_world", SMALL, cls=FinetuneConfig)
    torch.manual_seed(0)
    from vlparse.models.single_stream import VisualParsingModel

    backbone = VisualParsingModel(cfg.model, 1000, cls_token_id=1, sep_token_id=2)
    cls = task_model_class(cfg.model.family, "retrieval")
    return cls.from_backbone(backbone, cfg.task, pretrained=True).eval(), cfg


def _texts(n: int, length: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (n, length), generator=g)
    mask = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        mask[i, : 2 + (i * 3) % (length - 1)] = 1  # varied lengths
    return ids * mask, mask


def test_head_starts_from_itm(small_model):
    model, _ = small_model
    torch.testing.assert_close(model.head.fc.weight, model.backbone.itm_head.fc.weight)
    torch.testing.assert_close(model.head.fc.bias, model.backbone.itm_head.fc.bias)


def test_cached_tokens_equal_per_pair_scoring(small_model):
    model, _ = small_model
    g = torch.Generator().manual_seed(2)
    images = torch.randn(2, 3, 64, 64, generator=g)
    ids, mask = _texts(5, 12)
    tokens = model.encode_images(images)
    fast = score_matrix(model, tokens, ids, mask, batch_pairs=3)  # chunks cross text blocks
    assert fast.shape == (2, 5)
    for i in range(2):
        for t in range(5):
            with torch.no_grad():
                out = model.backbone(images[i : i + 1], ids[t : t + 1], mask[t : t + 1])
                logits = model.head(out.cls)[0]
            torch.testing.assert_close(fast[i, t], logits[1] - logits[0], atol=1e-4, rtol=1e-4)
    # a candidate mask scores only those pairs, with the same values
    cand = torch.rand(2, 5, generator=g) > 0.5
    part = score_matrix(model, tokens, ids, mask, candidates=cand, batch_pairs=3)
    torch.testing.assert_close(part[cand], fast[cand], atol=1e-5, rtol=1e-5)
    assert bool(torch.isinf(part[~cand]).all())
    # passes padded to a multiple of 8 (few shapes) or cut exactly: the same scores
    seen = []
    real = model.match_scores
    model.match_scores = lambda f, i, m: seen.append(i.shape[1]) or real(f, i, m)
    exact = score_matrix(model, tokens, ids, mask, batch_pairs=3, length_multiple=1)
    bucketed = score_matrix(model, tokens, ids, mask, batch_pairs=3)
    del model.match_scores
    half = len(seen) // 2
    assert seen[:half] != seen[half:] and all(w % 8 == 0 or w == 12 for w in seen[half:])
    torch.testing.assert_close(bucketed, exact, atol=1e-5, rtol=1e-5)


def test_rerank_candidates_are_top_k_both_ways():
    g = torch.Generator().manual_seed(4)
    cheap = torch.randn(6, 9, generator=g)
    tr, ir = rerank_candidates(cheap, 2)
    assert tr.sum(1).tolist() == [2] * 6 and ir.sum(0).tolist() == [2] * 9
    for i in range(6):
        assert set(tr[i].nonzero().flatten().tolist()) == set(cheap[i].topk(2).indices.tolist())
    tr_all, ir_all = rerank_candidates(cheap, 100)
    assert bool(tr_all.all()) and bool(ir_all.all())


def test_retrieval_step_backward_and_duplicates(small_model):
    model, _ = small_model
    g = torch.Generator().manual_seed(3)
    ids, mask = _texts(4, 12)
    ids[2], mask[2] = ids[1], mask[1]  # image 2's caption is word for word image 1's
    batch = {"image": torch.randn(4, 3, 64, 64, generator=g), "input_ids": ids,
             "attention_mask": mask}
    model.train()
    out = retrieval_step(model, batch, lambda t: t, num_neg=1)
    model.eval()
    # 4 aligned + 4 unaligned pairs, minus (image 1, caption 2): the same words as its own
    assert out.counts["match_total"] == 7
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.head.fc.weight.grad is not None
    assert any(q.grad is not None for q in model.backbone.visual.parameters())
    model.zero_grad(set_to_none=True)
