"""NLVR2 pair method: both images reach the head, batching, loss, fine-tune + evaluate."""

from __future__ import annotations

import pytest
import torch

from vlparse.config import FinetuneConfig, load_config
from vlparse.data.finetune import finetune_records
from vlparse.data.manifest import load_manifest
from vlparse.models.task_registry import task_model_class
from vlparse.tasks.classification import classification_step

SMALL = [
    "model.visual.embed_dim=16", "model.visual.num_heads=[2]", "model.visual.image_size=64",
    "model.visual.window_size=4", "model.text.hidden_size=32", "model.text.num_layers=2",
    "model.text.num_heads=2", "model.text.intermediate_size=64", "model.text.max_text_len=12",
]


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    from vlparse.models.single_stream import VisualParsingModel

    cfg = load_config("nlvr2_world", SMALL, cls=FinetuneConfig)
    torch.manual_seed(0)
    backbone = VisualParsingModel(cfg.model, 1000, cls_token_id=1, sep_token_id=2)
    model = task_model_class(cfg.model.family, "nlvr2").from_backbone(backbone, cfg.task)
    assert model.head.fc1.in_features == 2 * cfg.model.text.hidden_size
    return model.eval()


def pair_logits(model, images, ids, mask) -> torch.Tensor:
    return model(images, ids, mask).logits


def _batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 2, 3, 64, 64, generator=g)
    ids = torch.randint(5, 1000, (b, 12), generator=g)
    mask = torch.ones(b, 12, dtype=torch.long)
    mask[1:, 8:] = 0
    return images, ids * mask, mask


def test_pair_head_sees_both_images_and_batches_like_single_calls(small_model):
    images, ids, mask = _batch(3)
    with torch.no_grad():
        logits = pair_logits(small_model, images, ids, mask)
        assert logits.shape == (3, 2)
        swapped = pair_logits(small_model, images.flip(1), ids, mask)
        singles = torch.cat([pair_logits(small_model, images[i : i + 1], ids[i : i + 1],
                                         mask[i : i + 1]) for i in range(3)])
        # changing only the right image changes the logits too
        other = images.clone()
        other[:, 1] = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(9))
        right_changed = pair_logits(small_model, other, ids, mask)
    assert not torch.allclose(logits, swapped, atol=1e-6)
    assert not torch.allclose(logits, right_changed, atol=1e-6)
    torch.testing.assert_close(singles, logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 2, 3, S, S\)"):
        pair_logits(small_model, images[:, 0], ids, mask)


def test_classification_step_loss_and_counts(small_model):
    images, ids, mask = _batch(4, seed=1)
    labels = torch.tensor([1, 0, -1, 1])  # one unlabelled example is ignored
    small_model.train()
    batch = {"input_ids": ids, "attention_mask": mask, "label": labels}
    torch.manual_seed(5)
    out = classification_step(small_model, images, batch, lambda t: t)
    torch.manual_seed(5)  # the same dropout draws: the same logits
    logits = pair_logits(small_model, images, ids, mask)
    small_model.eval()
    expected = torch.nn.functional.cross_entropy(logits[[0, 1, 3]].float(), labels[[0, 1, 3]])
    torch.testing.assert_close(out.loss, expected)
    assert out.counts["accuracy_total"] == 3
    pred = logits.argmax(-1)
    assert out.counts["accuracy_correct"] == int((pred[[0, 1, 3]] == labels[[0, 1, 3]]).sum())
    out.loss.backward()
    assert small_model.head.fc1.weight.grad is not None
    assert any(p.grad is not None for p in small_model.backbone.visual.parameters())
    small_model.zero_grad(set_to_none=True)


def test_nlvr2_finetune_and_evaluate_dev_and_test1(scene_world, finetune_and_evaluate):
    _, summary, result = finetune_and_evaluate("nlvr2", "nlvr2_world", "test1")  # test-P
    assert summary["task"] == "nlvr2" and summary["steps"] == 2
    assert summary["val_split"] == "nlvr2/dev" and 0.0 <= summary["val"]["accuracy"] <= 1.0
    assert summary["val"]["num_examples"] == 6
    records = finetune_records(load_manifest(scene_world), "nlvr2", "test1")
    assert result["split"] == "test1" and result["num_examples"] == len(records)
    hits = result["accuracy"] * len(records)
    assert 0 <= hits <= len(records) and hits == pytest.approx(round(hits))
    assert "predictions" not in result
