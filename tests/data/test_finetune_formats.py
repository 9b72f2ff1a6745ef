"""Readers of VQA v2, NLVR2 and SNLI-VE: scene-world files, and files that break the format."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from vlparse.data.finetune import finetune_records
from vlparse.data.formats import (
    SNLI_VE_LABELS,
    DataFormatError,
    coco_image_name,
    nlvr2_image_paths,
    read_nlvr2,
    read_snli_ve,
    read_vqa,
)
from vlparse.data.manifest import load_manifest
from vlparse.errors import ManifestError


@pytest.fixture(scope="module")
def manifest(scene_world) -> dict:
    return load_manifest(scene_world)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1))
    return path


def _write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _assert_format_error(read, path: Path, field: str, where: str, expected: str) -> None:
    """``read()`` raises a DataFormatError naming ``path``, ``where``, ``'field'`` and why."""
    with pytest.raises(DataFormatError) as info:
        read()
    msg = str(info.value)
    assert str(path) in msg and where in msg and f"'{field}'" in msg and expected in msg


# ---------------------------------------------------------------- scene world


def test_vqa_scene_world(manifest):
    e = manifest["vqa"]["train"]
    recs = read_vqa(e["questions"], e["image_root"], e["annotations"], e["subtype"])
    raw = json.loads(Path(e["questions"]).read_text())["questions"]
    assert [r.question_id for r in recs] == [q["question_id"] for q in raw]
    for r in recs:
        name = f"COCO_train2014_{r.image_id:012d}.jpg"
        assert r.image_path == os.path.join(e["image_root"], name) and os.path.isfile(r.image_path)
        assert len(r.answers) == 10 and r.answer_type in ("yes/no", "number", "other")
        assert r.has_answers and r.question_type
    # subtype inferred from the file when not given
    again = read_vqa(e["questions"], e["image_root"], e["annotations"])
    assert [r.image_path for r in again] == [r.image_path for r in recs]
    test = finetune_records(manifest, "vqa", "test")
    assert test and all(not r.has_answers and r.answer_type is None for r in test)
    assert all(os.path.basename(r.image_path).startswith("COCO_test2015_") for r in test)
    assert all(os.path.isfile(r.image_path) for r in test)
    both = finetune_records(manifest, "vqa", ["train", "val"])
    assert len(both) == len(recs) + len(finetune_records(manifest, "vqa", "val"))


def test_nlvr2_scene_world(manifest):
    for split in ("train", "dev", "test1"):
        e = manifest["nlvr2"][split]
        recs = read_nlvr2(e["annotations"], e["image_root"])
        assert recs
        for r in recs:
            stem = r.identifier.rsplit("-", 1)[0]
            assert r.identifier.startswith(split + "-")
            folder = Path(e["image_root"]) / split
            if split == "train":
                folder = folder / r.directory
            else:
                assert r.directory is None
            assert r.left_image == str(folder / f"{stem}-img0.png")
            assert r.right_image == str(folder / f"{stem}-img1.png")
            assert os.path.isfile(r.left_image) and os.path.isfile(r.right_image)
        labels = Counter(r.label for r in recs)
        assert set(labels) == {True, False}


def test_snli_ve_scene_world(manifest):
    e = manifest["snli_ve"]["dev"]
    recs = read_snli_ve(e["annotations"], e["image_root"])
    raw = [json.loads(x) for x in Path(e["annotations"]).read_text().splitlines()]
    assert len(recs) == len(raw)
    for r, row in zip(recs, raw, strict=True):
        assert r.image_path == os.path.join(e["image_root"], f"{row['Flickr30K_ID']}.jpg")
        assert os.path.isfile(r.image_path)
        assert r.hypothesis == row["sentence2"] and r.label == row["gold_label"]
        assert SNLI_VE_LABELS[r.label_id] == r.label and r.pair_id == row["pairID"]
    assert {r.label_id for r in recs} == {0, 1, 2}


def test_finetune_records_errors(manifest):
    with pytest.raises(ManifestError, match="unknown fine-tuning task"):
        finetune_records(manifest, "gqa", "train")
    with pytest.raises(ManifestError, match="no split 'val'.*dev"):
        finetune_records(manifest, "nlvr2", "val")
    broken = {"snli_ve": {"dev": {"image_root": "/x"}}}
    with pytest.raises(ManifestError, match=r"snli_ve\.dev: missing role 'annotations'"):
        finetune_records(broken, "snli_ve", "dev")


# ---------------------------------------------------------------- helpers


def test_naming_helpers():
    assert coco_image_name("train2014", 458752) == "COCO_train2014_000000458752.jpg"
    left, right = nlvr2_image_paths("/r", "train-10171-0-0", "64")
    assert left == "/r/train/64/train-10171-0-img0.png"
    assert right == "/r/train/64/train-10171-0-img1.png"
    assert nlvr2_image_paths("/r", "dev-850-1-3")[1] == "/r/dev/dev-850-1-img1.png"
    with pytest.raises(ValueError, match="needs its 'directory'"):
        nlvr2_image_paths("/r", "train-1-0-0")
    with pytest.raises(ValueError, match="not <split>-<set>-<pair>-<sentence>"):
        nlvr2_image_paths("/r", "train-1-0")


# ---------------------------------------------------------------- broken VQA files


def _vqa_files(tmp_path: Path) -> tuple[Path, Path]:
    qs = {"data_subtype": "val2014", "questions": [
        {"image_id": 42, "question": "What is it?", "question_id": 42000},
        {"image_id": 7, "question": "How many?", "question_id": 7001}]}
    answers = [{"answer": "net", "answer_confidence": "yes", "answer_id": k} for k in range(10)]
    anns = {"annotations": [
        {"question_id": 42000, "image_id": 42, "question_type": "what is", "answer_type": "other",
         "multiple_choice_answer": "net", "answers": answers},
        {"question_id": 7001, "image_id": 7, "question_type": "how many",
         "answer_type": "number", "multiple_choice_answer": "2", "answers": answers}]}
    return _write(tmp_path / "q.json", qs), _write(tmp_path / "a.json", anns)


def test_vqa_handmade(tmp_path):
    q, a = _vqa_files(tmp_path)
    recs = read_vqa(q, "/img", a)
    assert [r.image_path for r in recs] == ["/img/COCO_val2014_000000000042.jpg",
                                            "/img/COCO_val2014_000000000007.jpg"]
    assert recs[1].answer_type == "number" and recs[1].multiple_choice_answer == "2"
    assert read_vqa(q, "/img", subtype="test2015")[0].image_path.endswith(
        "COCO_test2015_000000000042.jpg")


@pytest.mark.parametrize(
    "which, edit, field, where, expected",
    [
        ("q", lambda d: d["questions"][1].pop("question"), "question",
         "questions[1] (question_id 7001)", "missing field"),
        ("q", lambda d: d["questions"][0].update(image_id="42"), "image_id",
         "questions[0] (question_id 42000)", "must be an integer"),
        ("a", lambda d: d["annotations"][1]["answers"][3].pop("answer"), "answer",
         "annotations[1] (question_id 7001).answers[3]", "missing field"),
        ("a", lambda d: d["annotations"][0].update(answers="net"), "answers",
         "annotations[0] (question_id 42000)", "must be a list"),
        ("a", lambda d: d["annotations"][0].update(answer_type=None), "answer_type",
         "annotations[0] (question_id 42000)", "must be a string"),
    ],
)
def test_vqa_broken(tmp_path, which, edit, field, where, expected):
    q, a = _vqa_files(tmp_path)
    target = q if which == "q" else a
    data = json.loads(target.read_text())
    edit(data)
    _write(target, data)
    _assert_format_error(lambda: read_vqa(q, "/img", a), target, field, where, expected)


def test_vqa_unmatched_and_subtype(tmp_path):
    q, a = _vqa_files(tmp_path)
    data = json.loads(a.read_text())
    del data["annotations"][1]
    _write(a, data)
    with pytest.raises(DataFormatError, match=r"questions\[1\] \(question_id 7001\): no annot"):
        read_vqa(q, "/img", a)
    data = json.loads(q.read_text())
    del data["data_subtype"]
    _write(q, data)
    with pytest.raises(DataFormatError, match="pass subtype="):
        read_vqa(q, "/img")


# ---------------------------------------------------------------- broken NLVR2 / SNLI-VE files


def _nlvr_rows() -> list[dict]:
    return [
        {"identifier": "train-5-1-0", "sentence": "one dog", "label": "True", "directory": "5"},
        {"identifier": "train-5-1-1", "sentence": "two dogs", "label": "False",
         "directory": 5},
    ]


def test_nlvr2_handmade(tmp_path):
    f = _write_lines(tmp_path / "train.json", _nlvr_rows())
    recs = read_nlvr2(f, "/n")
    assert [r.label for r in recs] == [True, False]
    assert recs[1].left_image == "/n/train/5/train-5-1-img0.png" and recs[1].directory == "5"
    unlabelled = [{"identifier": "test1-0-0-0", "sentence": "s"}]
    f2 = _write_lines(tmp_path / "test1.json", unlabelled)
    assert read_nlvr2(f2, "/n", require_labels=False)[0].label is None
    with pytest.raises(DataFormatError, match=r"record 0 \(identifier test1-0-0-0\): missing "
                                              r"field 'label'"):
        read_nlvr2(f2, "/n")


@pytest.mark.parametrize(
    "edit, field, where, expected",
    [
        (lambda r: r[1].pop("sentence"), "sentence", "record 1 (identifier train-5-1-1)",
         "missing field"),
        (lambda r: r[0].update(label="yes"), "label", "record 0 (identifier train-5-1-0)",
         '"True" or "False"'),
        (lambda r: r[1].update(identifier=17), "identifier", "record 1", "must be a string"),
        (lambda r: r[0].update(identifier="train-5-img0"), "identifier",
         "record 0 (identifier train-5-img0)", "<split>-<set>-<pair>-<sentence>"),
        (lambda r: r[0].pop("directory"), "directory", "record 0 (identifier train-5-1-0)",
         "needs its 'directory'"),
    ],
)
def test_nlvr2_broken(tmp_path, edit, field, where, expected):
    rows = _nlvr_rows()
    edit(rows)
    f = _write_lines(tmp_path / "train.json", rows)
    _assert_format_error(lambda: read_nlvr2(f, "/n"), f, field, where, expected)


def _snli_rows() -> list[dict]:
    return [
        {"Flickr30K_ID": "3416050480", "sentence2": "A man is outdoors.",
         "gold_label": "entailment", "pairID": "p0"},
        {"Flickr30K_ID": 12, "sentence2": "A cat.", "gold_label": "contradiction"},
    ]


def test_snli_ve_handmade(tmp_path):
    f = _write_lines(tmp_path / "snli_ve_dev.jsonl", _snli_rows())
    a, b = read_snli_ve(f, "/f")
    assert (a.image_path, a.label_id, a.pair_id) == ("/f/3416050480.jpg", 0, "p0")
    assert (b.image_path, b.image_id, b.label_id, b.pair_id) == ("/f/12.jpg", "12", 2, "record 1")


@pytest.mark.parametrize(
    "edit, field, where, expected",
    [
        (lambda r: r[0].pop("sentence2"), "sentence2", "record 0 (pairID p0)", "missing field"),
        (lambda r: r[1].update(gold_label="-"), "gold_label", "record 1",
         "must be one of entailment, neutral, contradiction"),
        (lambda r: r[1].update(Flickr30K_ID=[1]), "Flickr30K_ID", "record 1",
         "must be a string or an integer"),
    ],
)
def test_snli_ve_broken(tmp_path, edit, field, where, expected):
    rows = _snli_rows()
    edit(rows)
    f = _write_lines(tmp_path / "snli_ve_dev.jsonl", rows)
    _assert_format_error(lambda: read_snli_ve(f, "/f"), f, field, where, expected)


# ---------------------------------------------------------------- malformed JSON, any reader


@pytest.mark.parametrize(
    "read, name, text, match",
    [
        (read_vqa, "v2_OpenEnded_mscoco_val2014_questions.json",
         '{"questions": [\n {"image_id": 1, "question": "x"\n "question_id": 2}]}',
         r"questions\.json: line 3, column 2: malformed"),
        (read_nlvr2, "dev.json",
         '{"identifier": "dev-0-0-0", "sentence": "a", "label": "True"}\n{"identifier":}\n',
         r"dev\.json: line 2, column 15: malformed JSON"),
        (read_snli_ve, "snli_ve_test.jsonl",
         '{"Flickr30K_ID": "1", "sentence2": "x", "gold_label": "neutral",}\n',
         r"snli_ve_test\.jsonl: line 1, column \d+: malf"),
    ],
    ids=["vqa", "nlvr2", "snli_ve"],
)
def test_malformed_json_names_file_line_and_column(tmp_path, read, name, text, match):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(DataFormatError, match=match):
        read(f, "/img")
