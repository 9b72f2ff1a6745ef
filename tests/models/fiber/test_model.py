"""The FIBER model: gates, the two modes, pooling, heads and parameter groups by role."""

from __future__ import annotations

import pytest
import torch

from vlparse.config import OptimConfig
from vlparse.models.fiber import FiberModel


def test_open_gates_change_both_streams_and_get_gradients(make_config, batch, set_gates):
    model = FiberModel(make_config())
    images, ids, mask = batch
    with torch.no_grad():
        closed = model(images, ids, mask)
    set_gates(model, 0.3, 0.3)
    out = model(images, ids, mask)
    assert (out.image_hidden_state - closed.image_hidden_state).abs().max() > 1e-4
    assert (out.text_hidden_state - closed.text_hidden_state).abs().max() > 1e-4
    (out.pooler_output.square().sum() + out.text_hidden_state.square().sum()).backward()
    for k, (a, b) in enumerate(zip(model.i2t, model.t2i, strict=True)):
        assert a.gate.grad is not None and a.gate.grad.abs() > 0, f"i2t gate {k}"
        assert b.gate.grad is not None and b.gate.grad.abs() > 0, f"t2i gate {k}"
        assert a.key_value.weight.grad.abs().sum() > 0 and b.query.weight.grad.abs().sum() > 0


def test_closed_gates_still_receive_gradients(make_config, batch):
    model = FiberModel(make_config())
    images, ids, mask = batch
    out = model(images, ids, mask)
    (out.pooler_output.square().sum() + out.text_hidden_state.square().sum()).backward()
    assert all(a.gate.grad.abs() > 0 and b.gate.grad.abs() > 0
               for a, b in zip(model.i2t, model.t2i, strict=True))
    assert model.gates.shape == (3, 2) and not model.gates.any()


def test_fusion_off_does_not_touch_cross_attention(make_config, batch, set_gates):
    model = FiberModel(make_config())
    set_gates(model, 0.5, 0.5)
    calls = []
    for module in [*model.i2t, *model.t2i]:
        module.register_forward_hook(lambda *_: calls.append(1))
    images, ids, mask = batch
    out = model(images, ids, mask, fusion=False)
    (out.pooler_output.sum() + out.text_embeds.sum() + out.image_embeds.sum()).backward()
    assert not calls
    for module in [*model.i2t, *model.t2i]:
        assert all(p.grad is None for p in module.parameters())
    assert model.image.model.patch_embed.proj.weight.grad is not None
    enc = model.encode_text(ids, mask)
    torch.testing.assert_close(enc.embeds, out.text_embeds)
    torch.testing.assert_close(model.encode_image(images).embeds, out.image_embeds)


def test_pooling_by_hand(make_config, batch, set_gates):
    model = FiberModel(make_config()).eval()
    set_gates(model, 0.4, -0.2)
    images, ids, mask = batch
    with torch.no_grad():
        out = model(images, ids, mask, output_attentions=True)
    pool = model.cross_modal
    text = out.text_hidden_state @ pool.text_transform.weight.T + pool.text_transform.bias
    image = out.image_hidden_state @ pool.image_transform.weight.T + pool.image_transform.bias
    text_pooled = torch.tanh(text[:, 0] @ pool.text_pooler.dense.weight.T
                             + pool.text_pooler.dense.bias)
    image_pooled = torch.tanh(image.mean(1) @ pool.image_pooler.dense.weight.T
                              + pool.image_pooler.dense.bias)
    torch.testing.assert_close(out.text_features, text)
    torch.testing.assert_close(out.image_features, image)
    torch.testing.assert_close(out.pooler_output, torch.cat([text_pooled, image_pooled], -1))
    assert out.pooler_output.shape == (2, 24)  # 2 D, D = 12
    assert out.image_hidden_state.shape == (2, 25, 16)  # 5x5 grid of the last stage
    # cross-attention maps: one per pair, rows sum to 1, text padding unattended
    grids = [100, 25, 25]
    for k, (wi, wt) in enumerate(zip(out.cross_attentions_i2t, out.cross_attentions_t2i,
                                             strict=True)):
        assert wi.shape == (2, model.pairs[k].image_heads, grids[k], 9)
        assert wt.shape == (2, 2, 9, grids[k])
        torch.testing.assert_close(wi.sum(-1), torch.ones_like(wi[..., 0]))
        assert bool((wi[1, ..., 5:] == 0).all())
    logits = model.itm_logits(out.pooler_output)
    assert logits.shape == (2, 2)


def test_mlm_head_is_tied_to_the_word_embeddings(make_config, batch):
    for kind in ("bert", "roberta"):
        model = FiberModel(make_config(kind))
        words = model.text.model.embeddings.word_embeddings.weight
        decoders = [m for m in model.mlm_head.modules() if isinstance(m, torch.nn.Linear)
                    and m.out_features == 50]
        assert len(decoders) == 1 and decoders[0].weight is words
        images, ids, mask = batch
        out = model(images, ids, mask)
        assert model.mlm_logits(out.text_hidden_state).shape == (2, 9, 50)


def test_param_groups_by_role_cover_every_parameter_once(make_config):
    model = FiberModel(make_config())
    optim = OptimConfig(lr=1e-5, weight_decay=0.01)
    groups = model.param_groups(optim)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {f"{r}_{s}" for r in ("image_backbone", "text_backbone",
                                                 "cross_modal", "head")
                            for s in ("decay", "no_decay")}

    def role(params):
        found = {g["name"] for g in groups for p in g["params"] if any(p is q for q in params)}
        assert len(found) == 1, found
        return found.pop()

    assert role([model.i2t[0].gate]) == "cross_modal_no_decay"
    assert role([model.t2i[2].key_value.weight]) == "cross_modal_decay"
    assert role([model.itm_head.fc.weight]) == "head_decay"
    assert role([model.mlm_head.predictions.bias]) == "head_no_decay"
    words = model.text.model.embeddings.word_embeddings.weight
    assert role([words]) == "text_backbone_decay"  # the MLM decoder shares it
    emb = model.text.model.embeddings
    assert role([emb.position_embeddings.weight]) == "text_backbone_no_decay"
    assert role([emb.token_type_embeddings.weight]) == "text_backbone_no_decay"
    table = model.image.stages[0].blocks[0].attn.relative_position_bias_table
    assert role([table]) == "image_backbone_no_decay"
    assert role([model.image.model.patch_embed.proj.weight]) == "image_backbone_decay"
    assert by_name["cross_modal_decay"]["lr"] == pytest.approx(5e-5)
    assert by_name["head_no_decay"]["lr"] == pytest.approx(5e-5)
    assert by_name["image_backbone_decay"]["lr"] == pytest.approx(1e-5)
    assert by_name["text_backbone_decay"]["weight_decay"] == 0.01
    assert all(g["weight_decay"] == 0.0 for n, g in by_name.items() if n.endswith("no_decay"))


def test_an_unlisted_module_is_caught(make_config):
    model = FiberModel(make_config())
    model.extra = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="without a role"):
        model.param_groups(OptimConfig())


def test_mismatched_batches_and_image_sizes_are_refused(make_config, batch):
    model = FiberModel(make_config())
    images, ids, mask = batch
    with pytest.raises(ValueError, match="one text per image"):
        model(images[:1], ids, mask)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 3, 32, 32), ids, mask)


def test_gates_start_at_the_configured_value(make_config):
    assert all(float(g) == 0.0 for g in FiberModel(make_config()).gates.flatten())  # FIBER
    model = FiberModel(make_config(gate_init=0.1))
    assert model.gates.flatten().tolist() == pytest.approx([0.1] * model.gates.numel())
