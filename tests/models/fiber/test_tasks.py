"""FIBER's task models: the registry, each head against the backbone's own pass computed by hand,
the retrieval model's split pass and its ITC shortlist against the dual encoder, losses against
their closed forms, parameter groups, save/load round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlparse.config.finetune import (
    NLVR2TaskConfig,
    RetrievalTaskConfig,
    SNLIVETaskConfig,
    VQATaskConfig,
)
from vlparse.config.training import OptimConfig
from vlparse.models.fiber import FiberModel
from vlparse.models.fiber.tasks import (
    TASK_MODELS,
    FiberForContrastiveLearning,
    FiberForImageAndTextRetrieval,
    FiberForMaskedLM,
    FiberForNLVR2,
    FiberForQuestionAnswering,
    FiberForVisualEntailment,
)
from vlparse.models.loading import load_pretrained_model
from vlparse.models.task_registry import architectures, task_model_class


@pytest.fixture
def backbone(make_config, set_gates) -> FiberModel:
    """A small FIBER model with open gates (so that fusion changes the outputs)."""
    model = FiberModel(make_config()).eval()
    set_gates(model, 0.7, -0.4)
    return model


def _fused_pooled(bb: FiberModel, images, ids, mask) -> torch.Tensor:
    return bb(images, ids, mask).pooler_output


def test_registry_names_every_fine_tuning_task():
    assert set(TASK_MODELS) == {
        "retrieval", "vqa", "nlvr2", "snli-ve", "caption", "grounding", "refexp", "detection"
    }
    assert task_model_class("fiber", "retrieval") is FiberForImageAndTextRetrieval
    assert task_model_class("fiber", "vqa") is FiberForQuestionAnswering
    assert {"FiberForImageAndTextRetrieval", "FiberForNLVR2"} <= set(architectures())


def test_retrieval_logits_are_the_itm_head_of_the_fused_feature(backbone, batch):
    images, ids, mask = batch
    model = FiberForImageAndTextRetrieval.from_backbone(
        backbone, RetrievalTaskConfig(itm_head_init=True), pretrained=True).eval()
    with torch.no_grad():
        want = backbone.itm_logits(_fused_pooled(backbone, images, ids, mask))
        got = model(images, ids, mask).logits
        cached = model(image_features=model.encode_images(images), input_ids=ids,
                       attention_mask=mask).logits
        scores = model.match_scores(model.encode_images(images), ids, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, want[:, 1] - want[:, 0], rtol=1e-5, atol=1e-6)
    labels = torch.tensor([1, 0])
    loss = model(images, ids, mask, labels=labels).loss
    torch.testing.assert_close(loss, F.cross_entropy(want, labels), rtol=1e-5, atol=1e-6)


def test_retrieval_head_is_fresh_without_itm_init(backbone):
    fresh = FiberForImageAndTextRetrieval.from_backbone(
        backbone, RetrievalTaskConfig(itm_head_init=False), pretrained=True)
    assert not torch.equal(fresh.head.fc.weight, backbone.itm_head.fc.weight)
    scratch = FiberForImageAndTextRetrieval.from_backbone(
        backbone, RetrievalTaskConfig(itm_head_init=True), pretrained=False)
    assert not torch.equal(scratch.head.fc.weight, backbone.itm_head.fc.weight)


def test_shortlist_embeddings_are_the_dual_encoders(backbone, batch):
    images, ids, mask = batch
    model = FiberForImageAndTextRetrieval(backbone).eval()
    with torch.no_grad():
        img, txt = model.shortlist_embeddings(model.encode_images(images), ids, mask, batch=1)
        want_img = backbone.encode_image(images).embeds
        want_txt = backbone.encode_text(ids, mask).embeds
    torch.testing.assert_close(img, want_img, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(txt, want_txt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))


def test_vqa_and_entailment_heads_read_the_fused_feature(backbone, batch):
    images, ids, mask = batch
    vqa = FiberForQuestionAnswering.from_backbone(backbone, VQATaskConfig(),
                                                  labels=["yes", "no", "red"]).eval()
    ve = FiberForVisualEntailment.from_backbone(backbone, SNLIVETaskConfig()).eval()
    with torch.no_grad():
        pooled = _fused_pooled(backbone, images, ids, mask)
        assert pooled.shape == (2, 2 * backbone.cfg.hidden_size)
        torch.testing.assert_close(vqa(images, ids, mask).logits, vqa.head(pooled))
        torch.testing.assert_close(ve(images, ids, mask).logits, ve.head(pooled))
    soft = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.6, 0.0]])
    out = vqa(images, ids, mask, labels=soft)
    want = F.binary_cross_entropy_with_logits(out.logits, soft, reduction="sum") / 2
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-6)
    assert ve(images, ids, mask).logits.shape == (2, 3)
    assert ve.labels == ["entailment", "neutral", "contradiction"]


def test_nlvr2_runs_one_fused_pass_per_image(backbone, batch):
    images, ids, mask = batch
    model = FiberForNLVR2.from_backbone(backbone, NLVR2TaskConfig()).eval()
    pair = torch.stack([images, images.flip(0)], dim=1)  # (2, 2, 3, S, S): left, right
    with torch.no_grad():
        left = _fused_pooled(backbone, images, ids, mask)
        right = _fused_pooled(backbone, images.flip(0), ids, mask)
        want = model.head(torch.cat([left, right], dim=-1))
        got = model(pair, ids, mask).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 2, 3, S, S\)"):
        model(images, ids, mask)


def test_contrastive_logits_against_a_hand_computation(backbone, batch):
    images, ids, mask = batch
    model = FiberForContrastiveLearning(backbone).eval()
    with torch.no_grad():
        out = model(images, ids, mask, return_loss=True)
        img = F.normalize(backbone.itc.image_proj(backbone.image(images).mean(1)), dim=-1)
        txt = F.normalize(backbone.itc.text_proj(backbone.text(ids, mask)[:, 0]), dim=-1)
    tau = float(backbone.itc.temperature.detach())
    want = img @ txt.t() / tau
    torch.testing.assert_close(out.logits_per_image, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits_per_text, want.t(), rtol=1e-5, atol=1e-5)
    target = torch.arange(2)
    manual = 0.5 * (F.cross_entropy(want, target) + F.cross_entropy(want.t(), target))
    torch.testing.assert_close(out.loss, manual, rtol=1e-5, atol=1e-5)


def test_masked_lm_reads_the_fused_text(backbone, batch):
    images, ids, mask = batch
    model = FiberForMaskedLM(backbone).eval()
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = ids[0, 2], ids[1, 1]
    with torch.no_grad():
        out = model(images, ids, mask, labels=labels)
        want = backbone.mlm_logits(backbone(images, ids, mask).text_hidden_state)
    torch.testing.assert_close(out.logits, want, rtol=1e-5, atol=1e-5)
    keep = labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(want[keep], labels[keep]),
                               rtol=1e-5, atol=1e-5)


def test_param_groups_cover_every_parameter_once_with_the_head_rate(backbone):
    model = FiberForQuestionAnswering(backbone, ["a", "b"], head_lr_mult=50.0)
    groups = model.param_groups(OptimConfig(lr=1e-4, weight_decay=0.01))
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    head = {id(p) for p in model.head.parameters()}
    for g in groups:
        if g["name"].startswith("task_head"):
            assert {id(p) for p in g["params"]} <= head
            assert g["lr"] == pytest.approx(5e-3)
    assert {g["name"] for g in groups} >= {"task_head_decay", "task_head_no_decay",
                                           "cross_modal_no_decay", "head_decay"}


@pytest.mark.parametrize("cls", [FiberForImageAndTextRetrieval, FiberForQuestionAnswering,
                                 FiberForNLVR2, FiberForVisualEntailment,
                                 FiberForContrastiveLearning, FiberForMaskedLM])
def test_save_and_load_round_trip(cls, backbone, batch, tmp_path):
    images, ids, mask = batch
    if cls is FiberForQuestionAnswering:
        model = cls(backbone, ["yes", "no"], head_lr_mult=3.0)
    elif cls in (FiberForContrastiveLearning, FiberForMaskedLM):
        model = cls(backbone)
    else:
        model = cls(backbone, head_lr_mult=3.0)
    model.eval()
    model.save_pretrained(tmp_path / "m")
    again = cls.from_pretrained(tmp_path / "m")
    assert again.labels == model.labels and again.head_lr_mult == model.head_lr_mult
    x = torch.stack([images, images], 1) if cls is FiberForNLVR2 else images
    with torch.no_grad():
        a, b = model(x, ids, mask), again(x, ids, mask)
    first = "logits_per_image" if cls is FiberForContrastiveLearning else "logits"
    torch.testing.assert_close(getattr(a, first), getattr(b, first))
    if cls in TASK_MODELS.values():  # what the fine-tuning tasks and the API load by name
        assert type(load_pretrained_model(tmp_path / "m")) is cls
