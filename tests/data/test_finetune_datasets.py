"""Fine-tuning datasets: shapes, targets and labels, NLVR2 image naming, bad images, collation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vlparse.data.finetune import (
    NLVR2Dataset,
    SNLIVEDataset,
    VQADataset,
    collate_finetune,
    finetune_records,
)
from vlparse.data.manifest import load_manifest
from vlparse.errors import BadImageError
from vlparse.eval.vqa import build_answer_vocab, soft_scores
from vlparse.processing.images import load_image
from vlparse.processing.tokenization import build_tokenizer, encode_texts
from vlparse.processing.transforms import image_transform

S, L = 24, 16


@pytest.fixture(scope="module")
def manifest(scene_world) -> dict:
    return load_manifest(scene_world)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("bert-base-uncased")


def _text_of(tok, text: str) -> torch.Tensor:
    return encode_texts(tok, [text], L)[0][0]


def test_vqa_dataset(manifest, tok):
    recs = finetune_records(manifest, "vqa", "train")[:6]
    vocab = build_answer_vocab(finetune_records(manifest, "vqa", ["train", "val"]))
    ds = VQADataset(recs, tok, vocab, image_size=S, max_text_len=L)
    assert len(ds) == 6
    item = ds[2]
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["input_ids"].shape == item["attention_mask"].shape == (L,)
    assert torch.equal(item["input_ids"], _text_of(tok, recs[2].question))
    assert item["targets"].shape == (len(vocab),)
    assert torch.equal(item["targets"], soft_scores(recs[2].answers, vocab))
    assert item["targets"].max() == 1.0  # the consensus answer is in the vocabulary
    assert int(item["question_id"]) == recs[2].question_id
    assert item["answer_type"] == recs[2].answer_type and item["skipped"] == []
    for variant in ("leave_one_out", "paper_0_3"):
        got = VQADataset(recs, tok, vocab, S, L, score_variant=variant)[2]["targets"]
        assert torch.equal(got, soft_scores(recs[2].answers, vocab, variant))
    with pytest.raises(ValueError, match="score_variant"):
        VQADataset(recs, tok, vocab, S, L, score_variant="count")
    expected = image_transform(S)(load_image(recs[2].image_path))
    assert torch.equal(item["image"], expected)

    batch = collate_finetune([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, S, S)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, L)
    assert batch["targets"].shape == (4, len(vocab))
    assert batch["question_id"].tolist() == [r.question_id for r in recs[:4]]
    assert batch["index"].tolist() == [0, 1, 2, 3] and len(batch["answer_type"]) == 4

    test = finetune_records(manifest, "vqa", "test")[:2]
    t_item = VQADataset(test, tok, vocab, S, L)[1]
    assert t_item["targets"].sum() == 0 and t_item["answer_type"] == ""
    with pytest.raises(ValueError, match="repeated answers"):
        VQADataset(recs, tok, ["yes", "yes"], S, L)
    with pytest.raises(IndexError, match="out of range for 6"):
        ds[6]


def test_nlvr2_dataset_and_naming(manifest, tok):
    recs = finetune_records(manifest, "nlvr2", "train")[:4]
    root = Path(manifest["nlvr2"]["train"]["image_root"])
    ds = NLVR2Dataset(recs, tok, image_size=S, max_text_len=L)
    for i, rec in enumerate(recs):
        item = ds[i]
        assert item["images"].shape == (2, 3, S, S)
        split, set_id, pair, _ = rec.identifier.split("-")
        folder = root / "train" / rec.directory
        for side in (0, 1):
            path = folder / f"{split}-{set_id}-{pair}-img{side}.png"
            assert torch.equal(item["images"][side], image_transform(S)(load_image(path)))
        assert int(item["label"]) == int(rec.label) and item["identifier"] == rec.identifier
        assert torch.equal(item["input_ids"], _text_of(tok, rec.sentence))
    batch = collate_finetune([ds[i] for i in range(4)])
    assert batch["images"].shape == (4, 2, 3, S, S) and batch["label"].shape == (4,)
    assert batch["label"].tolist() == [int(r.label) for r in recs]
    unlabelled = [dataclasses.replace(recs[0], label=None)]
    assert int(NLVR2Dataset(unlabelled, tok, S, L)[0]["label"]) == -1


def test_snli_ve_dataset(manifest, tok):
    recs = finetune_records(manifest, "snli_ve", "dev")[:6]
    ds = SNLIVEDataset(recs, tok, image_size=S, max_text_len=L)
    batch = collate_finetune([ds[i] for i in range(len(ds))])
    assert batch["image"].shape == (6, 3, S, S) and batch["input_ids"].shape == (6, L)
    names = {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert batch["label"].tolist() == [names[r.label] for r in recs]
    assert batch["pair_id"] == [r.pair_id for r in recs]
    assert torch.equal(batch["input_ids"][1], _text_of(tok, recs[1].hypothesis))


def test_bad_images_skip_or_raise(manifest, tok, tmp_path):
    recs = finetune_records(manifest, "snli_ve", "dev")[:3]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    recs[1] = dataclasses.replace(recs[1], image_path=str(bad))
    ds = SNLIVEDataset(recs, tok, S, L)
    item = ds[1]  # replaced by example 2, whole (image and text)
    assert item["pair_id"] == recs[2].pair_id and item["index"] == 1
    assert [p for p, _ in item["skipped"]] == [str(bad)]
    assert torch.equal(item["input_ids"], _text_of(tok, recs[2].hypothesis))
    with pytest.raises(BadImageError, match="broken.jpg"):
        SNLIVEDataset(recs, tok, S, L, on_error="raise")[1]

    pairs = finetune_records(manifest, "nlvr2", "dev")[:2]
    pairs[0] = dataclasses.replace(pairs[0], right_image=str(tmp_path / "missing.png"))
    item = NLVR2Dataset(pairs, tok, S, L)[0]
    assert item["identifier"] == pairs[1].identifier
    assert item["skipped"] == [(str(tmp_path / "missing.png"), "file not found")]
    all_bad = [dataclasses.replace(p, left_image=str(bad)) for p in pairs]
    with pytest.raises(BadImageError, match="all 2 examples are bad"):
        NLVR2Dataset(all_bad, tok, S, L)[0]
    with pytest.raises(ValueError, match="on_error"):
        NLVR2Dataset(pairs, tok, S, L, on_error="ignore")
