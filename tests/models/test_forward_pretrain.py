"""The model's pre-training passes: which passes run on which pairs, the loss they give against
stored outputs of the code before the model owned its passes, gradients, and the checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlparse.config import load_config
from vlparse.models.single_stream import VisualParsingModel
from vlparse.objectives import pretrain_loss
from vlparse.tasks.pretrain import loss_weights

SMALL = [
    "model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.text.hidden_size=32",
    "model.text.num_layers=2", "model.text.num_heads=2", "model.text.intermediate_size=64",
    "model.text.max_text_len=12", "objectives.ipot_iters=5",
]
REFERENCE = Path(__file__).parent / "data" / "pretrain_reference.json"


def _batch(bsz: int, n_txt: int, length: int, m: int, seed: int = 0) -> dict:
    """``bsz`` images with ``n_txt`` texts each; the MLM fields cover the 2 matched texts."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (bsz, n_txt, length), generator=g)
    mask = torch.ones_like(ids)
    mask[..., -3:] = 0
    mask[1, :, -5:] = 0
    ids = ids * mask
    labels = torch.full_like(ids, -100)
    labels[..., 1] = ids[..., 1]
    labels[..., 3] = ids[..., 3]
    labels[0, 0, 6] = ids[0, 0, 6]
    mlm_ids = ids.clone()
    mlm_ids[..., 1] = 103
    mlm_ids[..., 3] = 103
    return {"image": torch.randn(bsz, 3, 96, 96, generator=g), "input_ids": ids,
            "attention_mask": mask, "mlm_input_ids": mlm_ids[:, :2].clone(),
            "mlm_labels": labels[:, :2].clone(), "mfr_noise": torch.rand(bsz, m, generator=g)}


def _model(*extra: str) -> tuple:
    cfg = load_config("tiny", [*SMALL, *extra])
    torch.manual_seed(0)
    return cfg, VisualParsingModel(cfg.model, 2048, objectives=cfg.objectives)


class _Calls:
    """Records the model's encode_image and fuse calls: ``(texts, visual mask given)``."""

    def __init__(self, model: VisualParsingModel) -> None:
        self.encode: list[int] = []
        self.fuse: list[tuple[int, bool]] = []
        encode, fuse = model.encode_image, model.fuse

        def spy_encode(images, output_attentions=False):
            self.encode.append(images.shape[0])
            return encode(images, output_attentions=output_attentions)

        def spy_fuse(visual_tokens, input_ids, attention_mask, visual_mask=None, **kw):
            self.fuse.append((input_ids.shape[0], visual_mask is not None))
            return fuse(visual_tokens, input_ids, attention_mask, visual_mask, **kw)

        model.encode_image, model.fuse = spy_encode, spy_fuse


@pytest.mark.parametrize("case", sorted(json.loads(REFERENCE.read_text())["cases"]))
def test_loss_equals_the_stored_outputs_of_the_previous_code(case: str) -> None:
    ref = json.loads(REFERENCE.read_text())["cases"][case]
    cfg, model = _model(*ref["overrides"])
    weight = ref["mlm_weight"]
    out = model.forward_pretrain(_batch(3, 4, 12, model.num_visual_tokens), run_masked=weight > 0)
    res = pretrain_loss(out, loss_weights(cfg, weight))
    got = {"loss": res.total, **res.parts}
    for key, value in ref["parts"].items():
        if key not in got:  # not computed now; the previous code reported it as nothing
            assert value in (None, 0.0), (key, value)
            continue
        assert float(got[key].detach()) == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert res.counts == ref["counts"]
    spread = float(out.diagnostics["visual_spread"])
    assert spread == pytest.approx(ref["visual_spread"], rel=1e-6)


