"""Fuzzing the readers of the official JSON formats with a few hundred mutated files.

Guards against a malformed annotation file escaping as a raw Python error (``TypeError:
unhashable type``, ``AttributeError``, ``KeyError`` ...) with no file named, instead of one
:class:`~vlparse.errors.DataFormatError` that says which file is wrong: before this test, a
Karpathy ``split`` or a Visual Genome id that was a list or an object crashed the readers with a
``TypeError`` naming nothing.

Each valid file of a small scene world is cut to a few records, then mutated (seeded, so every
run tries the same files): a field deleted, renamed or given a value of another type, a record
replaced, the text truncated or a byte changed. A reader must then either read the file or fail
with a ``DataFormatError`` naming one of its input files.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vlparse.data.formats import read_karpathy, read_nlvr2, read_snli_ve, read_vg, read_vqa
from vlparse.data.manifest import load_manifest
from vlparse.errors import DataFormatError

MUTATIONS_PER_FILE = 60
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 7, 2.5, "", "x", "True", [], [1, "a"], {},
                         {"a": {"b": []}}, [[[]]], 10**30]


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every container entry of a JSON value (dict keys and list indices)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*path, k))
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*path, i))
            out += _nodes(v, (*path, i))
    return out


def _parent(value: Any, path: tuple) -> Any:
    for key in path[:-1]:
        value = value[key]
    return value


def _mutate_value(data: Any, rng: random.Random) -> Any:
    """A structural change at a random place of a parsed JSON value: first a field name (or
    "a list element") at random, then one of its places, so that rare fields are hit as often
    as the many words of a caption."""
    data = copy.deepcopy(data)
    groups: dict[str, list[tuple]] = {}
    for path in _nodes(data):
        groups.setdefault(str(path[-1]) if isinstance(path[-1], str) else "[]", []).append(path)
    if not groups:
        return rng.choice(ODD_VALUES)
    path = rng.choice(groups[rng.choice(sorted(groups))])
    parent, key = _parent(data, path), path[-1]
    kind = rng.randrange(4)
    if kind == 0:  # delete
        del parent[key]
    elif kind == 1 and isinstance(parent, dict):  # rename
        parent[f"{key}_renamed"] = parent.pop(key)
    elif kind == 2 and isinstance(parent, list):  # a record of another shape
        parent[key] = rng.choice(ODD_VALUES)
    else:  # a value of another type
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


def _mutate_text(text: str, rng: random.Random) -> bytes:
    """A byte-level change: truncation, a changed byte, an invalid UTF-8 sequence."""
    raw = text.encode("utf-8")
    kind = rng.randrange(3)
    at = rng.randrange(max(1, len(raw)))
    if kind == 0:
        return raw[:at]
    if kind == 1:
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1:]
    return raw[:at] + b"\xff\xfe" + raw[at:]


def _mutants(value: Any, jsonl: bool, rng: random.Random) -> list[bytes]:
    """``MUTATIONS_PER_FILE`` mutated versions of a file's content."""
    out = []
    for _ in range(MUTATIONS_PER_FILE):
        if rng.random() < 0.75:
            changed = _mutate_value(value, rng)
            if jsonl and isinstance(changed, list):
                out.append("\n".join(json.dumps(v) for v in changed).encode("utf-8"))
            else:
                out.append(json.dumps(changed).encode("utf-8"))
        else:
            text = "\n".join(json.dumps(v) for v in value) if jsonl else json.dumps(value)
            out.append(_mutate_text(text, rng))
    return out


def _cut(value: Any, keep: int = 3) -> Any:
    """The file cut to its first records (the lists of the top level or of its main key)."""
    if isinstance(value, list):
        return value[:keep]
    return {k: (v[:keep] if isinstance(v, list) else v) for k, v in value.items()}


def _read_lines(path: str) -> list[Any]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _cases(manifest: dict) -> list[tuple[str, dict[str, str], bool, Callable[..., Any]]]:
    """``(name, {role: valid file}, jsonl, read(files))`` for every reader."""
    vqa, vg = manifest["vqa"]["train"], manifest["vg"]["train"]
    coco = manifest["coco"]["train"]
    return [
        ("karpathy", {"file": coco["karpathy"]}, False,
         lambda f: read_karpathy(f["file"], coco["image_root"], ["train", "restval", "val"])),
        ("vg_regions", {"regions": vg["region_descriptions"], "meta": vg["image_data"]}, False,
         lambda f: read_vg(f["regions"], f["meta"], vg["image_root"])),
        ("vqa", {"questions": vqa["questions"], "annotations": vqa["annotations"]}, False,
         lambda f: read_vqa(f["questions"], vqa["image_root"], f["annotations"])),
        ("nlvr2", {"file": manifest["nlvr2"]["train"]["annotations"]}, True,
         lambda f: read_nlvr2(f["file"], "images")),
        ("snli_ve", {"file": manifest["snli_ve"]["train"]["annotations"]}, True,
         lambda f: read_snli_ve(f["file"], "images")),
    ]


def _consistent(name: str, valid: dict[str, Any]) -> dict[str, Any]:
    """The cut files, made to agree with each other (VQA annotations of the kept questions,
    VG metadata of the kept images)."""
    if name == "vqa":
        kept = {q["question_id"] for q in valid["questions"]["questions"]}
        anns = [a for a in valid["annotations"]["annotations"] if a["question_id"] in kept]
        valid["annotations"] = {**valid["annotations"], "annotations": anns}
    if name == "vg_regions":
        kept = {r["id"] for r in valid["regions"]}
        valid["meta"] = [m for m in json.loads(Path(FILES["meta"]).read_text())
                         if m["image_id"] in kept]
    return valid


FILES: dict[str, str] = {}


def test_readers_fail_only_with_a_data_format_error_naming_the_file(scene_world, tmp_path):
    manifest = load_manifest(scene_world)
    rng = random.Random(2026)
    tried = crashes = 0
    problems: list[str] = []
    for name, files, jsonl, read in _cases(manifest):
        FILES.update(files)
        valid = {role: _cut(_read_lines(p) if jsonl else json.loads(Path(p).read_text()))
                 for role, p in files.items()}
        valid = _consistent(name, valid)
        paths = {role: tmp_path / f"{name}_{role}.json" for role in files}
        for role, path in paths.items():
            text = ("\n".join(json.dumps(v) for v in valid[role]) if jsonl
                    else json.dumps(valid[role]))
            path.write_text(text)
        assert read({r: str(p) for r, p in paths.items()}), f"{name}: the cut files read nothing"
        for role, path in paths.items():
            for content in _mutants(valid[role], jsonl, rng):
                path.write_bytes(content)
                tried += 1
                try:
                    read({r: str(p) for r, p in paths.items()})
                except DataFormatError as e:
                    if not any(str(p) in str(e) for p in paths.values()):
                        problems.append(f"{name}/{role}: names no file: {e}")
                except Exception as e:  # noqa: BLE001 - any other error is the finding
                    crashes += 1
                    problems.append(f"{name}/{role}: {type(e).__name__}: {e} <- "
                                    f"{content[:160]!r}")
            path.write_text("\n".join(json.dumps(v) for v in valid[role]) if jsonl
                            else json.dumps(valid[role]))
    assert tried >= 300
    assert not problems, f"{crashes} crashes of {tried} files:\n" + "\n".join(problems[:15])


def test_a_missing_file_is_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "absent.json"
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_karpathy(missing, tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_nlvr2(missing, tmp_path)
