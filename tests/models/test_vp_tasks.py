"""Task models: forward with and without labels (loss against its definition), the NLVR2 pair
method, parameter groups with the head's rate, save / load with id2label."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vlparse.config import OptimConfig, load_config
from vlparse.data.formats.snli_ve import SNLI_VE_LABELS
from vlparse.models import load_pretrained_model
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.vp_tasks import (
    ENTAILMENT_LABELS,
    TASK_MODELS,
    VisualParsingForNLVR2,
    VisualParsingForQuestionAnswering,
    VisualParsingForRetrieval,
    VisualParsingForVisualEntailment,
)

SMALL = ["model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.text.hidden_size=32",
         "model.text.num_layers=1", "model.text.num_heads=2", "model.text.intermediate_size=64",
         "model.text.max_text_len=10", "model.visual.image_size=64", "model.visual.window_size=4"]
V = 300
ANSWERS = ["yes", "no", "2", "red", "circle"]


def _backbone() -> VisualParsingModel:
    torch.manual_seed(0)
    return VisualParsingModel(load_config("tiny", SMALL).model, V, 1, 2)


def _inputs(b: int = 3, pair: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    shape = (b, 2, 3, 64, 64) if pair else (b, 3, 64, 64)
    ids = torch.randint(5, V, (b, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return torch.randn(*shape, generator=g), ids, mask


def _ce(logits: torch.Tensor, labels: list[int]) -> float:
    """Mean cross-entropy over the labels >= 0, by hand."""
    terms = [math.log(sum(math.exp(v) for v in row.tolist())) - float(row[y].detach())
             for row, y in zip(logits, labels, strict=True) if y >= 0]
    return sum(terms) / len(terms)


def test_retrieval_scores_pairs_and_starts_from_the_itm_head():
    backbone = _backbone()
    model = VisualParsingForRetrieval(backbone, init_from_itm=True).eval()
    assert torch.equal(model.head.fc.weight, backbone.itm_head.fc.weight)
    images, ids, mask = _inputs()
    out = model(images, ids, mask)
    assert out.logits.shape == (3, 2) and out.loss is None
    with torch.no_grad():
        cls = backbone(images, ids, mask).cls
    torch.testing.assert_close(out.logits, backbone.itm_head(cls))
    labels = torch.tensor([1, 0, 1])
    loss = model(images, ids, mask, labels=labels).loss
    assert float(loss.detach()) == pytest.approx(_ce(out.logits.detach(), [1, 0, 1]), rel=1e-5)
    tokens = model.encode_images(images)
    torch.testing.assert_close(tokens, backbone.encode_image(images).tokens)
    scores = model.match_scores(tokens, ids, mask)
    torch.testing.assert_close(scores, out.logits[:, 1] - out.logits[:, 0])
    with pytest.raises(ValueError, match="images or image_features"):
        model(images, ids, mask, image_features=tokens)


def test_question_answering_bce_on_soft_scores():
    model = VisualParsingForQuestionAnswering(_backbone(), ANSWERS)
    images, ids, mask = _inputs()
    out = model(images, ids, mask)
    assert out.logits.shape == (3, len(ANSWERS)) and out.loss is None
    targets = torch.zeros(3, len(ANSWERS))
    targets[0, 1], targets[1, 3], targets[2, 0] = 1.0, 2 / 3, 1 / 3
    loss = model(images, ids, mask, labels=targets).loss
    logits = out.logits.detach()
    by_hand = sum(-(t * math.log(1 / (1 + math.exp(-x))) + (1 - t) * math.log(
        1 - 1 / (1 + math.exp(-x)))) for x, t in zip(logits.flatten().tolist(),
                                                     targets.flatten().tolist(), strict=True))
    assert float(loss.detach()) == pytest.approx(by_hand / 3, rel=1e-5)
    with pytest.raises(ValueError, match="empty answer vocabulary"):
        VisualParsingForQuestionAnswering(_backbone(), [])


def test_nlvr2_pair_method():
    model = VisualParsingForNLVR2(_backbone()).eval()
    images, ids, mask = _inputs(pair=True)
    out = model(images, ids, mask)
    assert out.logits.shape == (3, 2) and out.loss is None
    with torch.no_grad():
        left = model.backbone(images[:, 0], ids, mask).cls
        right = model.backbone(images[:, 1], ids, mask).cls
        expected = model.head(torch.cat([left, right], dim=1))
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-5)
    loss = model(images, ids, mask, labels=torch.tensor([1, -1, 0])).loss
    assert float(loss.detach()) == pytest.approx(_ce(out.logits, [1, -1, 0]), rel=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 2, 3, S, S\)"):
        model(images[:, 0], ids, mask)


def test_visual_entailment_labels_and_loss():
    assert ENTAILMENT_LABELS == SNLI_VE_LABELS  # the data reader's label ids
    model = VisualParsingForVisualEntailment(_backbone())
    images, ids, mask = _inputs()
    out = model(images, ids, mask)
    assert out.logits.shape == (3, 3) and out.loss is None
    loss = model(images, ids, mask, labels=torch.tensor([2, 0, 1])).loss
    assert float(loss.detach()) == pytest.approx(_ce(out.logits.detach(), [2, 0, 1]), rel=1e-5)
    loss.backward()
    assert model.head.fc1.weight.grad is not None
    assert model.backbone.visual.model.patch_embed.proj.weight.grad is not None


def test_param_groups_give_the_head_its_rate():
    model = VisualParsingForQuestionAnswering(_backbone(), ANSWERS, head_lr_mult=10.0)
    groups = model.param_groups(OptimConfig(lr=1e-4, visual_lr=1e-5, weight_decay=0.01))
    names = {id(p): n for n, p in model.named_parameters()}
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    assert [g["name"] for g in groups] == ["visual_decay", "visual_no_decay", "fusion_decay",
                                           "fusion_no_decay", "head_decay", "head_no_decay"]
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            lr = 1e-5 if name.startswith("backbone.visual.") else (
                1e-3 if name.startswith("head.") else 1e-4)
            assert g["lr"] == pytest.approx(lr), name
    # the backbone's groups are those of the bare model
    bare = model.backbone.param_groups(OptimConfig(lr=1e-4, visual_lr=1e-5, weight_decay=0.01))
    for a, b in zip(bare, groups[:4], strict=True):
        assert a["name"] == b["name"] and [id(p) for p in a["params"]] == [
            id(p) for p in b["params"]]


@pytest.mark.parametrize("task", sorted(TASK_MODELS))
def test_save_and_load_round_trip(task, tmp_path):
    cls = TASK_MODELS[task]
    backbone = _backbone()
    model = (cls(backbone, ANSWERS, head_lr_mult=3.0) if task == "vqa"
             else cls(backbone, head_lr_mult=3.0)).eval()
    model.save_pretrained(tmp_path / task)
    config = json.loads((tmp_path / task / "config.json").read_text())
    assert config["architecture"] == cls.__name__ and config["task"] == task
    assert list(config["id2label"].values()) == model.labels
    loaded = load_pretrained_model(tmp_path / task)
    assert type(loaded) is cls and loaded.labels == model.labels
    assert loaded.head_lr_mult == 3.0
    images, ids, mask = _inputs(pair=task == "nlvr2")
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, ids, mask).logits,
                                   model(images, ids, mask).logits, rtol=0, atol=0)
    # the backbone alone is not the task model
    with pytest.raises(ValueError, match=f"holds a {cls.__name__}"):
        VisualParsingModel.from_pretrained(tmp_path / task)


def test_shortlist_embeddings_are_the_unimodal_passes():
    """Each image's embedding is the mean last-layer state of its visual embeddings alone, each
    text's the masked mean of ``[CLS] [SEP] W`` alone, both L2-normalised; batching does not
    change them."""
    model = VisualParsingForRetrieval(_backbone()).eval()
    images, ids, mask = _inputs(b=3)
    bb = model.backbone
    with torch.no_grad():
        features = model.encode_images(images)
        img, txt = model.shortlist_embeddings(features, ids, mask, batch=2)
        for i in range(3):
            x = bb.visual_embed(features[i : i + 1], bb.text_embed.type_embedding(1))
            h = bb.encoder(x, torch.ones(1, x.shape[1], dtype=torch.long))[0][0].mean(0)
            torch.testing.assert_close(img[i], h / h.norm(), atol=1e-5, rtol=1e-5)
            n = int(mask[i].sum())
            text = torch.cat([torch.tensor([bb.cls_token_id, bb.sep_token_id]), ids[i, :n]])
            x = bb.text_embed(text[None], position_ids=torch.arange(n + 2))
            h = bb.encoder(x, torch.ones(1, n + 2, dtype=torch.long))[0][0].mean(0)
            torch.testing.assert_close(txt[i], h / h.norm(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", sorted(TASK_MODELS))
def test_from_config_and_from_backbone(task):
    from vlparse.config import FinetuneConfig
    from vlparse.models.processor import VisualParsingProcessor

    recipe = {"retrieval": "retrieval_world", "vqa": "vqa_world", "nlvr2": "nlvr2_world",
              "snli-ve": "snli_ve_world"}[task]
    cfg = load_config(recipe, SMALL + ["task.head_lr_mult=4"], cls=FinetuneConfig)
    processor = VisualParsingProcessor.from_config(cfg.model)
    labels = ANSWERS if task == "vqa" else None
    fresh = TASK_MODELS[task].from_config(cfg.model, processor, cfg.task, labels)
    assert fresh.backbone.vocab_size == processor.special_ids["vocab_size"]
    assert fresh.head_lr_mult == 4.0 and fresh.task == task
    if task == "vqa":
        assert fresh.labels == ANSWERS
    backbone = _backbone()
    wrapped = TASK_MODELS[task].from_backbone(backbone, cfg.task, labels, pretrained=True)
    assert wrapped.backbone is backbone
    if task == "retrieval":  # a pre-trained backbone lends its ITM head (itm_head_init)
        assert torch.equal(wrapped.head.fc.weight, backbone.itm_head.fc.weight)
        cold = TASK_MODELS[task].from_backbone(backbone, cfg.task, pretrained=False)
        assert not torch.equal(cold.head.fc.weight, backbone.itm_head.fc.weight)
