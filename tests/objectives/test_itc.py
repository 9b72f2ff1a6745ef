"""The optional image-text contrastive loss and its place in the pre-training step."""

from __future__ import annotations

import math

import pytest
import torch

from vlparse.config import load_config
from vlparse.errors import ConfigError
from vlparse.objectives.itc import itc_loss


def _by_hand(img, txt, owner, tau):
    img = [v / v.norm() for v in img]
    txt = [v / v.norm() for v in txt]
    s = [[float(t @ i) / tau for i in img] for t in txt]
    t2i = sum(
        math.log(sum(math.exp(x) for x in row)) - row[o] for row, o in zip(s, owner, strict=True)
    ) / len(txt)
    i2t, n = 0.0, 0
    for b in range(len(img)):
        col = [s[t][b] for t in range(len(txt))]
        pos = [col[t] for t in range(len(txt)) if owner[t] == b]
        if pos:
            i2t += math.log(sum(map(math.exp, col))) - math.log(sum(map(math.exp, pos)))
            n += 1
    return 0.5 * (t2i + i2t / n)


def test_itc_loss_equals_hand_computation():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(3, 5, generator=g), torch.randn(5, 5, generator=g)
    owner = torch.tensor([0, 0, 1, 1, 0])  # image 2 has no text: left out of image-to-text
    got = itc_loss(img, txt, owner, temperature=0.5)
    assert got.item() == pytest.approx(_by_hand(img, txt, owner.tolist(), 0.5), rel=1e-5)


def test_itc_loss_rewards_alignment():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 8, generator=g)
    owner = torch.arange(4).repeat_interleave(2)
    aligned = itc_loss(img, img[owner] + 0.01 * torch.randn(8, 8, generator=g), owner)
    shuffled = itc_loss(img, img[owner.roll(2)], owner)
    assert aligned < 0.1 < shuffled


def test_itc_option_in_the_pretraining_step():
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.tasks.pretrain import pretrain_losses

    small = [
        "model.visual.embed_dim=16", "model.visual.num_heads=[2]",
        "model.text.hidden_size=32", "model.text.num_layers=1", "model.text.num_heads=2",
        "model.text.intermediate_size=64", "model.text.max_text_len=8", "objectives.ipot_iters=2",
    ]
    with pytest.raises(ConfigError, match="itc_dim"):
        load_config("tiny", [*small, "objectives.lambda_itc=1"])
    cfg = load_config("tiny", [*small, "objectives.lambda_itc=1", "model.itc_dim=16"])
    torch.manual_seed(0)
    model = VisualParsingModel(cfg.model, 2048)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (2, 4, 8), generator=g)
    batch = {
        "image": torch.randn(2, 3, 96, 96, generator=g), "input_ids": ids,
        "attention_mask": torch.ones_like(ids), "mlm_input_ids": ids.clone(),
        "mlm_labels": torch.full_like(ids, -100), "mfr_noise": torch.rand(2, 36, generator=g),
    }
    losses = pretrain_losses(model, batch, cfg.objectives)
    off = pretrain_losses(model, batch, load_config("tiny", small).objectives)
    assert "itc" in losses.scalars() and "itc" not in off.scalars()
    torch.testing.assert_close(losses.loss, off.loss + losses.itc)
    losses.loss.backward()
    assert model.itc_head.image_proj.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.visual.parameters())
