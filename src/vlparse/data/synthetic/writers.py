"""Writers of the official annotation formats (``docs/manifest.md``) from per-scene
records produced by :mod:`.generate`.

A record is a plain dict: ``index``, ``image_id``, ``flickr_id``, ``split`` (Karpathy), ``size``,
``objects`` (shape, color, size, bbox, segmentation, area), ``captions`` (text, spans),
``regions`` (phrase, box), ``questions`` (question, answer, family, answers), ``hypotheses``
(text, label) and ``refexps`` (object index, (text, spans)).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from .questions import QUESTION_FAMILIES
from .scenes import SHAPES

__all__ = [
    "coco_name",
    "coco_subtype",
    "raw_caption",
    "write_json",
    "write_jsonl",
    "karpathy",
    "visual_genome",
    "vqa",
    "snli_ve",
    "mdetr_flickr",
    "mdetr_refcoco",
    "coco_instances",
]


def coco_subtype(split: str) -> str:
    """COCO folder of a Karpathy split: train images live in train2014, the others in val2014."""
    return "train2014" if split == "train" else "val2014"


def coco_name(subtype: str, image_id: int) -> str:
    """``COCO_<subtype>_<12-digit id>.jpg``."""
    return f"COCO_{subtype}_{image_id:012d}.jpg"


def raw_caption(text: str) -> str:
    """The Karpathy ``raw`` form: first letter upper-case, full stop (offsets unchanged)."""
    return text[:1].upper() + text[1:] + "."


def write_json(path: Path, data) -> None:
    """Compact JSON (files are large; readers do not care about layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _r(v: float) -> float:
    return round(float(v), 2)


def karpathy(records: list[dict], flickr: bool) -> dict:
    """``dataset_coco.json`` (``flickr=False``) or ``dataset_flickr30k.json`` content."""
    images, sentid = [], 0
    for imgid, rec in enumerate(records):
        sents = []
        for text, _ in rec["captions"]:
            raw = raw_caption(text)
            sents.append({"raw": raw, "tokens": re.findall(r"[a-z0-9]+", raw.lower()),
                          "imgid": imgid, "sentid": sentid + len(sents)})
        entry: dict = {}
        if flickr:
            split = "train" if rec["split"] == "restval" else rec["split"]
            entry.update(filename=f"{rec['flickr_id']}.jpg", imgid=imgid, split=split)
        else:
            sub = coco_subtype(rec["split"])
            entry.update(filepath=sub, filename=coco_name(sub, rec["image_id"]), imgid=imgid,
                         cocoid=rec["image_id"], split=rec["split"])
        entry["sentids"] = [s["sentid"] for s in sents]
        entry["sentences"] = sents
        sentid += len(sents)
        images.append(entry)
    return {"dataset": "flickr30k" if flickr else "coco", "images": images}


def visual_genome(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(region_descriptions, image_data)`` over ``records``."""
    regions, data = [], []
    for rec in records:
        iid, regs = rec["image_id"], []
        for k, (phrase, (x, y, w, h)) in enumerate(rec["regions"]):
            regs.append({"region_id": iid * 100 + k, "image_id": iid, "phrase": phrase,
                         "x": int(x), "y": int(y), "width": int(round(w)),
                         "height": int(round(h))})
        regions.append({"id": iid, "regions": regs})
        data.append({"image_id": iid, "width": rec["size"], "height": rec["size"],
                     "url": f"synthetic://vg/{iid}.jpg", "coco_id": iid, "flickr_id": None})
    return regions, data


_DIGITS = {w: str(k) for k, w in enumerate(("zero", "one", "two", "three", "four", "five",
                                              "six"))}


def _normalize(answer: str) -> str:
    """Lower case, articles dropped, number words as digits (the VQA answer normalisation, reduced
    to what the scene world's annotators vary)."""
    words = [_DIGITS.get(w, w) for w in answer.lower().strip(" .").split()
             if w not in ("a", "an", "the")]
    return " ".join(words)


def vqa(records: list[dict], subtype: str, with_answers: bool) -> tuple[dict, dict | None]:
    """``(questions file, annotations file or None)`` for one VQA subtype."""
    qs, anns = [], []
    for rec in records:
        for k, (question, answer, family, answers) in enumerate(rec["questions"]):
            qid = rec["image_id"] * 1000 + k
            qs.append({"image_id": rec["image_id"], "question": question, "question_id": qid})
            if with_answers:
                counts = Counter(_normalize(a["answer"]) for a in answers)
                best = max(counts.items(), key=lambda kv: (kv[1], kv[0] == answer))[0]
                qtype, atype = QUESTION_FAMILIES[family]
                anns.append({"question_id": qid, "image_id": rec["image_id"],
                             "question_type": qtype, "answer_type": atype,
                             "multiple_choice_answer": best, "answers": answers})
    head = {"info": {"description": "vlparse synthetic scene world"}, "license": {},
            "data_type": "mscoco", "data_subtype": subtype}
    questions = {**head, "task_type": "Open-Ended", "questions": qs}
    return questions, ({**head, "annotations": anns} if with_answers else None)


def snli_ve(records: list[dict]) -> list[dict]:
    """SNLI-VE rows; the premise caption rotates over the image's captions."""
    rows = []
    for rec in records:
        fid = str(rec["flickr_id"])
        for k, (hyp, label) in enumerate(rec["hypotheses"]):
            c = (rec["index"] + k) % len(rec["captions"])
            rows.append({"Flickr30K_ID": fid, "captionID": f"{fid}.jpg#{c}",
                         "pairID": f"{fid}.jpg#{c}r{k}{label[0]}",
                         "sentence1": raw_caption(rec["captions"][c][0]), "sentence2": hyp,
                         "gold_label": label, "annotator_labels": [label]})
    return rows


def _negative(caption: str, spans: list[tuple[int, int]]) -> list[list[int]]:
    """Character spans of the words outside every phrase."""
    covered = [False] * len(caption)
    for s, e in spans:
        covered[s:e] = [True] * (e - s)
    return [[m.start(), m.end()] for m in re.finditer(r"[A-Za-z0-9]+", caption)
            if not any(covered[m.start():m.end()])]


def _box(obj: dict) -> tuple[list[float], float]:
    return [_r(v) for v in obj["bbox"]], _r(obj["bbox"][2] * obj["bbox"][3])


def mdetr_flickr(records: list[dict]) -> dict:
    """MDETR ``final_flickr_separateGT_*.json``: one image entry per (image, caption)."""
    images, anns = [], []
    for rec in records:
        for sid, (text, spans) in enumerate(rec["captions"]):
            caption, eid = raw_caption(text), len(images)
            images.append({"id": eid, "file_name": f"{rec['flickr_id']}.jpg",
                           "height": rec["size"], "width": rec["size"], "caption": caption,
                           "dataset_name": "flickr",
                           "tokens_positive_eval": [[[s, e]] for s, e, _ in spans],
                           "sentence_id": sid, "original_img_id": rec["flickr_id"],
                           "tokens_negative": _negative(caption, [(s, e) for s, e, _ in spans])})
            for pid, (s, e, objs) in enumerate(spans):
                for i in objs:
                    bbox, area = _box(rec["objects"][i])
                    anns.append({"id": len(anns), "image_id": eid, "bbox": bbox, "area": area,
                                 "iscrowd": 0, "category_id": 1, "tokens_positive": [[s, e]],
                                 "phrase_ids": pid})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "object", "supercategory": "object"}]}


