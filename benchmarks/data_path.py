"""Data-path benchmark: the pre-training loader alone, tar shards against the JPEG folder.

Throughput: decoded and transformed images per second (``image_transform`` of ``--image-size``,
batches of 64 stacked, no model) through a ``DataLoader`` at each of ``--workers``, for
* the folder path: the records of ``read_pretrain_records`` + ``load_image`` + the transform, in a
  shuffled order (what ``PretrainDataset`` does for its image), and
* the shard path: ``ShardDataset`` over the same records written by ``write_shards``.
Both read a scene world of ``--images`` scenes (COCO + VG records) whose files were read once
before timing, so the page cache is warm for both: this measures decoding and per-file overhead,
not the disk. Each value is measured ``--repeats`` times; the JSON keeps every run.

Memory: the resident set (``VmRSS``) and peak (``ru_maxrss``) of a fresh process that holds
* the records of a synthetic Karpathy file of ``--captions`` captions (5 per image, with tokens,
  as the real files have), read by ``read_pretrain_records``, against
* a ``ShardDataset`` over an index of as many images (placeholder shard files: constructing the
  reader opens none), and a process streaming the world's shards through its shuffle buffer.
Each is reported beside the same process's RSS after its imports (``held_mb``: the difference).

Usage (the machine should be otherwise idle):
  python benchmarks/data_path.py --out data_path.json
  python benchmarks/data_path.py --images 100 --captions 20000 --workers 1,2 --repeats 1 \
      --out data_path_smoke.json                                             # smoke test

``--out`` gets a ``results.json`` of ``reports/results.schema.json`` (command, commit,
hardware, date; the numbers under ``results``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import write_results  # noqa: E402

import vlparse  # noqa: E402
from vlparse.data.formats.records import ImageCaptions  # noqa: E402
from vlparse.data.manifest import load_manifest, write_manifest  # noqa: E402
from vlparse.data.pretrain import read_pretrain_records  # noqa: E402
from vlparse.data.shards import ShardDataset, write_shards  # noqa: E402
from vlparse.data.shards.index import FORMAT, FORMAT_VERSION, INDEX_NAME, shard_name  # noqa: E402
from vlparse.processing.images import load_image  # noqa: E402
from vlparse.processing.transforms import image_transform  # noqa: E402

SETS, SPLITS, BATCH = ["coco", "vg"], ["train", "restval"], 64


class FolderImages(Dataset):
    """The folder path: one record's image, loaded and transformed."""

    def __init__(self, records: list[ImageCaptions], size: int) -> None:
        self.records, self.transform = records, image_transform(size)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(load_image(self.records[i].image_path))


def stack_images(items: list[dict]) -> torch.Tensor:
    return torch.stack([it["image"] for it in items])


def _rate(loader: DataLoader) -> tuple[int, float]:
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch.shape[0]
    return n, time.perf_counter() - t0


