"""The FIBER caption decoder: causal, equal to the stock layers and to the pre-training fused
layers on full prefixes, decoding with the cache equal to decoding without it, beam 1 equal to
greedy, and the captioning task model's save/load and parameter groups."""

from __future__ import annotations

import pytest
import torch

from vlparse.config.training import OptimConfig
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.captioning import FiberForCaptioning
from vlparse.models.fiber.fusion import image_bottom, text_bottom

pytest.importorskip("timm")
pytest.importorskip("transformers")

IDS = {"bos": 2, "eos": 3, "pad": 0}
VOCAB = 50


def _captioner(make_config, kind="bert", image_features="paired", gate=0.8, scale=0.0,
               **fusion):
    ids = dict(IDS, pad=1) if kind == "roberta" else IDS
    model = FiberForCaptioning(FiberModel(make_config(kind, **fusion)), ids, image_features)
    with torch.no_grad():
        for cross in model.backbone.t2i:
            cross.gate.fill_(gate)
        if scale:  # larger weights: captions that differ between images, some that end
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, scale)
            model.backbone.mlm_head.predictions.bias[ids["eos"]] += 4.0
    return model.eval()


def _prefix_ids(n=3, length=7, bos=2):
    ids = torch.randint(4, VOCAB, (n, length))
    ids[:, 0] = bos
    return ids


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("image_features", ["paired", "last_stage"])
def test_cached_steps_give_the_full_pass_logits(make_config, kind, image_features):
    model = _captioner(make_config, kind, image_features)
    images, ids = torch.randn(3, 3, 40, 40), _prefix_ids()
    with torch.no_grad():
        memory = model.encode_images(images)
        full = model.decoder.forward(ids, memory)
        cache = model.decoder.init_cache(memory, torch.arange(3))
        for t in range(ids.shape[1]):
            logits, cache = model.decoder.step(ids[:, t : t + 1], cache)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_output_at_t_ignores_later_tokens(make_config):
    model = _captioner(make_config)
    images, ids = torch.randn(2, 3, 40, 40), _prefix_ids(2, 8)
    changed = ids.clone()
    changed[:, 5:] = torch.randint(4, VOCAB, (2, 3))
    with torch.no_grad():
        a, b = model(images, ids, torch.ones_like(ids)).logits, model(
            images, changed, torch.ones_like(ids)).logits
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=0, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_gates_at_zero_give_the_stock_text_model_on_each_prefix(make_config, kind):
    """Brute force: position t equals transformers' own model run on tokens 0..t."""
    model = _captioner(make_config, kind, gate=0.0)
    images, ids = torch.randn(2, 3, 40, 40), _prefix_ids(2, 6)
    text, head = model.backbone.text, model.backbone.mlm_head
    with torch.no_grad():
        logits = model(images, ids, torch.ones_like(ids)).logits
        for t in range(ids.shape[1]):
            prefix = ids[:, : t + 1]
            stock = head(text(prefix, torch.ones_like(prefix)))[:, -1]
            torch.testing.assert_close(logits[:, t], stock, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("final_norms", ["keep", "drop"])
def test_paired_decoder_equals_the_fused_text_layers_on_each_prefix(make_config, final_norms):
    """Reference: the pre-training path's fused text layers (``TextTower.fused_layer``) on the
    first t + 1 tokens, each attending to its paired image block's input, image side unfused."""
    model = _captioner(make_config, final_norms=final_norms)
    bb = model.backbone
    images, ids = torch.randn(2, 3, 40, 40), _prefix_ids(2, 6)
    with torch.no_grad():
        logits = model(images, ids, torch.ones_like(ids)).logits
        x = image_bottom(bb.image, bb.pairs, images)
        block_inputs = []
        for pair in bb.pairs:
            x = bb.image.enter(x, pair.image_stage, pair.image_block)
            block_inputs.append(x.flatten(1, 2))
            x = bb.image.block(x, pair.image_stage, pair.image_block)
        for t in range(ids.shape[1]):
            prefix = ids[:, : t + 1]
            ones = torch.ones_like(prefix)
            h = text_bottom(bb.text, bb.pairs, prefix, ones)
            mask = bb.text.self_attention_mask(h, ones)
            for k, pair in enumerate(bb.pairs):
                last = k == len(bb.pairs) - 1
                h, _ = bb.text.fused_layer(h, pair.text_layer, mask, bb.t2i[k], block_inputs[k],
                                           final_norm=final_norms == "keep" or not last)
            torch.testing.assert_close(logits[:, t], bb.mlm_head(h)[:, -1], atol=1e-5,
                                       rtol=1e-5)


def test_last_stage_tokens_are_the_image_backbone_output(make_config):
    model = _captioner(make_config, image_features="last_stage")
    images = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        tokens = model.decoder.image_tokens(images)
        stock = model.backbone.image(images)  # timm's forward_features
    widths = [p.image_width for p in model.backbone.pairs]
    assert [t.shape[-1] for t in tokens] == widths
    for t, width in zip(tokens, widths, strict=True):
        if width == stock.shape[-1]:
            torch.testing.assert_close(t, stock)
    assert len(model.adapters) == 3 and sum(isinstance(a, torch.nn.Linear)
                                            for a in model.adapters) == 1


@pytest.mark.parametrize("image_features", ["paired", "last_stage"])
def test_decoding_with_cache_equals_without(make_config, image_features):
    model = _captioner(make_config, image_features=image_features, scale=0.5)
    images = torch.randn(6, 3, 40, 40)
    lengths = []
    for kwargs in ({"num_beams": 1}, {"num_beams": 4}):
        a = model.generate(images, max_length=12, use_cache=True, **kwargs)
        b = model.generate(images, max_length=12, use_cache=False, **kwargs)
        assert torch.equal(a.sequences, b.sequences) and torch.equal(a.lengths, b.lengths)
        assert len({tuple(s) for s in a.sequences.tolist()}) > 1  # the image matters
        lengths += a.lengths.tolist()
    assert min(lengths) < 12  # some captions end


def test_beam_one_is_greedy_and_top_k_one_sampling_is_greedy(make_config):
    model = _captioner(make_config, scale=0.3)
    images = torch.randn(3, 3, 40, 40)
    greedy = model.generate(images, max_length=10)
    beam = model.generate(images, num_beams=1, max_length=10)
    one = model.generate(images, do_sample=True, top_k=1, max_length=10)
    for out in (beam, one):
        assert torch.equal(out.sequences, greedy.sequences)
    beam_1 = model.generate(images, num_beams=2, max_length=10)
    assert beam_1.sequences.shape[0] == 3


def test_sampled_log_probs_carry_gradient(make_config):
    model = _captioner(make_config, scale=0.3).train()
    out = model.generate(torch.randn(2, 3, 40, 40), do_sample=True, num_return_sequences=3,
                         max_length=6, generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape[0] == 6
    (out.token_logprobs * out.token_mask()).sum().backward()
    assert model.backbone.text.word_embeddings.weight.grad is not None


def test_decode_cuts_at_the_end_token(make_config):
    from vlparse.models.generation import GenerationOutput

    model = _captioner(make_config)

    class Tok:
        def batch_decode(self, rows, skip_special_tokens=True):
            return [" ".join(map(str, r)) for r in rows]

    out = GenerationOutput(torch.tensor([[7, 8, 3, 0], [9, 9, 9, 9]]), torch.tensor([3, 4]),
                           torch.zeros(2))
    assert model.decode(out, Tok()) == ["7 8", "9 9 9 9"]


def test_teacher_forcing_loss_and_param_groups(make_config):
    model = _captioner(make_config, image_features="last_stage").train()
    images, ids = torch.randn(2, 3, 40, 40), _prefix_ids(2, 6)
    labels = ids.clone()
    labels[1, 4:] = -100
    out = model(images, ids, torch.ones_like(ids), labels=labels)
    logp = out.logits.log_softmax(-1)
    picked = [-logp[i, t, ids[i, t + 1]] for i in range(2) for t in range(5)
              if labels[i, t + 1] != -100]
    torch.testing.assert_close(out.loss, torch.stack(picked).mean())
    groups = model.param_groups(OptimConfig(lr=1e-4))
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted({id(p) for p in model.parameters()})
    assert len(grouped) == len(set(grouped))
    assert any(g["name"].startswith("adapter") for g in groups)


@pytest.mark.parametrize("image_features", ["paired", "last_stage"])
def test_save_and_load_round_trip(make_config, tmp_path, image_features):
    model = _captioner(make_config, image_features=image_features, scale=0.3)
    model.save_pretrained(tmp_path)
    loaded = FiberForCaptioning.from_pretrained(tmp_path)
    images = torch.randn(2, 3, 40, 40)
    assert loaded.special_ids == model.special_ids and loaded.image_features == image_features
    a, b = model.generate(images, num_beams=3, max_length=8), loaded.generate(
        images, num_beams=3, max_length=8)
    assert torch.equal(a.sequences, b.sequences)