def _categories() -> list[dict]:
    return [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]


def mdetr_refcoco(records: list[dict]) -> dict:
    """MDETR ``final_refcoco_*.json``: one image entry per referring expression."""
    images, anns = [], []
    for rec in records:
        sub = coco_subtype(rec["split"])
        for sid, (i, (text, spans)) in enumerate(rec["refexps"]):
            eid = len(images)
            target = [[s, e] for s, e, objs in spans if objs == [i]]
            images.append({"id": eid, "file_name": coco_name(sub, rec["image_id"]),
                           "height": rec["size"], "width": rec["size"], "caption": text,
                           "dataset_name": "refcoco", "tokens_positive_eval": [target],
                           "sentence_id": sid, "original_img_id": rec["image_id"],
                           "tokens_negative": _negative(text, [(s, e) for s, e, _ in spans])})
            obj = rec["objects"][i]
            bbox, area = _box(obj)
            anns.append({"id": len(anns), "image_id": eid, "bbox": bbox, "area": area,
                         "iscrowd": 0, "category_id": SHAPES.index(obj["shape"]) + 1,
                         "tokens_positive": target, "phrase_ids": 0})
    return {"images": images, "annotations": anns, "categories": _categories()}


def coco_instances(records: list[dict], subtype: str) -> dict:
    """COCO ``instances_<subtype>.json`` with polygon segmentations; categories are shapes."""
    images, anns = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "file_name": coco_name(subtype, rec["image_id"]),
                       "height": rec["size"], "width": rec["size"]})
        for obj in rec["objects"]:
            bbox, _ = _box(obj)
            anns.append({"id": len(anns) + 1, "image_id": rec["image_id"], "bbox": bbox,
                         "area": _r(obj["area"]), "iscrowd": 0,
                         "category_id": SHAPES.index(obj["shape"]) + 1,
                         "segmentation": [[_r(v) for v in obj["segmentation"]]]})
    return {"info": {"description": "vlparse synthetic scene world"}, "licenses": [],
            "images": images, "annotations": anns, "categories": _categories()}