def throughput(manifest: Path, shards: Path, args) -> list[dict]:
    records = read_pretrain_records(load_manifest(manifest), SETS, SPLITS)
    for path in [r.image_path for r in records] + list(shards.glob("*.tar")):
        Path(path).read_bytes()  # warm the page cache for both paths
    folder = FolderImages(records, args.image_size)
    stream = ShardDataset(shards, transform=image_transform(args.image_size),
                          shuffle_buffer=args.buffer, max_bad_fraction=None)
    rows = []
    for workers in args.workers:
        for repeat in range(args.repeats):
            loaders = {
                "folder": DataLoader(folder, BATCH, shuffle=True, num_workers=workers),
                "shards": DataLoader(stream, BATCH, num_workers=workers, collate_fn=stack_images),
            }
            for path, loader in loaders.items():
                stream.set_epoch(repeat)
                n, seconds = _rate(loader)
                rows.append({"path": path, "workers": workers, "repeat": repeat, "images": n,
                             "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 1)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def karpathy_file(path: Path, captions: int, per_image: int = 5) -> int:
    """A Karpathy-style file of ``captions`` captions (written entry by entry); its images."""
    rng = random.Random(0)
    words = ["red", "green", "blue", "small", "large", "circle", "square", "star", "left", "of",
             "above", "below", "a", "the", "and", "grainy", "background", "two", "three", "next"]
    images = captions // per_image
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"dataset": "coco", "images": [')
        for i in range(images):
            sents = []
            for j in range(per_image):
                tokens = [rng.choice(words) for _ in range(rng.randint(8, 14))]
                sents.append({"tokens": tokens, "raw": " ".join(tokens).capitalize() + ".",
                              "imgid": i, "sentid": i * per_image + j})
            entry = {"filepath": "train2014", "filename": f"COCO_train2014_{i:012d}.jpg",
                     "imgid": i, "cocoid": i, "split": "train",
                     "sentids": [s["sentid"] for s in sents], "sentences": sents}
            f.write(("," if i else "") + json.dumps(entry))
        f.write("]}")
    return images


def placeholder_shards(folder: Path, images: int, maxcount: int) -> None:
    """An index of ``images`` samples in shards of ``maxcount``, with empty shard files."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = [min(maxcount, images - s) for s in range(0, images, maxcount)]
    shards = [{"name": shard_name(k), "count": c} for k, c in enumerate(counts)]
    for s in shards:
        (folder / s["name"]).touch()
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": True,
             "shards": shards, "total": images}
    (folder / INDEX_NAME).write_text(json.dumps(index))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def measure_memory(kind: str, path: str, size: int, buffer: int) -> dict:
    """Run in a fresh process: RSS after the imports, then holding / streaming the data."""
    gc.collect()
    out: dict = {"rss_after_imports_mb": _rss_mb()}
    if kind == "manifest":
        held = read_pretrain_records(load_manifest(path), ["coco"], ["train"])
        out["images"], out["captions"] = len(held), sum(len(r.captions) for r in held)
    elif kind == "shards":
        held = ShardDataset(path)
        out["images"] = held.total
    else:  # stream the shards through the shuffle buffer
        held = ShardDataset(path, transform=image_transform(size), shuffle_buffer=buffer,
                            max_bad_fraction=None)
        out["images"] = sum(1 for _ in held)
    gc.collect()
    out["rss_mb"] = _rss_mb()
    out["held_mb"] = round(out["rss_mb"] - out["rss_after_imports_mb"], 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def memory(workdir: Path, world_shards: Path, args) -> dict:
    manifest_dir = workdir / "big"
    (manifest_dir / "annotations").mkdir(parents=True, exist_ok=True)
    images = karpathy_file(manifest_dir / "annotations" / "dataset_coco.json", args.captions)
    manifest = write_manifest(manifest_dir / "manifest.json", {"coco": {"train": {
        "karpathy": "annotations/dataset_coco.json", "image_root": "images"}}})
    placeholder_shards(workdir / "big_shards", images, args.maxcount)
    runs = {"manifest_records": ("manifest", manifest),
            "shard_index": ("shards", workdir / "big_shards"),
            "shard_streaming_world": ("stream", world_shards)}
    out = {"captions": args.captions, "images": images}
    src = str(Path(vlparse.__file__).parents[1])  # the children import this same vlparse
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    for name, (kind, path) in runs.items():
        cmd = [sys.executable, __file__, "--measure-memory", kind, str(path),
               "--image-size", str(args.image_size), "--buffer", str(args.buffer)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        out[name] = json.loads(done.stdout.splitlines()[-1])
        print(name, json.dumps(out[name]), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="scenes of the world (x~1.75 records)")
    ap.add_argument("--image-size", type=int, default=384, help="transform size (paper: 384)")
    ap.add_argument("--world-image-size", type=int, default=256, help="stored image size")
    ap.add_argument("--workers", default="1,2,4", help="DataLoader workers, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--buffer", type=int, default=1000, help="shuffle buffer (raw samples)")
    ap.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    ap.add_argument("--captions", type=int, default=1_000_000, help="captions, memory part")
    ap.add_argument("--workdir", default=None, help="default: a temporary folder, removed")
    ap.add_argument("--out", default="data_path.json")
    ap.add_argument("--measure-memory", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_memory:
        print(json.dumps(measure_memory(*args.measure_memory, args.image_size, args.buffer)))
        return {}
    args.workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        from vlparse.data.synthetic import generate

        work = Path(tmp)
        manifest = generate(work / "world", args.images, seed=0,
                            image_size=args.world_image_size, workers=1, progress=False)
        shards = work / "shards"
        write_shards(manifest, shards, SETS, SPLITS, maxcount=args.maxcount, progress=False)
        settings = {k: v for k, v in vars(args).items()
                    if k not in ("measure_memory", "workdir", "out")}
        result = {"settings": settings, "throughput": throughput(manifest, shards, args),
                  "memory": memory(work, shards, args)}
    record = write_results(
        args.out, script=__file__, topic="data-path", device="cpu", results=result,
        question="How many decoded and transformed images per second does the pre-training "
        "loader give from tar shards and from the image folder, and how much memory does a "
        "process need to hold a large manifest's records against the shard index?",
        argv=sys.argv[1:] if argv is None else argv)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
