"""FIBER's pre-training passes: shapes and labels, each output against the model's own calls
made one by one (ITC by hand from the dual encoder, the ITM rows with negatives computed by hand,
MLM on the fused text), hard negatives in the model path, the clamped temperature, the queue, and
a gradient for every parameter."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.host_traffic import HostTraffic
from vlparse.config.fiber import FiberObjectiveConfig
from vlparse.models.fiber import FiberModel, pretraining
from vlparse.objectives import pretrain_loss

IMAGE, VOCAB = 40, 50  # the image size and vocabulary of conftest's small_config
B, L = 4, 9


def _batch(b: int = B, image_ids: list[int] | None = None, seed: int = 0) -> dict:
    """``b`` pairs of distinct texts (row ``i`` starts with token ``10 + i``), two masked
    positions each, one matched caption per image."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (b, 1, L), generator=g)
    ids[:, 0, 0] = 10 + torch.arange(b)
    mask = torch.ones(b, 1, L, dtype=torch.long)
    mask[b - 1, 0, 6:] = 0
    labels = torch.full((b, 1, L), -100)
    labels[:, 0, 2:4] = ids[:, 0, 2:4]
    mlm_ids = ids.clone()
    mlm_ids[:, 0, 2:4] = 4  # the mask id of this vocabulary
    return {
        "image": torch.randn(b, 3, IMAGE, IMAGE, generator=g), "input_ids": ids,
        "attention_mask": mask, "mlm_input_ids": mlm_ids, "mlm_labels": labels,
        "image_id": torch.tensor(image_ids if image_ids is not None else list(range(b))),
        "item_noise": torch.rand(b, 2, generator=g),
    }


def _model(make_config, set_gates, **objectives) -> FiberModel:
    model = FiberModel(make_config(), FiberObjectiveConfig(**objectives)).eval()
    set_gates(model, 0.3, -0.2)  # the fused pass differs from the dual encoder
    return model


def test_shapes_and_labels(make_config, set_gates):
    model = _model(make_config, set_gates)
    out = model.forward_pretrain(_batch())
    assert out.itc_logits_i2t.shape == out.itc_logits_t2i.shape == (B, B)
    assert out.itc_targets.tolist() == [0, 1, 2, 3]
    assert out.itm_logits.shape == (3 * B, 2)
    assert out.itm_labels.tolist() == [1] * B + [0] * 2 * B
    assert out.mlm_logits.shape == (2 * B, VOCAB) and out.mlm_labels.shape == (2 * B,)
    assert out.vla_distance is None and out.mfr_pred is None
    d = out.diagnostics
    assert float(d["temperature"]) == pytest.approx(0.07)
    assert float(d["negative_fallbacks"]) == 0
    assert float(d["gate_i2t_2"]) == pytest.approx(0.3) and "gate_t2i_0" in d
    skipped = model.forward_pretrain(_batch(), run_masked=False)
    assert skipped.mlm_logits is None and skipped.itm_logits.shape == (3 * B, 2)


def test_every_output_against_the_models_calls_one_by_one(make_config, set_gates):
    """ITC from the dual encoder by hand; ITM rows with the negatives computed by hand (local
    pool, uniform draw: uniform u picks the floor(3 u)-th of the three other pairs); MLM from
    the fused text states of (image, masked text)."""
    model = _model(make_config, set_gates, itm_negatives="random", hard_negative_pool="local")
    batch = _batch()
    batch["item_noise"] = torch.tensor([[0.5, 0.1], [0.5, 0.9], [0.2, 0.5], [0.9, 0.4]])
    out = model.forward_pretrain(batch)
    images, ids, mask = batch["image"], batch["input_ids"][:, 0], batch["attention_mask"][:, 0]
    with torch.no_grad():
        img = F.normalize(model.encode_image(images).embeds, dim=-1)
        txt = F.normalize(model.encode_text(ids, mask).embeds, dim=-1)
        torch.testing.assert_close(out.itc_logits_i2t, img @ txt.T / 0.07)
        torch.testing.assert_close(out.itc_logits_t2i, txt @ img.T / 0.07)
        others = [[j for j in range(B) if j != i] for i in range(B)]
        text_neg = [others[i][int(3 * u)] for i, u in enumerate(batch["item_noise"][:, 0])]
        image_neg = [others[i][int(3 * u)] for i, u in enumerate(batch["item_noise"][:, 1])]
        assert text_neg == [2, 2, 0, 2] and image_neg == [1, 3, 1, 1]
        rows = (torch.cat([images, images, images[image_neg]]),
                torch.cat([ids, ids[text_neg], ids]), torch.cat([mask, mask[text_neg], mask]))
        expected_itm = model.itm_logits(model(*rows).pooler_output)
        masked = model(images, batch["mlm_input_ids"][:, 0], mask).text_hidden_state
        labels = batch["mlm_labels"][:, 0]
        expected_mlm = model.mlm_logits(masked[labels != -100])
    torch.testing.assert_close(out.itm_logits, expected_itm)
    torch.testing.assert_close(out.mlm_logits, expected_mlm)
    assert torch.equal(out.mlm_labels, labels[labels != -100])