def test_passes_and_pairs():
    cfg, model = _model()
    model.eval()
    calls = _Calls(model)
    batch = _batch(3, 4, 12, model.num_visual_tokens)
    out = model.forward_pretrain(batch)
    # the parser runs once for the 3 images; its tokens serve 3 x 4 pairs, then 3 x 2 matched
    assert calls.encode == [3] and calls.fuse == [(12, False), (6, True)]
    assert out.itm_logits.shape == (12, 2) and out.itm_labels.tolist() == [1, 1, 0, 0] * 3
    assert out.vla_distance.shape == (12,)
    # MLM targets come from the matched pairs only: 2 x 2 masked tokens x 3 images, plus one
    assert out.mlm_logits.shape == (13, 2048) and out.mlm_labels.shape == (13,)
    k = cfg.objectives.mfr_k
    assert out.mfr_pred.shape == out.mfr_target.shape == (3 * 2 * k, model.visual_dim)
    assert out.mfr_num_samples == 3 * 2 * model.visual_dim  # per-channel mean
    with torch.no_grad():
        tokens = model.visual(batch["image"]).tokens
    torch.testing.assert_close(out.diagnostics["visual_spread"], tokens.std(0).mean())


def test_skipping_the_masked_pass():
    cfg, model = _model()
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    full = pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 1.0))
    calls = _Calls(model)
    out = model.forward_pretrain(batch, run_masked=False)
    assert calls.fuse == [(8, False)]  # the clean pass only: MFR waits with MLM
    assert out.mlm_logits is None and out.mfr_pred is None
    off = pretrain_loss(out, loss_weights(cfg, 0.0))
    assert set(off.parts) == {"itm", "vla"} and "mlm_total" not in off.counts
    o = cfg.objectives
    torch.testing.assert_close(off.total, full.total - full.parts["mlm"]
                               - o.lambda_mfr * full.parts["mfr"])
    part = pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 0.25))
    torch.testing.assert_close(part.parts["mlm"], full.parts["mlm"])  # still reported
    torch.testing.assert_close(part.total, full.total - 0.75 * full.parts["mlm"])


def test_unmatched_pairs_carry_no_mlm_or_mfr():
    cfg, model = _model()
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    a = pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 1.0))
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][:, 2:] = 7  # the unmatched texts (their clean pass changes ITM only)
    b = pretrain_loss(model.forward_pretrain(changed), loss_weights(cfg, 1.0))
    torch.testing.assert_close(a.parts["mlm"], b.parts["mlm"])
    torch.testing.assert_close(a.parts["mfr"], b.parts["mfr"])
    assert not torch.allclose(a.parts["itm"], b.parts["itm"])


def test_mfr_and_vla_off_compute_nothing():
    cfg, model = _model("objectives.mfr_mode=off", "objectives.vla_weight=0")
    out = model.forward_pretrain(_batch(2, 4, 12, model.num_visual_tokens))
    assert out.mfr_pred is None and out.vla_distance is None and out.mlm_logits is not None
    res = pretrain_loss(out, loss_weights(cfg, 1.0))
    assert set(res.parts) == {"itm", "mlm"}


def test_backward_reaches_every_part():
    cfg, model = _model()
    model.train()
    batch = _batch(2, 4, 12, model.num_visual_tokens)
    pretrain_loss(model.forward_pretrain(batch), loss_weights(cfg, 1.0)).total.backward()
    for name in ("visual", "visual_embed", "encoder", "mlm_head", "itm_head", "mfr_head"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    assert model.visual_mask_token.grad is not None


def test_batch_checks():
    _, model = _model()
    batch = _batch(2, 3, 12, model.num_visual_tokens)
    with pytest.raises(ValueError, match="3 texts per image, config expects 2\\+2"):
        model.forward_pretrain(batch)


@pytest.mark.parametrize("reduction", ["sum", "mean_channel"])
def test_mfr_normalisation(reduction):
    """Eq. 9 summed over the k masked tokens and their channels, then averaged over the matched
    pairs ("sum", the paper's) or also over the c channels ("mean_channel")."""
    cfg, model = _model(f"objectives.mfr_reduction={reduction}")
    out = model.forward_pretrain(_batch(3, 4, 12, model.num_visual_tokens))
    pairs, c = 3 * cfg.objectives.num_pos, model.visual_dim
    assert out.mfr_pred.shape == (pairs * cfg.objectives.mfr_k, c)
    squared = sum(float(((p - t) ** 2).sum()) for p, t in zip(
        out.mfr_pred.detach().double(), out.mfr_target.double(), strict=True))
    expected = squared / pairs / (c if reduction == "mean_channel" else 1)
    mfr = pretrain_loss(out, loss_weights(cfg, 1.0)).parts["mfr"]
    assert float(mfr.detach()) == pytest.approx(expected, rel=1e-5)
