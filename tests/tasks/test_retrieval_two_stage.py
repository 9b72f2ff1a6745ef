"""Retrieval in two stages with FIBER: the dual encoder's ITC scores rank everything, the fused
ITM re-ranks each query's top k. Checked against a brute-force ITC shortlist and the full ITM
ranking, with the pairs the fused model scores counted."""

from __future__ import annotations

import pytest
import torch

from vlparse.config.fiber import (
    FiberFusionConfig,
    FiberModelConfig,
    FiberTextConfig,
    FiberVisualConfig,
)
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.tasks import FiberForImageAndTextRetrieval
from vlparse.tasks.retrieval import rank_pairs, retrieval_metrics

N_IMG, N_TXT, VOCAB = 6, 14, 40


def _model() -> FiberForImageAndTextRetrieval:
    visual = FiberVisualConfig(
        arch="swin_tiny_patch4_window7_224", image_size=32, window_size=4, patch_size=4,
        embed_dim=8, depths=[2, 2], num_heads=[1, 2], drop_path_rate=0.0, pretrained=None,
    )
    text = FiberTextConfig(
        kind="bert", tokenizer="bert-base-uncased", pretrained=None, vocab_size=VOCAB,
        hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32,
        max_position_embeddings=32, type_vocab_size=2, pad_token_id=0, dropout=0.0,
        attention_dropout=0.0, max_text_len=12,
    )
    cfg = FiberModelConfig(name="test", visual=visual, text=text,
                           fusion=FiberFusionConfig(num_layers=2), hidden_size=12, itc_dim=6)
    torch.manual_seed(0)
    backbone = FiberModel(cfg)
    with torch.no_grad():
        for a, b in zip(backbone.i2t, backbone.t2i, strict=True):
            a.gate.fill_(0.8)
            b.gate.fill_(-0.5)
        backbone.itm_head.fc.weight.normal_(0, 1.0)  # spread the scores: no near-ties
    return FiberForImageAndTextRetrieval(backbone, init_from_itm=True).eval()


class _Counting(torch.nn.Module):
    """The retrieval model with every pair its fused ITM scores recorded."""

    def __init__(self, model: FiberForImageAndTextRetrieval) -> None:
        super().__init__()
        self.model = model
        self.scored: list[int] = []

    def encode_images(self, images):
        return self.model.encode_images(images)

    def shortlist_embeddings(self, *args):
        return self.model.shortlist_embeddings(*args)

    def match_scores(self, features, ids, mask):
        self.scored.append(ids.shape[0])
        return self.model.match_scores(features, ids, mask)


@pytest.fixture(scope="module")
def setup():
    model = _model()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(N_IMG, 3, 32, 32, generator=g)
    ids = torch.randint(1, VOCAB, (N_TXT, 10), generator=g)
    mask = torch.ones_like(ids)
    for t in range(N_TXT):
        mask[t, 3 + t % 7 :] = 0
    ids = ids * mask
    caption_image = torch.arange(N_TXT) % N_IMG
    with torch.no_grad():
        features = model.encode_images(images)
    return model, images, features, ids, mask, caption_image


def test_k_covering_every_candidate_is_the_full_itm_ranking(setup):
    model, _, features, ids, mask, caption_image = setup
    full = rank_pairs(model, features, ids, mask, rerank_k=0, batch_pairs=7)
    two = rank_pairs(model, features, ids, mask, rerank_k=max(N_IMG, N_TXT), batch_pairs=5)
    assert full.pairs == two.pairs == N_IMG * N_TXT
    torch.testing.assert_close(two.scores_tr, full.scores_tr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two.scores_ir, full.scores_ir, rtol=1e-5, atol=1e-5)
    assert torch.equal(two.scores_tr.argsort(dim=1), full.scores_tr.argsort(dim=1))
    assert torch.equal(two.scores_ir.argsort(dim=0), full.scores_ir.argsort(dim=0))
    assert (retrieval_metrics(two.scores_tr, two.scores_ir, caption_image)
            == retrieval_metrics(full.scores_tr, full.scores_ir, caption_image))


def test_full_ranking_is_the_fused_itm_of_every_pair(setup):
    model, images, features, ids, mask, _ = setup
    full = rank_pairs(model, features, ids, mask, rerank_k=0, batch_pairs=9)
    with torch.no_grad():
        for i in (0, N_IMG - 1):
            for t in (0, 5, N_TXT - 1):
                out = model.backbone(images[i : i + 1], ids[t : t + 1], mask[t : t + 1])
                z = model.backbone.itm_logits(out.pooler_output)[0]
                torch.testing.assert_close(full.scores_tr[i, t], z[1] - z[0], rtol=1e-4,
                                           atol=1e-5)


