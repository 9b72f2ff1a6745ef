"""COCO AP through COCOeval: official results format, perfect and shifted predictions."""

from __future__ import annotations

import json

import pytest
import torch

from vlparse.data.formats.coco_instances import read_coco_instances
from vlparse.data.manifest import load_manifest, manifest_entry
from vlparse.eval.detection import COCO_STAT_NAMES, coco_detection_ap, coco_results


def test_results_format():
    res = coco_results([7], [torch.tensor([[1.0, 2.0, 11.0, 22.0]])], [torch.tensor([0.5])],
                       [torch.tensor([3])])
    assert res == [{"image_id": 7, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0],
                    "score": 0.5}]


@pytest.fixture(scope="module")
def val(scene_world):
    entry = manifest_entry(load_manifest(scene_world), "coco_detection", "val")
    return entry["instances"], read_coco_instances(entry["instances"], entry["image_root"])


def _predict(inst, shift: float):
    ids, boxes, scores, cats = [], [], [], []
    for r in inst.records:
        b = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d.bbox for d in r.boxes)])
        ids.append(r.image_id)
        boxes.append(b.reshape(-1, 4) + shift)
        scores.append(torch.ones(len(r.boxes)))
        cats.append(torch.tensor([d.category_id for d in r.boxes], dtype=torch.long))
    return coco_results(ids, boxes, scores, cats)


def test_perfect_prediction_scores_one(val):
    path, inst = val
    stats = coco_detection_ap(path, _predict(inst, 0.0))
    assert set(stats) == set(COCO_STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(1.0)


def test_shifted_prediction_scores_less(val, tmp_path):
    path, inst = val
    results = _predict(inst, 1.5)
    kept = json.dumps(results)
    stats = coco_detection_ap(path, results)
    assert json.dumps(results) == kept  # the results are not modified
    assert 0.0 < stats["AP"] < 1.0 and stats["AP"] < stats["AP50"]
    with open(path) as f:  # the same from the parsed file
        again = coco_detection_ap(json.load(f), results)
    assert again["AP"] == pytest.approx(stats["AP"])


def test_no_detections_scores_zero(val):
    path, _ = val
    assert coco_detection_ap(path, []) == dict.fromkeys(COCO_STAT_NAMES, 0.0)
