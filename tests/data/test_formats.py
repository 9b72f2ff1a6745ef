"""Readers of the Karpathy and Visual Genome formats, JSON errors, and manifest -> records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vlparse.data.formats import (
    DataFormatError,
    ImageCaptions,
    load_json,
    load_jsonl,
    read_karpathy,
    read_vg,
)
from vlparse.data.pretrain import read_pretrain_records


def _karpathy(dataset: str = "coco") -> dict:
    def entry(i, split, filepath=True, n=2):
        e = {
            "filename": f"img{i}.jpg",
            "imgid": i,
            "split": split,
            "sentids": list(range(n)),
            "sentences": [{"raw": f"caption {k} of image {i}.", "tokens": [], "imgid": i,
                           "sentid": k} for k in range(n)],
        }
        if filepath:
            e["filepath"] = "train2014"
            e["cocoid"] = 1000 + i
        return e

    return {"dataset": dataset, "images": [
        entry(0, "train"), entry(1, "restval", n=3), entry(2, "test"),
        entry(3, "train", filepath=False, n=1),
    ]}


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1))
    return path


def test_read_karpathy_valid(tmp_path):
    f = _write(tmp_path / "dataset_coco.json", _karpathy())
    recs = read_karpathy(f, tmp_path / "images", ["train", "restval"])
    assert [r.image_id for r in recs] == [1000, 1001, 3]
    assert recs[0] == ImageCaptions(
        image_path=str(tmp_path / "images" / "train2014" / "img0.jpg"),
        captions=["caption 0 of image 0.", "caption 1 of image 0."],
        image_id=1000,
        source="coco",
    )
    assert len(recs[1].captions) == 3
    # no filepath: image_root/filename; id from imgid (stem is not a number)
    assert recs[2].image_path == str(tmp_path / "images" / "img3.jpg")
    only_test = read_karpathy(f, tmp_path, "test", source="mine")
    assert [(r.image_id, r.source) for r in only_test] == [(1002, "mine")]


def test_read_karpathy_flickr_ids(tmp_path):
    data = {"dataset": "flickr30k", "images": [
        {"filename": "1000092795.jpg", "imgid": 0, "split": "test",
         "sentences": [{"raw": "Two young guys."}]}]}
    (rec,) = read_karpathy(_write(tmp_path / "f.json", data), tmp_path / "flickr", ["test"])
    assert rec.image_id == 1000092795 and rec.source == "flickr30k"
    assert rec.image_path == str(tmp_path / "flickr" / "1000092795.jpg")


@pytest.mark.parametrize(
    "drop, field, where",
    [("sentences", "sentences", "images[1] (cocoid 1001)"),
     ("filename", "filename", "images[1] (cocoid 1001)"),
     ("raw", "raw", "images[1] (cocoid 1001).sentences[2]")],
)
def test_read_karpathy_missing_field(tmp_path, drop, field, where):
    data = _karpathy()
    if drop == "raw":
        del data["images"][1]["sentences"][2]["raw"]
    else:
        del data["images"][1][drop]
    f = _write(tmp_path / "dataset_coco.json", data)
    with pytest.raises(DataFormatError) as info:
        read_karpathy(f, tmp_path, ["train", "restval"])
    msg = str(info.value)
    assert str(f) in msg and where in msg and f"missing field '{field}'" in msg


def test_read_karpathy_unknown_split(tmp_path):
    f = _write(tmp_path / "d.json", _karpathy())
    with pytest.raises(ValueError, match="unknown split"):
        read_karpathy(f, tmp_path, ["training"])


def test_malformed_json_names_line_and_column(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"images": [\n  {"split": "train",\n   "filename": "a.jpg" "x": 1}\n]}\n')
    with pytest.raises(DataFormatError, match=r"bad\.json: line 3, column 24"):
        read_karpathy(f, tmp_path, "train")
    with pytest.raises(DataFormatError, match=r"line 3, column 24"):
        load_json(f)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: JSON file not found"):
        load_json(tmp_path / "nope.json")


def test_load_jsonl(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3,}\n')
    with pytest.raises(DataFormatError, match=r"x\.jsonl: line 4, column \d+"):
        load_jsonl(f)
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert load_jsonl(f) == [{"a": 1}, {"a": 2}]


def _vg(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "vg"
    (root / "VG_100K").mkdir(parents=True)
    (root / "VG_100K_2").mkdir()
    (root / "VG_100K" / "1.jpg").write_bytes(b"x")
    (root / "VG_100K_2" / "2.jpg").write_bytes(b"x")
    regions = [
        {"id": 1, "regions": [
            {"region_id": 10, "image_id": 1, "phrase": "a red ball", "x": 0, "y": 0,
             "width": 5, "height": 5},
            {"region_id": 11, "image_id": 1, "phrase": "A red  ball ", "x": 1, "y": 1,
             "width": 5, "height": 5},
            {"region_id": 12, "image_id": 1, "phrase": "grass", "x": 1, "y": 1,
             "width": 5, "height": 5}]},
        {"id": 2, "regions": [{"region_id": 20, "image_id": 2, "phrase": "blue sky above"}]},
        {"id": 3, "regions": [{"region_id": 30, "image_id": 3, "phrase": "a missing image"}]},
        {"id": 4, "regions": [{"region_id": 40, "image_id": 4, "phrase": "not in image data"}]},
    ]
    meta = [{"image_id": i, "width": 8, "height": 8, "url": "", "coco_id": None,
             "flickr_id": None} for i in (1, 2, 3)]
    return _write(tmp_path / "region_descriptions.json", regions), _write(
        tmp_path / "image_data.json", meta), root


def test_read_vg_valid(tmp_path, caplog):
    rd, idata, root = _vg(tmp_path)
    with caplog.at_level(logging.WARNING):
        recs = read_vg(rd, idata, root)
    assert [r.image_id for r in recs] == [1, 2, 3]
    assert recs[0].captions == ["a red ball", "grass"]  # duplicate phrase kept once
    assert recs[0].image_path == str(root / "VG_100K" / "1.jpg")
    assert recs[1].image_path == str(root / "VG_100K_2" / "2.jpg")
    assert recs[2].image_path == str(root / "VG_100K" / "3.jpg")  # neither exists
    assert all(r.source == "vg" for r in recs)
    assert "not listed" in caplog.text
    recs2 = read_vg(rd, idata, root, min_phrase_words=3)
    assert [(r.image_id, r.captions) for r in recs2] == [
        (1, ["a red ball"]), (2, ["blue sky above"]), (3, ["a missing image"])]
    recs3 = read_vg(rd, idata, root, min_phrase_words=4)
    assert recs3 == []  # every image lost its phrases


def test_read_vg_missing_field(tmp_path):
    rd, idata, root = _vg(tmp_path)
    data = json.loads(rd.read_text())
    del data[1]["regions"][0]["phrase"]
    _write(rd, data)
    with pytest.raises(DataFormatError) as info:
        read_vg(rd, idata, root)
    msg = str(info.value)
    assert str(rd) in msg and "[1] (image 2).regions[0]" in msg and "'phrase'" in msg
    _write(idata, [{"width": 3}])
    with pytest.raises(DataFormatError, match=r"image_data\.json: \[0\]: missing field 'image_id'"):
        read_vg(rd, idata, root)


def test_read_vg_malformed(tmp_path):
    rd, idata, root = _vg(tmp_path)
    rd.write_text('[\n{"id": 1, "regions": [}\n]')
    with pytest.raises(DataFormatError, match=r"region_descriptions\.json: line 2, column 23"):
        read_vg(rd, idata, root)


def test_read_pretrain_records(tmp_path, caplog):
    kf = _write(tmp_path / "dataset_coco.json", _karpathy())
    rd, idata, root = _vg(tmp_path)
    coco = {"karpathy": str(kf), "image_root": str(tmp_path / "coco")}
    manifest = {
        "coco": {"train": coco, "restval": coco, "test": coco},
        "vg": {"train": {"region_descriptions": str(rd), "image_data": str(idata),
                         "image_root": str(root)}},
    }
    with caplog.at_level(logging.WARNING):
        recs = read_pretrain_records(manifest, ["coco", "vg", "cc3m"], ["train", "restval"])
    assert [(r.source, r.image_id) for r in recs] == [
        ("coco", 1000), ("coco", 1001), ("coco", 3), ("vg", 1), ("vg", 2), ("vg", 3)]
    assert "cc3m" in caplog.text and "restval" not in caplog.text
    with pytest.raises(ValueError, match=r"no pre-training images.*'coco': \['restval', 'test'"):
        read_pretrain_records(manifest, ["flickr"], ["train"])
