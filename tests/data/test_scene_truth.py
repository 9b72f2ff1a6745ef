"""The scene world's ground truth: reading its texts back, its scenes file, verified negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlparse.data import PretrainCollator, PretrainDataset, read_pretrain_records
from vlparse.data.manifest import load_manifest
from vlparse.data.negatives import lend_batch_negatives
from vlparse.data.synthetic import language as L
from vlparse.data.synthetic.scenes import Scene, SceneObject, sample_scene
from vlparse.data.synthetic.truth import SceneTruth, caption_truth, scene_from_json, scene_to_json
from vlparse.models.processor import VisualParsingProcessor
from vlparse.processing.tokenization import build_tokenizer


def _scene(*objs: tuple[str, str, str, float, float]) -> Scene:
    r = {"small": 10.0, "large": 20.0}
    objects = tuple(SceneObject(s, c, z, x, y, r[z]) for s, c, z, x, y in objs)
    return Scene(size=200, objects=objects, background="striped",
                 bg_colors=((100, 100, 100), (150, 150, 150)), bg_period=20.0, bg_angle=0.3,
                 bg_seed=1)


def test_every_generated_text_is_true():
    seen = 0
    for k in range(60):
        scene = sample_scene(np.random.default_rng([9, k, 0]), 128)
        rng = np.random.default_rng([9, k, 1])
        texts = [t for t, _ in L.captions(scene, rng)] + [p for p, _ in L.regions(scene, rng)]
        for text in texts:
            assert caption_truth(scene, text) is True, text
            assert caption_truth(scene, text[:1].upper() + text[1:] + ".") is True  # Karpathy raw
            seen += 1
    assert seen > 400


def test_false_ambiguous_and_foreign_texts():
    s = _scene(("circle", "red", "small", 30, 100), ("square", "blue", "large", 170, 110),
               ("star", "green", "small", 100, 30))
    true = ["There are three objects on a striped background.", "there is one star",
            "a red circle to the left of a blue square",
            "the large square is bigger than the red circle", "there is one green object",
            "a small red circle, a large blue square and a small green star",
            "green star above red circle", "three simple shapes",
            "a striped background with shapes"]
    false = ["there are three objects on a checkered background", "there are two stars",
             "there is one cross", "a red circle is to the right of a blue square",
             "the red circle is bigger than the large square",
             "a small red circle and a green cross", "a large red circle", "four simple shapes",
             "there are no red objects"]
    for text in true:
        assert caption_truth(s, text) is True, text
    for text in false:
        assert caption_truth(s, text) is False, text
    near = _scene(("circle", "red", "small", 100, 100), ("star", "green", "small", 103, 40))
    assert caption_truth(near, "a red circle to the left of a green star") is None  # 3 px apart
    assert caption_truth(s, "a man riding a horse") is None  # not the world's grammar


def test_scene_json_round_trip():
    scene = sample_scene(np.random.default_rng([1, 2, 0]), 96)
    back = scene_from_json(json.loads(json.dumps(scene_to_json(scene))))
    assert back.objects == scene.objects and back.background == scene.background
    assert back.size == scene.size


def test_world_writes_its_scenes(scene_world):
    manifest = load_manifest(scene_world)
    truth = SceneTruth.from_manifest(manifest)
    assert truth is not None and len(truth) == manifest["generator"]["num_images"]
    for i in (0, 7, 59):  # the file holds the drawn scenes (seed 3, 64 px in the fixture)
        drawn = sample_scene(np.random.default_rng([3, i, 0]), 64)
        assert truth.scene("coco", i + 1).objects == drawn.objects
        assert truth.scene("flickr30k", 1_000_000_000 + i + 1).objects == drawn.objects
    assert truth.scene("coco", 10_000) is None and truth.holds("coco", 10_000, "x") is None
    for sets, splits in ((["coco", "vg"], ["train", "restval"]), (["flickr30k"], ["test"])):
        records = read_pretrain_records(manifest, sets, splits)
        assert records
        for r in records:
            for c in r.captions:
                assert truth.holds(r.source, r.image_id, c) is True, (r.source, c)
    assert SceneTruth.from_manifest({"coco": {}}) is None  # real data: no ground truth


@pytest.fixture(scope="module")
def world_data(scene_world):
    manifest = load_manifest(scene_world)
    records = read_pretrain_records(manifest, ["coco"], ["train"])
    return records, SceneTruth.from_manifest(manifest), build_tokenizer("bert-base-uncased")


class _Items:
    """Items of the data set with the collator's draws; the negative filter comes from
    ``truth`` (``None``: none)."""

    def __init__(self, records, tok, truth) -> None:
        self.dataset = PretrainDataset(records)
        self.collator = PretrainCollator(
            records, VisualParsingProcessor(tok, 32, 20), 4,
            negative_filter=truth.negative_filter(records) if truth is not None else None,
        )

    def __getitem__(self, i: int) -> dict:
        return self.collator.draw(self.dataset[i])


def _dataset(records, tok, truth) -> _Items:
    return _Items(records, tok, truth)


def test_verified_negatives_are_false_of_the_image(world_data):
    records, truth, tok = world_data
    plain, verified = _dataset(records, tok, None), _dataset(records, tok, truth)
    rejected = kept = 0
    for i in range(len(records)):
        r, a, b = records[i], plain[i], verified[i]
        holds = [truth.holds(r.source, r.image_id, t) for t in a["texts"][2:]]
        assert all(truth.holds(r.source, r.image_id, t) is False for t in b["texts"][2:])
        assert b["texts"][:2] == a["texts"][:2]  # the matched captions do not change
        assert torch.equal(b["mlm_labels"], a["mlm_labels"])  # nor do the masks and the noise
        assert torch.equal(b["mfr_noise"], a["mfr_noise"])
        if all(h is False for h in holds):  # the first draws are kept: the same item
            assert b["texts"] == a["texts"] and (b["input_ids"] == a["input_ids"]).all()
            kept += 1
        else:
            rejected += 1
    assert rejected > 0 and kept > rejected  # random draws do hit true captions, not often


def test_lent_negatives_are_verified(world_data):
    records, truth, tok = world_data
    ds = _dataset(records, tok, truth)
    items = [ds[i] for i in range(len(records))]
    plain = _dataset(records, tok, None).collator
    lent_plain = lend_batch_negatives(items, 2, 8, plain.rejects)
    lent = lend_batch_negatives(items, 2, 8, ds.collator.rejects)

    def may_hold(batch):
        return sum(truth.holds(records[it["record"]].source, records[it["record"]].image_id, t)
                   is not False for it in batch for t in it["texts"][2:])

    assert may_hold(lent_plain) > 0 and may_hold(lent) == 0
    assert ds.collator.rejects(0, records[0].captions[0].upper())  # its own caption, any case
    assert plain.rejects(0, records[0].captions[0].upper())  # also without the world's truth
