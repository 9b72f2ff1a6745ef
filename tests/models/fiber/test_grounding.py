"""FIBER's box model: the fused backbone's stage features against timm's own intermediates
(gates at 0, any image size), the loss's gradients, the fine-grained parameter groups, the
round trip through save_pretrained and boxes found for character spans."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from vlparse.config.fiber import FiberDetectionConfig
from vlparse.config.training import OptimConfig
from vlparse.models.base import read_pretrained_config
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.grounding import (
    FiberForDetection,
    FiberForGrounding,
    FiberForReferringExpressions,
)
from vlparse.models.task_registry import task_model_class

from .conftest import VOCAB, small_config

DETECTION = FiberDetectionConfig(channels=16, num_convs=1, norm_groups=4, anchor_scale=4.0,
                                 max_text_len=16, train_sizes=[32], test_size=32, max_size=48)


def box_model(vocab: int = VOCAB, **changes) -> FiberForGrounding:
    cfg = small_config()
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=vocab),
                              detection=dataclasses.replace(DETECTION, **changes))
    return FiberForGrounding(FiberModel(cfg))


def _texts(batch: int = 2, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, VOCAB, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, 5:] = 0
    return ids, mask


def test_stage_features_are_timms_intermediates_while_the_gates_are_zero() -> None:
    model = box_model().eval()
    images = torch.randn(2, 3, 24, 44)  # not the configured 40 x 40: any size divisible by 4
    ids, mask = _texts()
    levels, text = model.features(images, ids, mask)
    with torch.no_grad():
        ref = model.backbone.image.model.forward_intermediates(
            images, indices=2, norm=False, intermediates_only=True)  # (B, C, H, W)
    assert [tuple(x.shape) for x in levels] == [(2, 8, 6, 11), (2, 16, 3, 6)]
    for ours, theirs in zip(levels, ref, strict=True):
        torch.testing.assert_close(ours, theirs)
    assert text.shape == (2, 7, 16)


def test_stage_features_read_the_text_once_the_gates_open() -> None:
    model = box_model().eval()
    with torch.no_grad():
        for cross in model.backbone.i2t:
            cross.gate.fill_(1.0)
    images = torch.randn(1, 3, 24, 24)
    ids, mask = _texts(1)
    a, _ = model.features(images, ids, mask)
    b, _ = model.features(images, (ids + 1) % VOCAB, mask)
    assert not torch.allclose(a[-1], b[-1])


def test_loss_reaches_head_and_both_backbones() -> None:
    model = box_model()
    ids, mask = _texts()
    out = model(torch.randn(2, 3, 32, 32), ids, mask)
    boxes = [torch.tensor([[2.0, 3.0, 14.0, 20.0]]), torch.tensor([[10.0, 10.0, 30.0, 28.0]])]
    tokens = [torch.zeros(1, 7, dtype=torch.bool), torch.zeros(1, 7, dtype=torch.bool)]
    tokens[0][0, 2] = tokens[1][0, 3] = True
    loss = model.loss(out, boxes, tokens, mask)
    assert loss.num_positive > 0 and set(loss.parts) == {"alignment", "box", "centerness"}
    loss.total.backward()
    for module in (model.head, model.backbone.image, model.backbone.text):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_param_groups_follow_the_fine_grained_optimiser() -> None:
    model = box_model(text_lr_mult=0.1)
    groups = model.param_groups(OptimConfig(lr=1e-4, weight_decay=0.01))
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["text_backbone_decay"] == pytest.approx(1e-5)
    assert lr["image_backbone_decay"] == lr["head_decay"] == pytest.approx(1e-4)
    assert groups[-1]["name"].startswith("head")
    by_id = {id(p): g["name"] for g in groups for p in g["params"]}
    bb = model.backbone
    assert all(by_id[id(p)].startswith("text_backbone") for p in bb.t2i.parameters())
    assert all(by_id[id(p)].startswith("image_backbone") for p in bb.i2t.parameters())
    words = bb.text.model.embeddings.word_embeddings.weight
    assert by_id[id(words)].startswith("text_backbone")  # the tied MLM decoder does not move it
    assert sum(len(g["params"]) for g in groups) == len(
        [p for p in model.parameters() if p.requires_grad])


def test_save_and_load_keep_weights_and_task(tmp_path) -> None:
    model = FiberForReferringExpressions(FiberModel(small_config()))
    model = FiberForReferringExpressions.from_backbone(box_model())  # head carried over
    model.eval()
    folder = model.save_pretrained(tmp_path / "m")
    assert read_pretrained_config(folder)["task"] == "refexp"
    again = FiberForReferringExpressions.from_pretrained(folder)
    ids, mask = _texts()
    images = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        a, b = model(images, ids, mask), again(images, ids, mask)
    torch.testing.assert_close(a.alignment_logits, b.alignment_logits)
    torch.testing.assert_close(a.box_regression, b.box_regression)
    assert again.task == "refexp" and again.cfg.detection == model.cfg.detection


def test_from_backbone_keeps_a_box_models_head() -> None:
    source = box_model()
    with torch.no_grad():
        source.head.bias0.fill_(3.0)
    assert FiberForDetection.from_backbone(source).head.bias0.item() == 3.0
    assert FiberForDetection.from_backbone(source.backbone).head.bias0.item() != 3.0
    assert task_model_class("fiber", "detection") is FiberForDetection
    assert task_model_class("fiber", "grounding") is FiberForGrounding


def test_find_returns_boxes_in_the_original_pixels() -> None:
    from vlparse.models.fiber import FiberProcessor

    model = box_model(vocab=30522).eval()  # bert-base-uncased's vocabulary
    tokenizer = FiberProcessor.from_config(model.cfg).tokenizer
    image = Image.new("RGB", (80, 40), (200, 30, 30))
    caption = "a red circle and a blue square"
    det = model.find(image, caption, [[(2, 12)], [(19, 30)]], tokenizer)
    assert det.boxes.shape[1] == 4 and det.boxes.shape[0] == det.scores.shape[0] > 0
    assert set(det.phrases.tolist()) <= {0, 1}
    # test size 32 on the shorter side: the 80 x 40 image ran at 64 x 32, boxes come back x1.25
    assert float(det.boxes[:, 2].max()) <= 80 + 1e-3 and float(det.boxes[:, 3].max()) <= 40
    assert float(det.boxes[:, 2].max()) > 64