def test_hard_negatives_in_the_model_path_never_show_the_same_image(make_config, set_gates,
                                                                   monkeypatch):
    """Three captions of image 0 among six pairs: the ITM rows never pair image 0 with a caption
    of image 0 as a negative, nor a caption of image 0 with image 0, whatever the uniforms.
    (The rows' inputs are recorded where the pass assembles them; that the fused pass scores
    exactly these rows is checked above.)"""
    model = _model(make_config, set_gates)
    image_ids = [0, 1, 0, 2, 0, 3]
    seen = []

    def recording(*args, **kwargs):
        seen.append(pretraining.itm_inputs.__wrapped__(*args, **kwargs))
        return seen[-1]

    recording.__wrapped__ = pretraining.itm_inputs
    monkeypatch.setattr(pretraining, "itm_inputs", recording)
    ids = torch.tensor(image_ids)
    for seed in range(8):
        batch = _batch(6, image_ids, seed)
        with torch.no_grad():
            model.forward_pretrain(batch, run_masked=False)
        rows = seen[-1]
        first = batch["input_ids"][:, 0, 0]
        drawn_text = [int((first == t).nonzero()) for t in rows.input_ids[6:12, 0]]
        assert bool((ids[drawn_text] != ids).all())
        drawn_image = [next(j for j in range(6) if torch.equal(batch["image"][j], x))
                       for x in rows.images[12:18]]
        assert bool((ids[drawn_image] != ids).all())
        assert torch.equal(rows.images[:12], batch["image"].repeat(2, 1, 1, 1))


def test_temperature_is_clamped_in_place_and_divides_the_logits(make_config, set_gates):
    model = _model(make_config, set_gates, itc_temperature_max=0.5)
    with torch.no_grad():
        model.itc.temperature.fill_(3.0)
    out = model.forward_pretrain(_batch(), run_masked=False)
    assert float(model.itc.temperature.detach()) == 0.5
    assert float(out.diagnostics["temperature"]) == 0.5
    with torch.no_grad():
        model.itc.temperature.fill_(1e-6)
        low = model.forward_pretrain(_batch(), run_masked=False)
    assert float(model.itc.temperature.detach()) == pytest.approx(0.001)
    torch.testing.assert_close(low.itc_logits_i2t * 0.001, out.itc_logits_i2t * 0.5)


def test_queue_adds_earlier_features_in_training_only(make_config, set_gates):
    model = _model(make_config, set_gates, itc_queue_size=6)
    model.train()
    first = model.forward_pretrain(_batch(), run_masked=False)
    second = model.forward_pretrain(_batch(seed=1), run_masked=False)
    assert first.itc_logits_i2t.shape == (B, B) and second.itc_logits_i2t.shape == (B, B + B)
    model.eval()
    with torch.no_grad():
        model.forward_pretrain(_batch(seed=2), run_masked=False)
    assert len(model.itc_queue) == 6  # 4 + 4, oldest dropped; nothing added in eval
    assert "itc_queue.image" not in model.state_dict()


