"""The pre-training step: batch composition, which pairs carry which loss, the weighted total."""

from __future__ import annotations

import pytest
import torch

from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.tasks.pretrain import mfr_visual_mask, pretrain_losses

SMALL = [
    "model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.text.hidden_size=32",
    "model.text.num_layers=2", "model.text.num_heads=2", "model.text.intermediate_size=64",
    "model.text.max_text_len=12", "objectives.ipot_iters=5",
]


class Spy(torch.nn.Module):
    """Records how the step calls the model."""

    def __init__(self, model: VisualParsingModel) -> None:
        super().__init__()
        self.model = model
        self.encode_calls: list[int] = []
        self.fuse_calls: list[tuple[int, bool]] = []
        self.mlm_head, self.itm_head, self.mfr_head = model.mlm_head, model.itm_head, model.mfr_head

    def encode_image(self, images, output_attentions=False):
        self.encode_calls.append(images.shape[0])
        return self.model.encode_image(images, output_attentions=output_attentions)

    def fuse(self, visual_tokens, input_ids, attention_mask, visual_mask=None, **kw):
        self.fuse_calls.append((input_ids.shape[0], visual_mask is not None))
        return self.model.fuse(visual_tokens, input_ids, attention_mask, visual_mask, **kw)


def _batch(bsz: int, n_txt: int, length: int, m: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (bsz, n_txt, length), generator=g)
    mask = torch.ones_like(ids)
    mask[..., -3:] = 0
    ids = ids * mask
    labels = torch.full_like(ids, -100)
    labels[..., 1] = ids[..., 1]
    labels[..., 3] = ids[..., 3]
    mlm_ids = ids.clone()
    mlm_ids[..., 1] = 103
    mlm_ids[..., 3] = 103
    return {
        "image": torch.randn(bsz, 3, 96, 96, generator=g), "input_ids": ids,
        "attention_mask": mask, "mlm_input_ids": mlm_ids, "mlm_labels": labels,
        "mfr_noise": torch.rand(bsz, m, generator=g),
    }


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("tiny", SMALL)
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048).eval()
    return cfg, model


def test_batch_composition_separate(setup):
    cfg, model = setup
    spy = Spy(model)
    batch = _batch(3, 4, 12, model.num_visual_tokens)
    out = pretrain_losses(spy, batch, cfg.objectives)
    # the parser runs once for the 3 images; its tokens serve 3 x 4 pairs, then 3 x 2 matched
    assert spy.encode_calls == [3]
    assert spy.fuse_calls == [(12, False), (6, True)]
    assert out.counts["itm_total"] == 12
    # MLM targets come from the matched pairs only: 2 masked tokens x 2 matched x 3 images
    assert out.counts["mlm_total"] == 12
    expected = out.mlm + cfg.objectives.lambda_itm * (
        out.itm + cfg.objectives.vla_weight * out.vla
    ) + cfg.objectives.lambda_mfr * out.mfr
    torch.testing.assert_close(out.loss, expected)
    spread = out.scalars()["visual_spread"]
    torch.testing.assert_close(
        torch.tensor(spread), model.encode_image(batch["image"]).tokens.std(0).mean()
    )


def test_mlm_weight_scales_only_the_mlm_term(setup):
    cfg, model = setup
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    full = pretrain_losses(model, batch, cfg.objectives)
    part = pretrain_losses(model, batch, cfg.objectives, mlm_weight=0.25)
    torch.testing.assert_close(part.mlm, full.mlm)  # still reported
    torch.testing.assert_close(part.loss, full.loss - 0.75 * full.mlm)


def test_mlm_weight_zero_skips_the_masked_pass(setup):
    cfg, model = setup
    o = cfg.objectives
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    full = pretrain_losses(model, batch, o)
    spy = Spy(model)
    off = pretrain_losses(spy, batch, o, mlm_weight=0.0)
    assert spy.fuse_calls == [(8, False)]  # the clean pass only: MFR waits with MLM
    assert off.mlm is None and off.mfr is None and "mlm_total" not in off.counts
    assert {"mlm", "mfr", "mlm_acc"}.isdisjoint(off.scalars())
    torch.testing.assert_close(off.loss, full.loss - full.mlm - o.lambda_mfr * full.mfr)
    # the shared pass has the masked inputs anyway: both are still computed and reported
    shared = load_config("tiny", [*SMALL, "objectives.itm_pass=shared"]).objectives
    out = pretrain_losses(model, batch, shared, mlm_weight=0.0)
    assert out.mlm is not None and out.mfr is not None and out.counts["mlm_total"] == 8


def test_unmatched_pairs_carry_no_mlm_or_mfr(setup):
    cfg, model = setup
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    a = pretrain_losses(model, batch, cfg.objectives)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["mlm_input_ids"][:, 2:] = 7  # the unmatched texts' masked versions
    changed["mlm_labels"][:, 2:] = 1
    b = pretrain_losses(model, changed, cfg.objectives)
    torch.testing.assert_close(a.mlm, b.mlm)
    torch.testing.assert_close(a.mfr, b.mfr)


def test_shared_pass_single_fuse(setup):
    cfg, model = setup
    o = load_config("tiny", [*SMALL, "objectives.itm_pass=shared"]).objectives
    spy = Spy(model)
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    out = pretrain_losses(spy, batch, o)
    assert spy.encode_calls == [2] and spy.fuse_calls == [(8, True)]
    assert out.counts["mlm_total"] == 8 and torch.isfinite(out.loss)


def test_mfr_modes(setup):
    cfg, model = setup
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    off = load_config("tiny", [*SMALL, "objectives.mfr_mode=off"]).objectives
    assert float(pretrain_losses(model, batch, off).mfr) == 0.0
    rand = load_config("tiny", [*SMALL, "objectives.mfr_mode=random"]).objectives
    mask = mfr_visual_mask(rand, batch["mfr_noise"], None)
    assert mask.sum(1).tolist() == [rand.mfr_k] * 2
    assert mask[torch.arange(2), batch["mfr_noise"].argmax(1)].all()  # the anchor is masked
    with pytest.raises(ValueError, match="needs the visual embedder's attention"):
        mfr_visual_mask(cfg.objectives, batch["mfr_noise"], None)
    ratio = load_config("tiny", [*SMALL, "objectives.mfr_ratio=0.25"]).objectives
    att = torch.rand(2, model.num_visual_tokens, model.num_visual_tokens).softmax(-1)
    assert mfr_visual_mask(ratio, batch["mfr_noise"], att).sum(1).tolist() == [9, 9]


def test_backward_reaches_every_part(setup):
    cfg, model = setup
    model.train()
    model.zero_grad()
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    pretrain_losses(model, batch, cfg.objectives).loss.backward()
    for name in ("visual", "visual_embed", "encoder", "mlm_head", "itm_head", "mfr_head"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    model.eval()
