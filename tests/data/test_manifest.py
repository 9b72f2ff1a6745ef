"""The data manifest: path resolution, error messages, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlparse.data.manifest import load_manifest, manifest_entry, write_manifest
from vlparse.errors import ManifestError


def test_round_trip_resolves_paths(tmp_path):
    data = {"name": "x", "format_version": 1,
            "vqa": {"train": {"questions": "vqa/q.json", "image_root": "images/coco/train2014",
                              "subtype": "train2014"}},
            "coco": {"test": {"karpathy": "/abs/dataset_coco.json", "image_root": "~/coco"}}}
    path = write_manifest(tmp_path / "sub" / "manifest.json", data)
    m = load_manifest(path)
    base = (tmp_path / "sub").resolve()
    assert m["vqa"]["train"]["questions"] == str(base / "vqa" / "q.json")
    assert m["vqa"]["train"]["image_root"] == str(base / "images/coco/train2014")
    assert m["vqa"]["train"]["subtype"] == "train2014"
    assert m["coco"]["test"]["karpathy"] == "/abs/dataset_coco.json"
    assert m["coco"]["test"]["image_root"] == str(Path("~/coco").expanduser())
    assert m["name"] == "x" and m["format_version"] == 1
    assert load_manifest(tmp_path / "sub") == m  # a folder means its manifest.json


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text('{\n  "vqa": {"train": }\n}')
    with pytest.raises(ManifestError, match=r"manifest\.json:2:\d+: malformed JSON"):
        load_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "missing.json")


def test_manifest_entry_lists_what_exists(tmp_path):
    m = load_manifest(write_manifest(tmp_path / "manifest.json", {
        "generator": {"seed": 0},
        "vqa": {"train": {"questions": "q.json"}, "val": {"questions": "v.json"}},
        "nlvr2": {"dev": {"annotations": "dev.json"}}}))
    assert manifest_entry(m, "vqa", "val")["questions"].endswith("v.json")
    with pytest.raises(ManifestError, match="available: nlvr2, vqa"):
        manifest_entry(m, "snli_ve", "train")
    with pytest.raises(ManifestError, match="available: train, val"):
        manifest_entry(m, "vqa", "test")
