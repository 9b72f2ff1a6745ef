"""Readers of MDETR grounding files and COCO instances: official-format examples written by hand,
the scene world's files, and files that break the format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vlparse.data.formats.coco_instances import (
    Category,
    category_prompt,
    clean_category_name,
    detection_as_grounding,
    read_coco_instances,
)
from vlparse.data.formats.mdetr import read_flickr_entities, read_mdetr, read_refexp
from vlparse.data.manifest import load_manifest, manifest_entry
from vlparse.errors import DataFormatError


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# Shaped like MDETR's final_flickr_separateGT_*.json: sizes as strings of digits, tokens_negative
# the whole sentence, one box grounding two phrases (boxes merged at IoU 0.95 carry both spans).
FLICKR = {
    "info": [], "licenses": [],
    "images": [{"file_name": "4886839805.jpg", "height": "500", "width": "371", "id": 27,
                "caption": "2 wet boys in blue swimming suits . They smile .",
                "dataset_name": "flickr", "tokens_negative": [[0, 48]], "sentence_id": 2,
                "original_img_id": 4886839805,
                "tokens_positive_eval": [[[0, 10]], [[14, 33]], [[36, 40]]]}],
    "annotations": [
        {"area": 100.0, "iscrowd": 0, "image_id": 27, "category_id": 1, "id": 5,
         "bbox": [10, 20, 30, 40], "tokens_positive": [[0, 10], [36, 40]]},
        {"area": 80.0, "iscrowd": 0, "image_id": 27, "category_id": 1, "id": 6,
         "bbox": [50.5, 60, 10, 8], "tokens_positive": [[0, 10], [36, 40]]},
        {"area": 50.0, "iscrowd": 0, "image_id": 27, "category_id": 1, "id": 7,
         "bbox": [1, 2, 5, 10], "tokens_positive": [[14, 33]]},
        {"area": 9.0, "iscrowd": 1, "image_id": 27, "category_id": 1, "id": 8,
         "bbox": [1, 2, 3, 3], "tokens_positive": [[14, 33]]},
    ],
    "categories": [{"supercategory": "object", "id": 1, "name": "object"}],
}


def test_flickr_official_shape(tmp_path):
    recs = read_flickr_entities(_write(tmp_path / "f.json", FLICKR), tmp_path / "img")
    assert len(recs) == 1
    r = recs[0]
    assert r.image_path == os.path.join(tmp_path / "img", "4886839805.jpg")
    assert (r.entry_id, r.image_id, r.sentence_id, r.width, r.height) == (27, 4886839805, 2,
                                                                          371, 500)
    assert [b.annotation_id for b in r.boxes] == [5, 6, 7]  # the crowd box is left out
    assert r.boxes[1].xyxy == (50.5, 60.0, 60.5, 68.0)
    assert [r.caption[s:e] for s, e in r.boxes[0].spans] == ["2 wet boys", "They"]
    assert [[r.caption[s:e] for s, e in p] for p in r.phrases] == [
        ["2 wet boys"], ["blue swimming suits"], ["They"]]
    assert r.phrase_boxes() == [[0, 1], [2], [0, 1]]
    assert r.tokens_negative == [(0, 48)]


def test_flickr_needs_eval_fields(tmp_path):
    data = json.loads(json.dumps(FLICKR))
    del data["images"][0]["tokens_positive_eval"]
    path = _write(tmp_path / "f.json", data)
    with pytest.raises(DataFormatError, match=r"images\[0\] \(id 27\).*tokens_positive_eval"):
        read_flickr_entities(path, tmp_path)
    assert read_mdetr(path, tmp_path)[0].phrases == [[(0, 10), (36, 40)], [(14, 33)]]


# Shaped like MDETR's finetune_refcoco_*.json: original_id, root-noun tokens_positive, no
# tokens_positive_eval or sentence_id.
REFCOCO = {
    "images": [{"file_name": "COCO_train2014_000000581857.jpg", "height": 640, "width": 427,
                "id": 0, "original_id": 581857, "caption": "the woman in the gray shirt",
                "dataset_name": "refcoco", "tokens_negative": [[10, 12]]}],
    "annotations": [{"area": 1.0, "iscrowd": 0, "image_id": 0, "category_id": 1, "id": 0,
                     "bbox": [1, 2, 3, 4], "original_id": 1234, "tokens_positive": [[0, 9]]}],
    "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
}


def test_refexp_official_shape(tmp_path):
    r = read_refexp(_write(tmp_path / "r.json", REFCOCO), tmp_path)[0]
    assert (r.image_id, r.dataset_name, r.sentence_id) == (581857, "refcoco", None)
    assert [[r.caption[s:e] for s, e in p] for p in r.phrases] == [["the woman"]]
    assert r.phrase_boxes() == [[0]]


def test_refexp_needs_one_box(tmp_path):
    data = json.loads(json.dumps(REFCOCO))
    data["annotations"].append({**data["annotations"][0], "id": 1})
    with pytest.raises(DataFormatError, match="exactly one box, found 2"):
        read_refexp(_write(tmp_path / "r.json", data), tmp_path)


def test_mixed_pretraining_shape(tmp_path):
    data = {"images": [{"file_name": "2334951.jpg", "height": 500, "width": 375, "id": 1107630,
                        "original_id": "2334951", "caption": "one man wearing pink tie.",
                        "tokens_negative": [[0, 3]], "data_source": "vg",
                        "dataset_name": "mixed"}],
            "annotations": [{"area": 3.0, "iscrowd": 0, "image_id": 1107630, "category_id": 1,
                             "id": 6178785, "bbox": [33, 13, 214, 485],
                             "tokens_positive": [[0, 3], [4, 7]]}],
            "categories": []}
    r = read_mdetr(_write(tmp_path / "m.json", data), tmp_path)[0]
    assert r.image_id == "2334951" and r.phrases == [[(0, 3), (4, 7)]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["annotations"][0].update(tokens_positive=[[0, 99]]),
         r"annotations\[0\].*tokens_positive\[0\].*48-character caption"),
        (lambda d: d["annotations"][0].update(image_id=3), r"image_id 3 names no entry"),
        (lambda d: d["images"][0].pop("caption"), r"images\[0\].*missing field 'caption'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"'bbox' must be four numbers"),
        (lambda d: d["images"][0].update(height="tall"), r"field 'height' must be an integer"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\]: id 27 repeats"),
        (lambda d: d["images"][0].update(tokens_positive_eval=[[[5, 2]]]),
         r"tokens_positive_eval\[0\]"),
    ],
)
def test_broken_grounding_files_name_the_place(tmp_path, change, message):
    data = json.loads(json.dumps(FLICKR))
    change(data)
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(DataFormatError, match=message) as err:
        read_mdetr(path, tmp_path)
    assert str(path) in str(err.value)


INSTANCES = {
    "images": [{"id": 9, "file_name": "a.jpg", "height": 10, "width": 20},
               {"id": 3, "file_name": "b.jpg", "height": 30, "width": 40}],
    "annotations": [
        {"id": 1, "image_id": 9, "bbox": [1, 1, 4, 4], "category_id": 7, "area": 16, "iscrowd": 0},
        {"id": 2, "image_id": 9, "bbox": [0, 0, 9, 9], "category_id": 2, "area": 81, "iscrowd": 1},
        {"id": 3, "image_id": 9, "bbox": [2, 2, 2, 2], "category_id": 2, "area": 4, "iscrowd": 0},
    ],
    "categories": [{"id": 7, "name": "tv_(monitor)"}, {"id": 2, "name": "traffic_light"}],
}


def test_coco_instances_and_prompt(tmp_path):
    inst = read_coco_instances(_write(tmp_path / "i.json", INSTANCES), tmp_path)
    assert [c.id for c in inst.categories] == [2, 7]  # id order
    assert [r.image_id for r in inst.records] == [9, 3] and inst.records[1].boxes == []
    assert [b.iscrowd for b in inst.records[0].boxes] == [False, True, False]
    prompt = category_prompt(inst.categories)
    assert prompt.text == "traffic light. tv"
    assert prompt.spans == {2: (0, 13), 7: (15, 17)} and prompt.category_ids == [2, 7]
    g = detection_as_grounding(inst.records[0], prompt)
    assert g.caption == "traffic light. tv" and (g.width, g.height) == (20, 10)
    assert [(b.annotation_id, b.spans) for b in g.boxes] == [(1, [(15, 17)]), (3, [(0, 13)])]
    assert g.phrases == [[(0, 13)], [(15, 17)]] and g.phrase_boxes() == [[1], [0]]


def test_prompt_cleaning_and_errors(tmp_path):
    assert clean_category_name("  hot_dog (food)  ") == "hot dog"
    assert category_prompt([Category(1, "a"), Category(2, "b")], separator=", ").text == "a, b"
    with pytest.raises(ValueError, match="empty once cleaned"):
        category_prompt([Category(1, "(x)")])
    data = json.loads(json.dumps(INSTANCES))
    data["annotations"][0]["category_id"] = 5
    with pytest.raises(DataFormatError, match=r"annotations\[0\]: category_id 5"):
        read_coco_instances(_write(tmp_path / "i.json", data), tmp_path)


@pytest.fixture(scope="module")
def manifest(scene_world) -> dict:
    return load_manifest(scene_world)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_scene_world_flickr_entities(manifest, split):
    entry = manifest_entry(manifest, "flickr_entities", split)
    recs = read_flickr_entities(entry["annotations"], entry["image_root"])
    assert recs
    for r in recs:
        assert os.path.isfile(r.image_path) and r.dataset_name == "flickr"
        for box in r.boxes:
            x1, y1, x2, y2 = box.xyxy
            assert 0 <= x1 < x2 <= r.width and 0 <= y1 < y2 <= r.height
        # every phrase with a box is grounded by at least one box
        assert all(r.phrase_boxes())


@pytest.mark.parametrize("split", ["train", "val", "testA"])
def test_scene_world_refcoco(manifest, split):
    entry = manifest_entry(manifest, "refcoco", split)
    recs = read_refexp(entry["annotations"], entry["image_root"])
    assert recs and all(os.path.isfile(r.image_path) for r in recs)
    assert all(r.phrase_boxes() == [[0]] for r in recs)


@pytest.mark.parametrize("split", ["train", "val"])
def test_scene_world_coco_detection(manifest, split):
    entry = manifest_entry(manifest, "coco_detection", split)
    inst = read_coco_instances(entry["instances"], entry["image_root"])
    prompt = category_prompt(inst.categories)
    names = [prompt.text[s:e] for s, e in prompt.spans.values()]
    assert names == [c.name for c in inst.categories]
    for r in inst.records:
        assert os.path.isfile(r.image_path)
        g = detection_as_grounding(r, prompt)
        assert len(g.boxes) == len(r.boxes)
