"""Box data: the sources of a scene world, resizing with a cap and padding to the stride, flips
that spare captions saying left or right, positive maps from the character spans, boxes whose
phrase was cut by truncation dropped, and the batch padding of the collator."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlparse.data.formats.mdetr import GroundedBox, GroundingRecord
from vlparse.data.grounding import BoxDataset, collate_boxes, read_box_source
from vlparse.data.manifest import load_manifest
from vlparse.models.fiber.processor import fiber_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return fiber_tokenizer("bert-base-uncased")


def _record(tmp_path, caption: str, boxes: list[tuple[tuple, list]]) -> GroundingRecord:
    path = tmp_path / "img.png"
    Image.new("RGB", (40, 20), (10, 20, 30)).save(path)
    grounded = [GroundedBox(bbox=b, spans=s, annotation_id=i) for i, (b, s) in enumerate(boxes)]
    return GroundingRecord(image_path=str(path), entry_id=0, image_id=0, caption=caption,
                           width=40, height=20, boxes=grounded,
                           phrases=[list(s) for _, s in boxes])


def test_resize_pad_and_positive_maps(tmp_path, tokenizer) -> None:
    caption = "a red circle and a blue square"
    rec = _record(tmp_path, caption, [((4.0, 2.0, 10.0, 6.0), [(2, 12)]),
                                      ((20.0, 10.0, 8.0, 8.0), [(19, 30)])])
    item = BoxDataset([rec], tokenizer, 16, sizes=[10], max_size=100, multiple=8)[0]
    # shorter side 20 -> 10: everything halves; 10 x 20 padded to 16 x 24
    assert item["size"] == (10, 20) and item["scale"] == (0.5, 0.5)
    assert item["image"].shape == (3, 16, 24)
    assert torch.all(item["image"][:, 10:, :] == 0) and torch.all(item["image"][:, :, 20:] == 0)
    torch.testing.assert_close(item["boxes"], torch.tensor([[2.0, 1.0, 7.0, 4.0],
                                                            [10.0, 5.0, 14.0, 9.0]]))
    words = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    marked = [[words[j] for j in row.nonzero().flatten()] for row in item["box_tokens"]]
    assert marked == [["red", "circle"], ["blue", "square"]]
    assert item["phrase_maps"].tolist() == item["box_tokens"].tolist()
    assert item["dropped_boxes"] == 0


def test_the_longer_side_is_capped(tmp_path, tokenizer) -> None:
    rec = _record(tmp_path, "a red circle", [((4.0, 2.0, 10.0, 6.0), [(2, 12)])])
    item = BoxDataset([rec], tokenizer, 16, sizes=[100], max_size=30, multiple=1)[0]
    assert item["size"] == (15, 30)  # 20 -> 100 would make 40 -> 200 > 30


def test_truncated_phrases_drop_their_boxes(tmp_path, tokenizer) -> None:
    caption = "a red circle and then many more words and a blue square"
    rec = _record(tmp_path, caption, [((4.0, 2.0, 10.0, 6.0), [(2, 12)]),
                                      ((20.0, 10.0, 8.0, 8.0), [(45, 56)])])
    item = BoxDataset([rec], tokenizer, 6, sizes=[20], max_size=100, multiple=1)[0]
    assert item["boxes"].shape == (1, 4) and item["dropped_boxes"] == 1
    assert item["phrase_found"].tolist() == [True, False]


@pytest.mark.parametrize(("caption", "flipped"), [("a red circle", True),
                                                  ("the circle on the left", False)])
def test_flips_mirror_boxes_unless_the_caption_says_left_or_right(tmp_path, tokenizer, caption,
                                                                   flipped) -> None:
    rec = _record(tmp_path, caption, [((4.0, 2.0, 10.0, 6.0), [(2, 8)])])
    item = BoxDataset([rec], tokenizer, 16, sizes=[20], max_size=100, multiple=1, train=True,
                      flip_prob=1.0)[0]
    expected = [26.0, 2.0, 36.0, 8.0] if flipped else [4.0, 2.0, 14.0, 8.0]
    assert item["boxes"][0].tolist() == expected


def test_collate_pads_images_and_token_maps(tmp_path, tokenizer) -> None:
    a = _record(tmp_path, "a red circle", [((4.0, 2.0, 10.0, 6.0), [(2, 12)])])
    b = _record(tmp_path, "a red circle and a blue square", [((4.0, 2.0, 10.0, 6.0), [(19, 30)])])
    short = BoxDataset([a], tokenizer, 16, sizes=[10], max_size=100, multiple=4)[0]
    long = BoxDataset([b], tokenizer, 16, sizes=[20], max_size=100, multiple=4)[0]
    batch = collate_boxes([short, long])
    assert batch["image"].shape == (2, 3, 20, 40)
    length = batch["input_ids"].shape[1]
    assert length == long["input_ids"].shape[0] > short["input_ids"].shape[0]
    assert batch["attention_mask"][0].sum() == short["input_ids"].shape[0]
    assert all(m.shape[1] == length for m in batch["box_tokens"] + batch["phrase_maps"])
    assert batch["sizes"] == [(10, 20), (20, 40)]


def test_scene_world_sources(scene_world) -> None:
    manifest = load_manifest(scene_world)
    detection = read_box_source(manifest, "coco_detection", "val")
    assert detection.kind == "detection" and detection.instances
    assert detection.records[0].caption == detection.prompt.text
    assert read_box_source(manifest, "refcoco", "val").kind == "refexp"
    flickr = read_box_source(manifest, "flickr_entities", "val")
    assert flickr.kind == "grounding" and any(r.boxes for r in flickr.records)
