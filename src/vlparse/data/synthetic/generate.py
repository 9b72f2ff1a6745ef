"""``generate``: draw the scene world and write every official format plus ``manifest.json``.

Scene ``i`` is a function of ``(seed, i)`` only (``np.random.default_rng([seed, i, stream])``),
so the output is byte-identical whatever ``workers`` is. Each scene's JPEG is encoded once and
hard-linked (copied where links fail) under its other names; its PNG (for NLVR2) likewise.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..manifest import write_manifest
from . import writers as W
from .language import captions, hypotheses, referring_expressions, regions
from .nlvr import pair_statement
from .questions import annotator_answers, questions
from .render import encode_png, render_scene
from .scenes import Scene, sample_scene, shape_polygon
from .truth import SCENES_FILE, scene_to_json

__all__ = ["generate", "split_of", "MIN_IMAGES"]

MIN_IMAGES = 10
_NLVR_SPLITS = {"train": "train", "val": "dev", "test": "test1"}


def split_of(num_images: int, seed: int) -> list[str]:
    """Karpathy split of every scene: ~5% val, ~5% test, ~5% restval (at least 2 each), rest
    train, assigned by a seeded permutation."""
    if num_images < MIN_IMAGES:
        raise ValueError(f"num_images={num_images} is too small; the scene world needs at least "
                         f"{MIN_IMAGES} images to fill the train/restval/val/test splits")
    k = max(2, round(0.05 * num_images))
    perm = np.random.default_rng([seed, 0x5EED]).permutation(num_images)
    out = ["train"] * num_images
    for pos, idx in enumerate(perm[: 3 * k]):
        out[int(idx)] = ("val", "test", "restval")[pos // k]
    return out


def _nlvr_plan(splits: list[str]) -> tuple[dict[int, list[str]], dict[str, list[dict]]]:
    """PNG paths per scene and the pairs per NLVR2 split (``img0`` = a scene, ``img1`` = the
    next scene of the same split, cyclically)."""
    paths: dict[int, list[str]] = {}
    pairs: dict[str, list[dict]] = {}
    for kar, name in _NLVR_SPLITS.items():
        order = [i for i, s in enumerate(splits) if s == kar]
        rows = []
        for p, left in enumerate(order):
            right = order[(p + 1) % len(order)]
            set_id, pair_id = p // 2, p % 2
            folder = f"train/{set_id % 100}" if name == "train" else name
            stem = f"nlvr2/images/{folder}/{name}-{set_id}-{pair_id}"
            rows.append({"left": left, "right": right, "set": set_id, "pair": pair_id,
                         "directory": str(set_id % 100)})
            paths.setdefault(left, []).append(stem + "-img0.png")
            paths.setdefault(right, []).append(stem + "-img1.png")
        pairs[name] = rows
    return paths, pairs


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # never write through a hard link into another name
    path.write_bytes(data)


def _object_record(o) -> dict:
    pts = shape_polygon(o.shape, o.cx, o.cy, o.r)
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return {"shape": o.shape, "color": o.color, "size": o.size, "bbox": list(o.bbox),
            "segmentation": pts.reshape(-1).tolist(), "area": area}


def _scene(task: tuple) -> dict:
    """Sample, render and write one scene; return its annotation record."""
    index, split, pngs, seed, size, out = task
    out = Path(out)
    scene: Scene = sample_scene(np.random.default_rng([seed, index, 0]), size)
    rng = np.random.default_rng([seed, index, 1])
    image = render_scene(scene)
    image_id, flickr_id = index + 1, 1_000_000_000 + index + 1
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    sub = W.coco_subtype(split)
    main = out / "images" / "coco" / sub / W.coco_name(sub, image_id)
    _write_bytes(main, buf.getvalue())
    _link(main, out / "images" / "flickr30k" / f"{flickr_id}.jpg")
    if split == "train":
        _link(main, out / "vg" / "images" / "VG_100K" / f"{image_id}.jpg")
    if split == "test":
        _link(main, out / "images" / "coco" / "test2015" / W.coco_name("test2015", image_id))
    if pngs:
        _write_bytes(out / pngs[0], encode_png(image))
        for p in pngs[1:]:
            _link(out / pngs[0], out / p)
    caps = captions(scene, rng)
    qs = [(q, a, f, annotator_answers(a, f, rng)) for q, a, f in questions(scene, rng)]
    return {"index": index, "image_id": image_id, "flickr_id": flickr_id, "split": split,
            "size": size, "scene": scene,
            "objects": [_object_record(o) for o in scene.objects], "captions": caps,
            "regions": regions(scene, rng), "questions": qs,
            "hypotheses": hypotheses(scene, rng, premise=caps[0][0]),
            "refexps": referring_expressions(scene, rng)}


def _chunk(tasks: list[tuple]) -> list[dict]:
    return [_scene(t) for t in tasks]


def _nlvr_rows(name: str, pairs: list[dict], records: list[dict], seed: int) -> list[dict]:
    rows = []
    code = list(_NLVR_SPLITS.values()).index(name)
    for p, pair in enumerate(pairs):
        rng = np.random.default_rng([seed, 0x4E4C, code, p])
        labels = [True, False] if rng.random() < 0.5 else [False, True]
        for s, label in enumerate(labels):
            text = pair_statement(records[pair["left"]]["scene"], records[pair["right"]]["scene"],
                                  rng, label)
            if text is None:
                continue
            row = {"identifier": f"{name}-{pair['set']}-{pair['pair']}-{s}", "sentence": text,
                   "label": str(label)}
            if name == "train":
                row["directory"] = pair["directory"]
            rows.append(row)
    return rows


def _manifest(seed: int, num_images: int, image_size: int) -> dict:
    kar, coco_img = "annotations/dataset_coco.json", "images/coco"
    fl, fl_img = "annotations/dataset_flickr30k.json", "images/flickr30k"

    def vqa(sub: str, answers: bool = True) -> dict:
        d = {"questions": f"vqa/v2_OpenEnded_mscoco_{sub}_questions.json",
             "image_root": f"images/coco/{sub}", "subtype": sub}
        if answers:
            d["annotations"] = f"vqa/v2_mscoco_{sub}_annotations.json"
        return d

    return {
        "name": "scene-world", "format_version": 1,
        "generator": {"seed": seed, "num_images": num_images, "image_size": image_size,
                      "scenes": SCENES_FILE},
        "coco": {s: {"karpathy": kar, "image_root": coco_img}
                 for s in ("train", "restval", "val", "test")},
        "flickr30k": {s: {"karpathy": fl, "image_root": fl_img} for s in ("train", "val", "test")},
        "vg": {"train": {"region_descriptions": "vg/region_descriptions.json",
                         "image_data": "vg/image_data.json", "image_root": "vg/images"}},
        "vqa": {"train": vqa("train2014"), "val": vqa("val2014"),
                "test": vqa("test2015", answers=False)},
        "nlvr2": {s: {"annotations": f"nlvr2/{s}.json", "image_root": "nlvr2/images"}
                  for s in ("train", "dev", "test1")},
        "snli_ve": {s: {"annotations": f"snli_ve/snli_ve_{s}.jsonl", "image_root": fl_img}
                    for s in ("train", "dev", "test")},
        "flickr_entities": {s: {"annotations": f"mdetr/final_flickr_separateGT_{s}.json",
                                "image_root": fl_img} for s in ("train", "val", "test")},
        "refcoco": {s: {"annotations": f"mdetr/final_refcoco_{s}.json",
                        "image_root": f"images/coco/{sub}"}
                    for s, sub in (("train", "train2014"), ("val", "val2014"),
                                   ("testA", "val2014"))},
        "coco_detection": {s: {"instances": f"coco/annotations/instances_{sub}.json",
                               "image_root": f"images/coco/{sub}"}
                           for s, sub in (("train", "train2014"), ("val", "val2014"))},
    }


def generate(out_dir: str | Path, num_images: int, seed: int = 0, image_size: int = 256,
             workers: int = 1, progress: bool = True) -> Path:
    """Draw ``num_images`` scenes and write every format under ``out_dir``.

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        num_images: number of scenes (at least 10).
        seed: the world's seed; the same seed gives byte-identical files.
        image_size: image side in pixels (at least 64).
        workers: processes drawing scenes; the output does not depend on it.
        progress: show a tqdm progress bar.

    Returns:
        The path of ``manifest.json`` (see ``docs/manifest.md`` and ``docs/scene_world.md``).
    """
    if image_size < 64:
        raise ValueError(f"image_size={image_size} is too small; use at least 64 pixels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = split_of(num_images, seed)
    png_paths, pairs = _nlvr_plan(splits)
    tasks = [(i, splits[i], png_paths.get(i, []), seed, image_size, str(out))
             for i in range(num_images)]
    chunks = [tasks[i:i + 32] for i in range(0, num_images, 32)]
    bar = tqdm(total=num_images, desc="scene world", unit="img", disable=not progress)
    records: list[dict] = []
    if workers > 1:
        with mp.get_context().Pool(workers) as pool:
            for part in pool.imap(_chunk, chunks):
                records += part
                bar.update(len(part))
    else:
        for c in chunks:
            records += _chunk(c)
            bar.update(len(c))
    bar.close()
    _write_annotations(out, records, pairs, seed)
    return write_manifest(out / "manifest.json", _manifest(seed, num_images, image_size))


def _write_annotations(out: Path, records: list[dict], pairs: dict, seed: int) -> None:
    by = {s: [r for r in records if r["split"] == s] for s in ("train", "restval", "val", "test")}
    W.write_json(out / "annotations" / "dataset_coco.json", W.karpathy(records, flickr=False))
    W.write_json(out / SCENES_FILE, {"scenes": [
        {"image_id": r["image_id"], "flickr_id": r["flickr_id"], "split": r["split"],
         "scene": scene_to_json(r["scene"])} for r in records]})
    W.write_json(out / "annotations" / "dataset_flickr30k.json", W.karpathy(records, flickr=True))
    regions_json, image_data = W.visual_genome(by["train"])
    W.write_json(out / "vg" / "region_descriptions.json", regions_json)
    W.write_json(out / "vg" / "image_data.json", image_data)
    vqa_sets = {"train2014": by["train"], "val2014": by["restval"] + by["val"],
                "test2015": by["test"]}
    for sub, recs in vqa_sets.items():
        qs, anns = W.vqa(sorted(recs, key=lambda r: r["index"]), sub, sub != "test2015")
        W.write_json(out / "vqa" / f"v2_OpenEnded_mscoco_{sub}_questions.json", qs)
        if anns is not None:
            W.write_json(out / "vqa" / f"v2_mscoco_{sub}_annotations.json", anns)
    for name, rows in pairs.items():
        W.write_jsonl(out / "nlvr2" / f"{name}.json", _nlvr_rows(name, rows, records, seed))
    flickr = {"train": by["train"] + by["restval"], "val": by["val"], "test": by["test"]}
    flickr = {k: sorted(v, key=lambda r: r["index"]) for k, v in flickr.items()}
    for s, ve in (("train", "train"), ("val", "dev"), ("test", "test")):
        W.write_jsonl(out / "snli_ve" / f"snli_ve_{ve}.jsonl", W.snli_ve(flickr[s]))
        W.write_json(out / "mdetr" / f"final_flickr_separateGT_{s}.json",
                     W.mdetr_flickr(flickr[s]))
    for s, kar in (("train", "train"), ("val", "val"), ("testA", "test")):
        W.write_json(out / "mdetr" / f"final_refcoco_{s}.json", W.mdetr_refcoco(by[kar]))
    W.write_json(out / "coco" / "annotations" / "instances_train2014.json",
                 W.coco_instances(by["train"], "train2014"))
    val = sorted(by["restval"] + by["val"] + by["test"], key=lambda r: r["index"])
    W.write_json(out / "coco" / "annotations" / "instances_val2014.json",
                 W.coco_instances(val, "val2014"))
