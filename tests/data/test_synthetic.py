"""The synthetic scene world: determinism, official formats, and truth of its language."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vlparse.data.manifest import load_manifest
from vlparse.data.synthetic import ANSWERS, COLORS, SHAPES, generate
from vlparse.data.synthetic import language as L
from vlparse.data.synthetic.nlvr import pair_statement
from vlparse.data.synthetic.questions import questions
from vlparse.data.synthetic.scenes import Scene, SceneObject, exists_relation, relation

N = 40


def _world(root: Path, seed: int = 0, workers: int = 1) -> Path:
    return generate(root, N, seed=seed, image_size=96, workers=workers, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return _world(tmp_path_factory.mktemp("sw"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _load(path: str):
    return json.loads(Path(path).read_text())


def _jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _scene(*objs: tuple[str, str, str, float, float]) -> Scene:
    r = {"small": 10.0, "large": 20.0}
    objects = tuple(SceneObject(s, c, z, x, y, r[z]) for s, c, z, x, y in objs)
    return Scene(size=200, objects=objects, background="striped",
                 bg_colors=((100, 100, 100), (150, 150, 150)),
                 bg_period=20.0, bg_angle=0.3, bg_seed=1)


def test_deterministic_and_seed_dependent(world, tmp_path):
    a = _files(world.parent)
    b = _files(_world(tmp_path / "again").parent)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    c = _world(tmp_path / "other", seed=1)
    first = _load(str(world.parent / "annotations/dataset_coco.json"))
    other = _load(str(c.parent / "annotations/dataset_coco.json"))
    assert first != other


def test_workers_give_identical_output(world, tmp_path):
    a, b = _files(world.parent), _files(_world(tmp_path / "w2", workers=2).parent)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def test_manifest_files_exist(world):
    m = load_manifest(world)
    scenes = Path(world).parent / "annotations" / "scenes.json"
    assert m["generator"] == {"seed": 0, "num_images": N, "image_size": 96,
                              "scenes": str(scenes.resolve())}
    assert len(_load(m["generator"]["scenes"])["scenes"]) == N
    n_roles = 0
    for dataset, splits in m.items():
        if dataset in ("generator",) or not isinstance(splits, dict):
            continue
        for split, roles in splits.items():
            for role, value in roles.items():
                if role == "subtype":
                    continue
                assert Path(value).is_absolute() and Path(value).exists(), (dataset, split, role)
                n_roles += 1
    assert n_roles > 30


def test_karpathy_and_images(world):
    m = load_manifest(world)
    data = _load(m["coco"]["train"]["karpathy"])
    splits = {im["split"] for im in data["images"]}
    assert splits == {"train", "restval", "val", "test"}
    sentids = []
    for im in data["images"]:
        assert re.fullmatch(r"COCO_(train|val)2014_\d{12}\.jpg", im["filename"])
        assert im["filepath"] == ("train2014" if im["split"] == "train" else "val2014")
        assert len(im["sentences"]) == 5 and len({s["raw"] for s in im["sentences"]}) == 5
        for s in im["sentences"]:
            assert set(s) >= {"raw", "tokens", "imgid", "sentid"} and s["imgid"] == im["imgid"]
            assert len(s["tokens"]) <= 20
        sentids += im["sentids"]
        assert (Path(m["coco"]["train"]["image_root"]) / im["filepath"] / im["filename"]).is_file()
    assert sorted(sentids) == list(range(5 * N))
    fl = _load(m["flickr30k"]["test"]["karpathy"])
    assert {im["split"] for im in fl["images"]} == {"train", "val", "test"}
    root = Path(m["flickr30k"]["test"]["image_root"])
    assert all("filepath" not in im and (root / im["filename"]).is_file() for im in fl["images"])
    vg = _load(m["vg"]["train"]["region_descriptions"])
    n_train = sum(im["split"] == "train" for im in data["images"])
    assert len(vg) == n_train and len(_load(m["vg"]["train"]["image_data"])) == n_train
    for entry in vg:
        assert (Path(m["vg"]["train"]["image_root"]) / "VG_100K" / f"{entry['id']}.jpg").is_file()
        for r in entry["regions"]:
            assert set(r) >= {"region_id", "image_id", "phrase", "x", "y", "width", "height"}


def test_vqa(world):
    m = load_manifest(world)
    for split in ("train", "val"):
        e = m["vqa"][split]
        qs, anns = _load(e["questions"])["questions"], _load(e["annotations"])["annotations"]
        assert qs and {q["question_id"] for q in qs} == {a["question_id"] for a in anns}
        by_q = {q["question_id"]: q for q in qs}
        for a in anns:
            assert by_q[a["question_id"]]["image_id"] == a["image_id"]
            assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
            assert all(x["answer_confidence"] in ("yes", "maybe", "no") for x in a["answers"])
            assert a["answer_type"] in ("yes/no", "number", "other")
            assert a["multiple_choice_answer"] in ANSWERS and a["question_type"]
            name = f"COCO_{e['subtype']}_{a['image_id']:012d}.jpg"
            assert (Path(e["image_root"]) / name).is_file()
    test = m["vqa"]["test"]
    assert "annotations" not in test and test["subtype"] == "test2015"
    for q in _load(test["questions"])["questions"]:
        assert (Path(test["image_root"]) / f"COCO_test2015_{q['image_id']:012d}.jpg").is_file()


def test_nlvr2_naming_and_labels(world):
    m = load_manifest(world)
    labels = []
    for split in ("train", "dev", "test1"):
        e = m["nlvr2"][split]
        for row in _jsonl(e["annotations"]):
            name, set_id, pair, _ = row["identifier"].split("-")
            assert name == split and row["label"] in ("True", "False") and row["sentence"]
            folder = Path(e["image_root"]) / split
            if split == "train":
                folder = folder / row["directory"]
            for k in (0, 1):
                assert (folder / f"{split}-{set_id}-{pair}-img{k}.png").is_file()
            labels.append(row["label"])
    assert abs(labels.count("True") - labels.count("False")) <= 0.2 * len(labels)


def test_snli_ve(world):
    m = load_manifest(world)
    labels = []
    for split in ("train", "dev", "test"):
        e = m["snli_ve"][split]
        for row in _jsonl(e["annotations"]):
            assert (Path(e["image_root"]) / f"{row['Flickr30K_ID']}.jpg").is_file()
            assert row["sentence1"] and row["sentence2"]
            labels.append(row["gold_label"])
    assert set(labels) == {"entailment", "neutral", "contradiction"}
    assert max(labels.count(x) for x in set(labels)) <= 0.4 * len(labels)


def test_mdetr_spans_name_the_objects(world):
    m = load_manifest(world)
    words = set(SHAPES) | set(COLORS)
    for ds, split in (("flickr_entities", "train"), ("refcoco", "train"), ("refcoco", "testA")):
        data = _load(m[ds][split]["annotations"])
        images = {im["id"]: im for im in data["images"]}
        assert data["annotations"]
        for a in data["annotations"]:
            im = images[a["image_id"]]
            assert set(im) >= {"caption", "tokens_positive_eval", "sentence_id",
                               "original_img_id", "dataset_name", "tokens_negative"}
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x + w <= im["width"] + 1 and "phrase_ids" in a
            for s, t in a["tokens_positive"]:
                assert 0 <= s < t <= len(im["caption"])
                found = [w for w in re.findall(r"[a-z]+", im["caption"][s:t].lower())
                         if {w, w[:-1], w[:-2]} & words]  # also plurals: stars, crosses
                assert found, (im["caption"], s, t)


def test_coco_instances_load(world):
    coco_mod = pytest.importorskip("pycocotools.coco")
    m = load_manifest(world)
    for split in ("train", "val"):
        e = m["coco_detection"][split]
        coco = coco_mod.COCO(e["instances"])
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(SHAPES)
        img = coco.loadImgs(coco.getImgIds()[:1])[0]
        assert (Path(e["image_root"]) / img["file_name"]).is_file()
        assert coco.getAnnIds(imgIds=[img["id"]])


def test_relations_on_hand_made_scene():
    s = _scene(("circle", "red", "small", 30, 100), ("square", "blue", "large", 160, 40))
    a, b = s.objects
    assert relation("left of", a, b, s.size) is True and relation("right of", a, b, s.size) is False
    assert relation("below", a, b, s.size) is True and relation("above", a, b, s.size) is False
    assert relation("smaller than", a, b, s.size) is True
    assert relation("bigger than", a, b, s.size) is False
    near = _scene(("circle", "red", "small", 100, 100), ("star", "green", "small", 103, 40))
    assert relation("left of", *near.objects, near.size) is None  # centres 3 px apart
    assert exists_relation(s, {"color": "red"}, "left of", {"shape": "square"}) is True
    assert exists_relation(s, {"color": "blue"}, "left of", {"shape": "circle"}) is False


def _positions(text: str, scene: Scene) -> list[tuple[int, int]]:
    """(left object, right object) indices asserted by 'X to the left/right of Y' in ``text``."""
    out, shape = [], "(" + "|".join(SHAPES) + ")"
    for m in re.finditer(shape + r" (?:is )?to the (left|right) of (?:a|an|the) (?:\w+ )*?"
                         + shape, text):
        x = [i for i, o in enumerate(scene.objects) if o.shape == m.group(1)]
        y = [i for i, o in enumerate(scene.objects) if o.shape == m.group(3)]
        out.append((x[0], y[0]) if m.group(2) == "left" else (y[0], x[0]))
    return out


def test_captions_state_true_relations():
    s = _scene(("circle", "red", "small", 30, 100), ("square", "blue", "large", 170, 110),
               ("star", "green", "small", 100, 30))
    seen = 0
    for k in range(30):
        caps = L.captions(s, np.random.default_rng(k))
        assert len({c for c, _ in caps}) == 5
        for text, spans in caps:
            for left, right in _positions(text, s):
                assert s.objects[left].cx < s.objects[right].cx, text
                seen += 1
            if "bigger than" in text:
                assert text.split(" is bigger")[0].split()[-1] == "square", text
            for st, en, objs in spans:
                for i in objs:
                    assert s.objects[i].shape in text[st:en] or s.objects[i].color in text[st:en]
    assert seen > 0


def test_questions_and_hypotheses_are_correct():
    s = _scene(("circle", "red", "small", 30, 100), ("square", "blue", "large", 170, 110),
               ("circle", "red", "large", 100, 170))
    for k in range(20):
        rng = np.random.default_rng(k)
        for q, a, _ in questions(s, rng):
            if q == "how many red objects are there?":
                assert a == "2"
            if q.startswith("is the blue square to the left of"):
                assert a == "no"
            if q.startswith("what color is the square"):
                assert a == "blue"
        for text, label in L.hypotheses(s, rng):
            if label == "contradiction" and text.startswith("there is a"):
                assert text not in ("there is a red circle", "there is a blue square")
            if label == "entailment" and "square is bigger than" in text:
                assert "large" not in text.split("bigger than")[1]


def test_pair_statements_have_requested_truth():
    left = _scene(("circle", "red", "small", 30, 100), ("square", "blue", "large", 170, 110))
    right = _scene(("star", "red", "small", 30, 100))
    for k in range(20):
        rng = np.random.default_rng(k)
        for label in (True, False):
            text = pair_statement(left, right, rng, label)
            if text == "both images contain a red circle" or text == "both images contain a star":
                assert label is False
            if text == "there are more objects in the left image than in the right image":
                assert label is True
            if text and text.startswith("the right image contains exactly"):
                assert (text.split()[-2] in ("one", "no")) or label is False


def test_too_few_images_rejected(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        generate(tmp_path, 3, progress=False)


def test_random_scene_captions_hold_on_coordinates():
    """Relation captions of sampled scenes: the two grounded objects satisfy the relation."""
    from vlparse.data.synthetic.scenes import sample_scene

    checked = 0
    for i in range(60):
        s = sample_scene(np.random.default_rng([5, i, 0]), 128)
        for text, spans in L.captions(s, np.random.default_rng(i)):
            for rel, phrase in L.REL_PHRASES.items():
                if f" {phrase} " in text and len(spans) == 2:
                    (_, e0, [a]), (s1, _, [b]) = spans
                    if text[e0:s1].strip().removeprefix("is ").removesuffix(" the").removesuffix(
                            " a").removesuffix(" an") == phrase:
                        assert relation(rel, s.objects[a], s.objects[b], s.size) is True, text
                        checked += 1
        for i_obj, (text, spans) in L.referring_expressions(s, np.random.default_rng(i)):
            assert spans[0][2] == [i_obj] and s.objects[i_obj].shape in text
    assert checked > 30
