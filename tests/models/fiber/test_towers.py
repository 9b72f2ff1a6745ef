"""The adapters against the libraries they wrap, with the same weights.

- Fusion off: the image tower is timm's ``forward_features``, the text tower the transformers
  model's ``forward`` (separately built models, weights copied in).
- Fusion on with every gate at 0: the fused towers give exactly (``torch.equal``) the unimodal
  outputs; with ``final_norms="drop"`` exactly the stock models without their final norms.
- Both streams update at once: each cross-attention reads the other backbone's input to the
  pair, taken from the stock models by hooks.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from transformers import BertModel, RobertaModel

from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.image_tower import timm_kwargs
from vlparse.models.fiber.text_tower import hf_text_config


def _stock_models(model: FiberModel) -> tuple[nn.Module, nn.Module]:
    """timm and transformers models built on their own, loaded with the adapters' weights."""
    cfg = model.cfg
    swin = timm.create_model(cfg.visual.arch, pretrained=False, **timm_kwargs(cfg.visual))
    swin.load_state_dict(model.image.model.state_dict())
    cls = RobertaModel if cfg.text.kind == "roberta" else BertModel
    text = cls(hf_text_config(cfg.text), add_pooling_layer=False)
    text.load_state_dict(model.text.model.state_dict())
    return swin.eval(), text.eval()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_fusion_off_equals_timm_and_transformers(make_config, batch, kind: str) -> None:
    model = FiberModel(make_config(kind)).eval()
    swin, text = _stock_models(model)
    images, ids, mask = batch
    with torch.no_grad():
        out = model(images, ids, mask, fusion=False)
        ref_image = swin.forward_features(images).flatten(1, 2)
        ref_text = text(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(out.image_hidden_state, ref_image)
    assert torch.equal(out.text_hidden_state, ref_text)
    assert not out.fused and out.cross_attentions_i2t is None
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_zero_gates_make_the_fused_towers_the_unimodal_ones(make_config, batch, kind) -> None:
    model = FiberModel(make_config(kind)).eval()
    images, ids, mask = batch
    with torch.no_grad():
        fused = model(images, ids, mask)
        dual = model(images, ids, mask, fusion=False)
    assert fused.fused
    for name in ("image_hidden_state", "text_hidden_state", "pooler_output", "text_features",
                 "image_features"):
        assert torch.equal(getattr(fused, name), getattr(dual, name)), name


def test_zero_gates_with_dropped_final_norms_match_the_stock_models_without_them(
    make_config, batch
) -> None:
    model = FiberModel(make_config(final_norms="drop")).eval()
    swin, text = _stock_models(model)
    swin.norm = nn.Identity()
    text.encoder.layer[-1].output.LayerNorm = nn.Identity()
    images, ids, mask = batch
    with torch.no_grad():
        fused = model(images, ids, mask)
        dual = model(images, ids, mask, fusion=False)
        ref_image = swin.forward_features(images).flatten(1, 2)
        ref_text = text(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(fused.image_hidden_state, ref_image)
    assert torch.equal(fused.text_hidden_state, ref_text)
    # the dual encoder keeps its norms
    assert not torch.equal(dual.image_hidden_state, ref_image)


def test_train_mode_with_zero_gates_is_exact_too(make_config, batch) -> None:
    model = FiberModel(make_config()).train()  # dropout and drop-path rates are 0 here
    images, ids, mask = batch
    fused = model(images, ids, mask)
    dual = model(images, ids, mask, fusion=False)
    assert torch.equal(fused.image_hidden_state, dual.image_hidden_state)
    assert torch.equal(fused.text_hidden_state, dual.text_hidden_state)


def _inputs_of(modules: list[nn.Module]) -> tuple[list, object]:
    seen: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
               for m in modules]
    return seen, handles


def test_each_stream_reads_the_other_before_the_pair(make_config, batch, set_gates) -> None:
    """With only the text-to-image gates open, the image stream is the stock Swin's, so the
    tokens each text layer attends to must be the input of its paired stock Swin block (after
    the stage's patch merging). With only the image-to-text gates open, likewise the text states
    each image block attends to must be the input of its paired stock text layer."""
    model = FiberModel(make_config()).eval()
    swin, text = _stock_models(model)
    images, ids, mask = batch
    blocks = [swin.layers[p.image_stage].blocks[p.image_block] for p in model.pairs]
    layers = [text.encoder.layer[p.text_layer] for p in model.pairs]
    with torch.no_grad():
        ref_blocks, h1 = _inputs_of(blocks)
        ref_layers, h2 = _inputs_of(layers)
        swin.forward_features(images)
        text(input_ids=ids, attention_mask=mask)
        for h in h1 + h2:
            h.remove()
        contexts: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: contexts.append(args[1]))
                 for m in model.t2i]
        set_gates(model, 0.0, 1.0)
        model(images, ids, mask)
        for h in hooks:
            h.remove()
        for got, ref in zip(contexts, ref_blocks, strict=True):
            assert torch.equal(got, ref.flatten(1, 2))
        contexts.clear()
        hooks = [m.register_forward_pre_hook(lambda _m, args: contexts.append(args[1]))
                 for m in model.i2t]
        set_gates(model, 1.0, 0.0)
        model(images, ids, mask)
        for h in hooks:
            h.remove()
        for got, ref in zip(contexts, ref_layers, strict=True):
            assert torch.equal(got, ref)
    assert [c.shape[-1] for c in ref_blocks] == [8, 16, 16]  # stage widths, after merging
