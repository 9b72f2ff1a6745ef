"""SNLI-VE: the MLP head, the loss, fine-tune + evaluate end to end with a per-example check."""

from __future__ import annotations

import pytest
import torch

from vlparse.data.finetune import finetune_records
from vlparse.data.formats.snli_ve import SNLI_VE_LABELS
from vlparse.data.manifest import load_manifest
from vlparse.models.heads import MLPHead
from vlparse.objectives.tasks import classification_loss
from vlparse.tasks.classification import manifest_records
from vlparse.tasks.loading import load_model


def test_mlp_head_layers_and_loss():
    head = MLPHead(8, 16, 3)
    assert [type(m).__name__ for m in head.children()] == ["Linear", "LayerNorm", "Linear"]
    assert head(torch.randn(5, 8)).shape == (5, 3) and head.out_dim == 3
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, -1, 0])
    got = classification_loss(logits, labels, 5.0)
    by_hand = -sum(logits[i].log_softmax(-1)[labels[i]] for i in (0, 1, 2, 3, 5)) / 5
    torch.testing.assert_close(got, by_hand)


def test_manifest_records_rejects_other_data_sets(scene_world):
    manifest = load_manifest(scene_world)
    with pytest.raises(ValueError, match="data.train_sets=\\[snli_ve\\]"):
        manifest_records(manifest, ["flickr30k"], ["train"], "snli_ve")


def test_snli_ve_finetune_and_evaluate_end_to_end(scene_world, finetune_and_evaluate):
    out, summary, result = finetune_and_evaluate("snli-ve", "snli_ve_world", "test")
    assert summary["task"] == "snli-ve" and summary["steps"] == 2
    assert summary["val_split"] == "snli_ve/dev" and 0.0 <= summary["val"]["accuracy"] <= 1.0
    records = finetune_records(load_manifest(scene_world), "snli_ve", "test")
    assert result["split"] == "test" and result["num_examples"] == len(records)
    assert "predictions" not in result

    # the accuracy is that of per-example predictions of the saved model
    loaded = load_model(out)
    model, processor = loaded.model, loaded.processor
    assert loaded.task == "snli-ve" and model.head.out_dim == len(SNLI_VE_LABELS)
    from vlparse.data.finetune import SNLIVEDataset

    ds = SNLIVEDataset(records, processor.tokenizer, processor.image_size,
                       processor.max_text_len, on_error="raise")
    correct = 0
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            cls = model.backbone(item["image"][None], item["input_ids"][None],
                                 item["attention_mask"][None]).cls
            correct += int(model.head(cls).argmax(-1)) == int(item["label"])
    assert result["accuracy"] == pytest.approx(correct / len(records))
