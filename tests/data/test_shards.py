"""Tar shards: written from a manifest, read back split over ranks and workers, bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from torch.utils.data import DataLoader

from vlparse.data.manifest import load_manifest, write_manifest
from vlparse.data.pretrain import read_pretrain_records
from vlparse.data.shards import ShardDataset, ShardError, load_index, write_shards
from vlparse.data.shards import writer as writer_module
from vlparse.errors import BadDataError
from vlparse.processing.images import load_image

SETS, SPLITS, MAXCOUNT = ["coco", "vg"], ["train", "restval"], 16


def pixels(img: Image.Image) -> str:
    """The transform of these tests: a digest of the decoded pixels (picklable)."""
    return hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest()


@pytest.fixture(scope="module")
def shards(scene_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "coco_vg"
    write_shards(scene_world, out, sets=SETS, splits=SPLITS, maxcount=MAXCOUNT, progress=False)
    return out


@pytest.fixture(scope="module")
def expected(scene_world) -> Counter:
    """What the manifest path reads: (source, image_id, captions, pixels) per image."""
    records = read_pretrain_records(load_manifest(scene_world), SETS, SPLITS)
    return Counter((r.source, r.image_id, tuple(r.captions), pixels(load_image(r.image_path)))
                   for r in records)


def _entry(item: dict) -> tuple:
    return item["source"], item["image_id"], tuple(item["captions"]), item["image"]


def _epoch(source, rank=0, world=1, workers=0, **kw) -> list[dict]:
    ds = ShardDataset(source, rank=rank, world_size=world, transform=pixels,
                      shuffle_buffer=kw.pop("shuffle_buffer", 20), **kw)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=list)
    return [item for batch in loader for item in batch]


def _copy(shards: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shards, tmp_path / "copy"))


def test_index_describes_the_shards(shards, expected):
    index = load_index(shards)
    n = sum(expected.values())
    assert index["complete"] and index["total"] == n and index["num_bad"] == 0
    assert index["arguments"]["sets"] == SETS and index["arguments"]["maxcount"] == MAXCOUNT
    assert [s["count"] for s in index["shards"]] == [MAXCOUNT] * (n // MAXCOUNT) + [n % MAXCOUNT]
    assert sorted(os.listdir(shards)) == sorted([s["name"] for s in index["shards"]]
                                                + ["index.json"])
    with tarfile.open(shards / "shard-000000.tar") as t:
        names = t.getnames()
        meta = json.loads(t.extractfile("000000000.json").read())
    assert names[:2] == ["000000000.jpg", "000000000.json"] and len(names) == 2 * MAXCOUNT
    assert meta["record"] == 0 and not os.path.isabs(meta["path"])


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [1, 2])
def test_epoch_sees_the_manifest_images(shards, expected, world, workers):
    n = sum(expected.values())
    q = -(-n // world)  # every rank yields ceil(N / R): the first R*Q - N repeat
    per_rank = [_epoch(shards, r, world, workers) for r in range(world)]
    assert [len(items) for items in per_rank] == [q] * world
    items = [it for rank_items in per_rank for it in rank_items]
    assert sorted(it["index"] for it in items) == list(range(world * q))
    got = Counter(_entry(it) for it in items)
    assert not expected - got  # every image of the manifest at least once
    extra = got - expected
    assert sum(extra.values()) == world * q - n
    by_index = {it["index"]: it for it in items}
    for i in range(n, world * q):  # the repeats are the epoch's first samples
        assert by_index[i]["key"] == by_index[i - n]["key"]
    assert all(it["skipped"] == [] and it["epoch"] == 0 for it in items)


def test_trim_leaves_out_the_last_samples(shards, expected):
    n, world = sum(expected.values()), 4
    items = [it for r in range(world) for it in _epoch(shards, r, world, balance="trim")]
    q = n // world
    assert len(items) == world * q and sorted(it["index"] for it in items) == list(range(q * 4))
    got = Counter(_entry(it) for it in items)
    assert not got - expected and sum((expected - got).values()) == n - world * q


def test_order_is_seeded_by_seed_and_epoch(shards):
    keys = lambda **kw: [it["key"] for it in _epoch(shards, **kw)]
    first = keys(seed=1)
    assert first == keys(seed=1) and first != keys(seed=2)
    assert keys(shuffle=False) == sorted(first)  # unshuffled: record order
    ds = ShardDataset(shards, seed=1, transform=pixels, shuffle_buffer=20)
    ds.set_epoch(1)
    assert sorted(it["key"] for it in ds) == sorted(first)
    assert [it["key"] for it in ds] != first


def test_brace_pattern_selects_shards(shards):
    items = _epoch(f"{shards}/shard-{{000001..000002}}.tar", shuffle=False)
    assert [it["key"] for it in items] == [f"{i:09d}" for i in range(16, 48)]
    with pytest.raises(ShardError, match="shard-000099.tar"):
        ShardDataset(f"{shards}/shard-{{000098..000099}}.tar")


def test_rerun_writes_nothing_and_other_arguments_are_refused(scene_world, shards):
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in shards.iterdir()}
    index = write_shards(scene_world, shards, sets=SETS, splits=SPLITS, maxcount=MAXCOUNT,
                         progress=False)
    assert index == load_index(shards)
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in shards.iterdir()} == before
    with pytest.raises(ShardError, match="maxcount: 16 there, 8 now"):
        write_shards(scene_world, shards, sets=SETS, splits=SPLITS, maxcount=8, progress=False)
    with pytest.raises(ShardError, match="sets"):
        write_shards(scene_world, shards, sets=["coco"], splits=SPLITS, maxcount=MAXCOUNT,
                     progress=False)


def test_interrupted_writer_resumes(scene_world, shards, tmp_path, monkeypatch):
    calls = {"n": 0}

    def stop_in_third_shard(path):
        calls["n"] += 1
        if calls["n"] == 2 * MAXCOUNT + 5:
            raise KeyboardInterrupt
        return load_image(path)

    out = tmp_path / "part"
    monkeypatch.setattr(writer_module, "load_image", stop_in_third_shard)
    with pytest.raises(KeyboardInterrupt):
        write_shards(scene_world, out, sets=SETS, splits=SPLITS, maxcount=MAXCOUNT,
                     progress=False)
    monkeypatch.undo()
    index = load_index(out)
    assert not index["complete"] and [s["name"] for s in index["shards"]] == [
        "shard-000000.tar", "shard-000001.tar"]
    assert sorted(p.name for p in out.iterdir()) == [  # no partial file left
        "index.json", "shard-000000.tar", "shard-000001.tar"]
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    final = write_shards(scene_world, out, sets=SETS, splits=SPLITS, maxcount=MAXCOUNT,
                         progress=False)
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # finished shards kept
    assert final == load_index(shards) | {"command": final["command"]}
    for s in final["shards"]:  # byte for byte what an uninterrupted run wrote
        assert (out / s["name"]).read_bytes() == (shards / s["name"]).read_bytes()


def _mini_manifest(root: Path) -> Path:
    """Six images: jpg and png, one missing, one not an image, one cut short."""
    images = root / "images"
    images.mkdir(parents=True)
    entries = []
    for i in range(6):
        name = f"{i}.png" if i % 2 else f"{i}.jpg"
        if i != 3:
            Image.new("RGB", (8 + i, 6), (40 * i, 20, 200)).save(images / name)
        entries.append({"filename": name, "imgid": i, "split": "train",
                        "sentences": [{"raw": f"picture {i}"}, {"raw": f"image {i}"}]})
    (images / "4.jpg").write_bytes(b"not an image at all")
    data = (images / "2.jpg").read_bytes()
    (images / "2.jpg").write_bytes(data[: len(data) // 2])
    (root / "k.json").write_text(json.dumps({"dataset": "mini", "images": entries}))
    return write_manifest(root / "manifest.json",
                          {"mini": {"train": {"karpathy": "k.json", "image_root": "images"}}})


def test_writer_skips_and_names_bad_images(tmp_path, caplog):
    manifest = _mini_manifest(tmp_path / "mini")
    with caplog.at_level("WARNING"):
        index = write_shards(manifest, tmp_path / "out", sets=["mini"], splits=["train"],
                             maxcount=4, progress=False)
    bad = {b["path"]: b["reason"] for s in index["shards"] for b in s["bad"]}
    assert sorted(bad) == [os.path.join("images", f) for f in ("2.jpg", "3.png", "4.jpg")]
    assert "file not found" in bad[os.path.join("images", "3.png")]
    assert "not a recognised image format" in bad[os.path.join("images", "4.jpg")]
    assert "truncated" in bad[os.path.join("images", "2.jpg")]
    assert index["num_bad"] == 3 and [s["count"] for s in index["shards"]] == [2, 1]
    assert all(os.path.join("images", f) in caplog.text for f in ("2.jpg", "3.png", "4.jpg"))
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as t:
        assert t.getnames() == ["000000000.jpg", "000000000.json", "000000001.json",
                                "000000001.png"]  # extensions kept, members in sorted order
    items = _epoch(tmp_path / "out", shuffle=False)
    root = tmp_path / "mini" / "images"
    assert [it["image"] for it in items] == [pixels(load_image(root / f))
                                             for f in ("0.jpg", "1.png", "5.png")]
    assert items[2]["captions"] == ["picture 5", "image 5"] and items[2]["image_id"] == 5


def _rewrite_member(path: Path, member: str, data: bytes) -> None:
    with tarfile.open(path) as t:
        files = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(path, "w") as t:
        for m, content in files:
            content = data if m.name == member else content
            m.size = len(content)
            t.addfile(m, io.BytesIO(content))


def test_corrupt_image_and_bad_json_in_a_shard_are_skipped_and_named(shards, expected, tmp_path):
    copy = _copy(shards, tmp_path)
    _rewrite_member(copy / "shard-000001.tar", "000000020.jpg", b"garbage")
    _rewrite_member(copy / "shard-000004.tar", "000000070.json", b"{oops")
    items = _epoch(copy, shuffle=False, max_bad_fraction=None)
    assert len(items) == sum(expected.values())
    skipped = sorted((it["index"], it["key"], s) for it in items for s in it["skipped"])
    assert len(skipped) == 2
    (index, key, (name, reason)), (index2, key2, (name2, reason2)) = skipped
    assert name == "shard-000001.tar/000000020" and "not a recognised image format" in reason
    assert index == 20 and key == "000000021"  # replaced by the next good sample
    assert name2 == "shard-000004.tar/000000070" and reason2.startswith("bad JSON")
    assert index2 == 70 and key2 == "000000071"
    assert not {"000000020", "000000070"} & {it["key"] for it in items}
    with pytest.raises(BadDataError, match="shard-000001.tar/000000020"):
        _epoch(copy, shuffle=False, max_bad_fraction=0.001, min_bad_check=10)


def test_truncated_tar_member_is_skipped_and_named(shards, expected, tmp_path):
    copy = _copy(shards, tmp_path)
    path = copy / "shard-000002.tar"
    with tarfile.open(path) as t:
        cut = t.getmember("000000037.jpg")  # the 6th sample of the shard (records 32..47)
    os.truncate(path, cut.offset_data + cut.size // 2)
    items = _epoch(copy, workers=2, max_bad_fraction=None)
    assert len(items) == sum(expected.values())
    names = sorted(name for it in items for name, _ in it["skipped"])
    assert names == sorted(f"shard-000002.tar#{i}" for i in range(5, MAXCOUNT))
    reasons = {reason for it in items for _, reason in it["skipped"]}
    assert reasons == {"shard unreadable (ReadError: unexpected end of data)"}
    keys = {it["key"] for it in items}
    assert keys == {f"{i:09d}" for i in range(sum(expected.values()))} - {
        f"{i:09d}" for i in range(37, 48)}


def test_missing_shard_fails_with_its_name(shards, tmp_path):
    copy = _copy(shards, tmp_path)
    ds = ShardDataset(copy, transform=pixels)
    (copy / "shard-000003.tar").unlink()
    with pytest.raises(ShardError, match="shard missing: .*shard-000003.tar"):
        list(ds)
    with pytest.raises(ShardError, match="shard-000003.tar"):
        ShardDataset(copy)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_epoch(shards, workers):
    def loader(ds):
        return DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=list)

    make = lambda: ShardDataset(shards, rank=1, world_size=2, seed=5, transform=pixels,
                                shuffle_buffer=20)
    whole = Counter((it["index"], it["key"]) for b in loader(make()) for it in b)
    batches, first = 7, []
    for k, batch in enumerate(loader(make())):
        if k == batches:
            break
        first += [(it["index"], it["key"]) for it in batch]
    ds = make()
    consumed = ds.worker_progress(batches, 3, workers)
    assert sum(consumed) == len(first) == 21
    ds.resume(0, consumed)
    rest = [(it["index"], it["key"]) for b in loader(ds) for it in b]
    assert Counter(first) + Counter(rest) == whole  # exact
    fast = make()
    fast.resume(0, consumed, exact=False)
    rest = [(it["index"], it["key"]) for b in loader(fast) for it in b]
    assert len(rest) == len(fast) - len(first)
    assert sum((Counter(first) + Counter(rest) - whole).values()) <= 20 * max(workers, 1)
    fast.set_epoch(1)  # a resume applies to its epoch only
    assert sum(1 for b in loader(fast) for _ in b) == len(fast)


@pytest.mark.slow  # three fresh processes for the memory part
def test_data_path_benchmark_runs_small(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "data_path", Path(__file__).resolve().parents[2] / "benchmarks" / "data_path.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "data_path.json"
    bench.main(["--images", "12", "--world-image-size", "64", "--image-size", "32",
                "--workers", "1", "--repeats", "1", "--maxcount", "8", "--buffer", "10",
                "--captions", "500", "--workdir", str(tmp_path), "--out", str(out)])
    record = json.loads(out.read_text())
    saved = record["results"]
    rows = {r["path"]: r for r in saved["throughput"]}
    assert set(rows) == {"folder", "shards"} and rows["folder"]["workers"] == 1
    assert rows["folder"]["images"] == rows["shards"]["images"] > 0  # one epoch each
    mem = saved["memory"]
    assert mem["manifest_records"]["captions"] == 500 and mem["manifest_records"]["images"] == 100
    assert mem["shard_index"]["images"] == 100
    assert mem["shard_streaming_world"]["images"] == rows["shards"]["images"]
    assert record["topic"] == "data-path" and record["commands"][0].startswith(
        "python benchmarks/data_path.py --images 12")
    assert record["hardware"].startswith(f"{os.cpu_count()} CPU cores")
    jsonschema = pytest.importorskip("jsonschema")
    root = Path(__file__).resolve().parents[2]
    jsonschema.validate(record, json.loads((root / "reports" / "results.schema.json").read_text()))


def test_writer_rewrites_a_damaged_listed_shard(scene_world, shards, tmp_path):
    copy = _copy(shards, tmp_path)
    with open(copy / "shard-000002.tar", "r+b") as f:
        f.truncate(1000)
    kept = (copy / "shard-000001.tar").stat().st_mtime_ns
    write_shards(scene_world, copy, sets=SETS, splits=SPLITS, maxcount=MAXCOUNT, progress=False)
    assert (copy / "shard-000002.tar").read_bytes() == (shards / "shard-000002.tar").read_bytes()
    assert (copy / "shard-000001.tar").stat().st_mtime_ns == kept


def test_data_shard_command_writes_and_records_itself(scene_world, shards, tmp_path, capsys):
    from vlparse.cli import main

    out = tmp_path / "cli"
    argv = ["data", "shard", "--data", str(scene_world), "--out", str(out), "--maxcount", "16",
            "--sets", "coco,vg", "--splits", "train,restval"]
    assert main(argv) == 0
    index = load_index(out)
    assert index["command"].startswith("vlparse data shard --data ") and "--maxcount 16" in (
        index["command"])
    assert index["shards"] == load_index(shards)["shards"]  # what write_shards wrote
    assert f"{out}: 105 images in 7 shard(s); 0 bad image(s)" in capsys.readouterr().out
    assert main(["data", "shard", "--data", str(scene_world), "--out", str(out),
                 "--maxcount", "8"]) == 2
    assert "maxcount: 16 there, 8 now" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "shard", "--data", str(scene_world), "--out", str(out), "--sets", ","])