def test_every_parameter_gets_a_gradient(make_config, set_gates):
    """DDP can run without looking for unused parameters."""
    model = _model(make_config, set_gates)
    model.train()
    out = model.forward_pretrain(_batch(image_ids=[0, 1, 0, 2]))
    pretrain_loss(out, {"itc": 1.0, "itm": 1.0, "mlm": 1.0}).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_the_step_moves_nothing_between_host_and_device_but_the_mlm_gather(make_config,
                                                                            set_gates):
    """No read-back, no tensor from host data (hard negatives, their fallback count, the padding
    mask of the text tower, ITC's excluded pairs): on a GPU, only the gather of the masked
    positions for MLM synchronises (its size is the number of masked tokens)."""
    model = _model(make_config, set_gates)
    model.train()
    batch = _batch(image_ids=[0, 1, 0, 2])
    with HostTraffic() as traffic:
        out = model.forward_pretrain(batch)
        pretrain_loss(out, {"itc": 1.0, "itm": 1.0, "mlm": 1.0}).total.backward()
    gather = [f"pretraining.py:{n}" for n, line in enumerate(_source_lines(), 1)
              if "[selected]" in line]
    forward = [(op, where) for op, where in traffic.events if op == "aten.index.Tensor"]
    assert len(gather) == 1 and forward == [("aten.index.Tensor", gather[0])] * 2
    assert [op for op, _ in traffic.events if op != "aten.index.Tensor"] == [
        "aten.index_put.default"]  # the gather's backward


def _source_lines() -> list[str]:
    return inspect.getsource(pretraining).splitlines()


def _loss_grads_counts(model: FiberModel, batch: dict) -> tuple[torch.Tensor, dict, dict]:
    """The total loss of one step, the gradient of every parameter that has one and the
    accuracy counts."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout in both paths
    loss = pretrain_loss(model.forward_pretrain(batch), {"itc": 1.0, "itm": 1.0, "mlm": 1.0})
    loss.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.total.detach(), grads, {k: int(v) for k, v in loss.counts.items()}


def test_static_shapes_give_the_same_loss_gradients_and_counts(make_config, set_gates):
    """``set_static_shapes``: the MLM logits at every text position of the masked rows,
    ``(B * L, V)`` with -100 where not masked; the total loss (to 1e-6), every gradient (to
    1e-6) and the accuracy counts equal the boolean gather's."""
    model = _model(make_config, set_gates)
    model.train()
    batch = _batch(image_ids=[0, 1, 0, 2])
    plain, g_plain, c_plain = _loss_grads_counts(model, batch)
    assert not model.static_shapes
    model.set_static_shapes()
    assert model.static_shapes
    static, g_static, c_static = _loss_grads_counts(model, batch)
    torch.testing.assert_close(static, plain, rtol=1e-6, atol=1e-6)
    assert c_static == c_plain and c_plain["mlm_total"] == 2 * B
    assert g_static.keys() == g_plain.keys()
    assert any(name.startswith("mlm_head.") for name in g_plain)
    for name, grad in g_plain.items():
        torch.testing.assert_close(g_static[name], grad, rtol=1e-6, atol=1e-6, msg=name)
    with torch.no_grad():
        out = model.forward_pretrain(batch)
    assert out.mlm_logits.shape == (B * L, VOCAB) and out.mlm_labels.shape == (B * L,)
    labels = batch["mlm_labels"][:, 0]
    assert torch.equal(out.mlm_labels, labels.flatten())
    assert int((out.mlm_labels != -100).sum()) == 2 * B


def test_with_static_shapes_the_step_moves_nothing_between_host_and_device(make_config,
                                                                            set_gates):
    """With ``set_static_shapes``, the MLM gather goes too: forward, loss and backward record
    no host traffic at all."""
    model = _model(make_config, set_gates)
    model.train()
    model.set_static_shapes(True)
    batch = _batch(image_ids=[0, 1, 0, 2])
    with HostTraffic() as traffic:
        out = model.forward_pretrain(batch)
        pretrain_loss(out, {"itc": 1.0, "itm": 1.0, "mlm": 1.0}).total.backward()
    assert traffic.events == []
    assert out.mlm_logits.shape == (B * L, VOCAB)


def test_a_batch_of_one_image_is_refused(make_config, set_gates):
    model = _model(make_config, set_gates)
    with pytest.raises(ValueError, match="at least two pairs"):
        model.forward_pretrain(_batch(1))
    model = FiberModel(replace(make_config()), FiberObjectiveConfig()).eval()
    with pytest.raises(ValueError, match="item_noise"):
        model.forward_pretrain({**_batch(), "item_noise": torch.rand(B, 1)})