def test_small_k_scores_only_the_itc_top_k_of_each_query(setup):
    model, images, features, ids, mask, _ = setup
    k = 2
    counting = _Counting(model)
    two = rank_pairs(counting, features, ids, mask, rerank_k=k, batch_pairs=4)
    full = rank_pairs(model, features, ids, mask, rerank_k=0)
    # the shortlist: the dual encoder's ITC similarities, top k by brute force
    with torch.no_grad():
        sims = model.backbone.encode_image(images).embeds @ model.backbone.encode_text(
            ids, mask).embeds.t()
    torch.testing.assert_close(two.shortlist, sims, rtol=1e-5, atol=1e-5)
    tr = torch.isfinite(two.scores_tr)
    ir = torch.isfinite(two.scores_ir)
    assert tr.sum(1).tolist() == [k] * N_IMG and ir.sum(0).tolist() == [k] * N_TXT
    for i in range(N_IMG):
        assert set(tr[i].nonzero().flatten().tolist()) == set(sims[i].topk(k).indices.tolist())
    for t in range(N_TXT):
        assert set(ir[:, t].nonzero().flatten().tolist()) == set(
            sims[:, t].topk(k).indices.tolist())
    # each shortlisted pair scored once by the fused model, with the full ranking's score
    union = int((tr | ir).sum())
    assert sum(counting.scored) == two.pairs == union <= k * (N_IMG + N_TXT) < N_IMG * N_TXT
    torch.testing.assert_close(two.scores_tr[tr], full.scores_tr[tr], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two.scores_ir[ir], full.scores_ir[ir], rtol=1e-5, atol=1e-5)
    assert two.shortlist_s > 0 and two.full_s > 0


FIBER_SMALL = ["model.visual.embed_dim=16", "model.visual.num_heads=[1,2]",
               "model.text.pretrained=null", "model.text.hidden_size=32",
               "model.text.num_layers=2", "model.text.num_heads=2",
               "model.text.intermediate_size=64", "model.text.max_text_len=20",
               "model.fusion.num_layers=2", "model.hidden_size=16", "model.itc_dim=8"]


def test_finetune_from_a_fiber_run_and_evaluate_both_ways(scene_world, tmp_path):
    """``vlparse finetune retrieval --config retrieval_fiber_world --init RUN`` on a FIBER
    pre-training run, then ``vlparse evaluate`` with the full ITM ranking and in two stages."""
    import json

    from vlparse.cli import main

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    loop = ["train.progress=false", "data.num_workers=0", "train.log_every=1"]
    assert main(["pretrain", "--config", "fiber_tiny", "--data", str(scene_world), "--out",
                 str(pre), *FIBER_SMALL, *loop, "train.max_steps=1", "train.batch_size=4",
                 "train.eval_images=4"]) == 0
    assert main(["finetune", "retrieval", "--config", "retrieval_fiber_world", "--init", str(pre),
                 "--out", str(ft), "--data", str(scene_world), *loop, "train.max_steps=1",
                 "train.batch_size=4", "task.num_neg=1"]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["model"] == "fiber_tiny"
    assert json.loads((ft / "model" / "config.json").read_text())["architecture"] == (
        "FiberForImageAndTextRetrieval")
    base = ["evaluate", "retrieval", "--checkpoint", str(ft), "--data", str(scene_world),
            "--split", "test", "--no-progress", "--workers", "0"]
    full, two, every = tmp_path / "full.json", tmp_path / "two.json", tmp_path / "every.json"
    assert main([*base, "--out", str(full), "--rerank-k", "0"]) == 0
    assert main([*base, "--out", str(two), "--rerank-k", "2"]) == 0
    assert main([*base, "--out", str(every), "--rerank-k", "1000"]) == 0
    a, b, c = (json.loads(p.read_text()) for p in (full, two, every))
    n_img, n_txt = a["num_images"], a["num_captions"]
    assert a["pairs_scored"] == a["pairs_all"] == n_img * n_txt and "shortlist_tr_r1" not in a
    assert b["pairs_scored"] <= 2 * (n_img + n_txt) and b["pairs_all"] == n_img * n_txt
    assert {"shortlist_tr_r1", "shortlist_ir_r10", "shortlist_s", "rerank_s"} <= set(b)
    for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"):
        assert c[k] == a[k], k  # every candidate re-ranked: the full ranking
