"""Reader of MDETR-style grounding files (COCO json with captions and character spans).

One image entry per (image, caption); its annotations are the boxes the caption grounds::

    images:      {"id", "file_name", "height", "width", "caption", "dataset_name",
                  "tokens_positive_eval"?, "sentence_id"?, "original_img_id" | "original_id"?,
                  "tokens_negative"?, ...}
    annotations: {"id", "image_id", "bbox": [x, y, w, h], "area", "iscrowd", "category_id",
                  "tokens_positive": [[start, end], ...], "phrase_ids"?}

The same reader serves the files MDETR distributes:

- Flickr30K Entities, ``final_flickr_separateGT_{train,val,test}.json``: ``dataset_name``
  ``"flickr"``; ``tokens_positive_eval`` holds one ``[[start, end]]`` per phrase that has a box;
  ``height``/``width`` are strings of digits; ``original_img_id`` is the Flickr30K image number;
  a box shared by several phrases of the sentence carries all their spans.
- RefCOCO/+/g, ``finetune_{refcoco,refcoco+,refcocog}_{split}.json``: exactly one box per
  entry, whose ``tokens_positive`` is the root noun phrase of the expression; ``original_id`` is
  the COCO image id; no ``tokens_positive_eval``.
- the pre-training mixtures (``final_mixed_train*.json``, GQA): ``original_id`` strings,
  ``data_source``, no ``tokens_positive_eval``.

The image file is ``<image_root>/<file_name>``. Crowd boxes and boxes without area are left out
(as MDETR's loader does), counted in the log.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field

from vlparse.data.formats.cocojson import BBox, image_size, load_coco_json, read_bbox, read_spans
from vlparse.data.formats.jsonio import require
from vlparse.data.formats.vqa import require_typed
from vlparse.errors import DataFormatError

__all__ = ["GroundedBox", "GroundingRecord", "read_flickr_entities", "read_mdetr", "read_refexp"]

log = logging.getLogger(__name__)

Span = tuple[int, int]


@dataclass
class GroundedBox:
    """One box and the caption characters it grounds.

    Attributes:
        bbox: ``(x, y, w, h)`` in pixels of the original image.
        spans: the ``tokens_positive`` character spans ``[start, end)`` of the caption.
        annotation_id: the file's annotation id.
        category_id: the file's category (1 = "object" in the Flickr files).
        phrase_id: ``phrase_ids`` when the file has it.
    """

    bbox: BBox
    spans: list[Span]
    annotation_id: int
    category_id: int = 1
    phrase_id: int | None = None

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)``."""
        x, y, w, h = self.bbox
        return x, y, x + w, y + h


@dataclass
class GroundingRecord:
    """One (image, caption) entry of a grounding file.

    Attributes:
        image_path: ``<image_root>/<file_name>``.
        entry_id: the entry's ``id`` in the file (one per caption).
        image_id: the picture's id in its data set (``original_img_id`` or ``original_id``;
            ``entry_id`` when the file has neither); captions of one picture share it.
        caption: the text the spans index into.
        width, height: the image size in pixels.
        boxes: the grounded boxes (crowd and empty boxes left out).
        phrases: the phrases to evaluate, each a list of spans: ``tokens_positive_eval`` when
            the file has it, else the distinct ``tokens_positive`` of the boxes in box order
            (for a referring expression: its root noun phrase).
        dataset_name: e.g. ``"flickr"``, ``"refcoco"``, ``"mixed"`` (``None`` if absent).
        sentence_id: the caption's index among the picture's captions (Flickr), else ``None``.
        tokens_negative: spans of the caption that ground nothing (as given; may be absent).
    """

    image_path: str
    entry_id: int
    image_id: int | str
    caption: str
    width: int
    height: int
    boxes: list[GroundedBox]
    phrases: list[list[Span]]
    dataset_name: str | None = None
    sentence_id: int | None = None
    tokens_negative: list[Span] = field(default_factory=list)

    def phrase_boxes(self) -> list[list[int]]:
        """For each phrase, the indices of the boxes whose spans overlap one of its spans."""
        return [
            [b for b, box in enumerate(self.boxes)
             if any(s < pe and ps < e for s, e in box.spans for ps, pe in phrase)]
            for phrase in self.phrases
        ]


def _read_box(ann: dict, caption: str, path, where: str) -> GroundedBox:
    spans = read_spans(require(ann, "tokens_positive", path, where), caption, "tokens_positive",
                       path, where)
    category, phrase = ann.get("category_id"), ann.get("phrase_ids")
    return GroundedBox(
        bbox=read_bbox(ann, path, where),
        spans=spans,
        annotation_id=require_typed(ann, "id", int, path, where),
        category_id=category if isinstance(category, int) else 1,
        phrase_id=phrase if isinstance(phrase, int) else None,
    )


def _group_annotations(annotations: list, path) -> dict[int, list[tuple[int, dict]]]:
    by_image: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for i, ann in enumerate(annotations):
        image_id = require_typed(ann, "image_id", int, path, f"annotations[{i}]")
        by_image[image_id].append((i, ann))
    return by_image


def _default_phrases(boxes: list[GroundedBox]) -> list[list[Span]]:
    seen, phrases = set(), []
    for box in boxes:
        key = tuple(box.spans)
        if key and key not in seen:
            seen.add(key)
            phrases.append(list(box.spans))
    return phrases


def _read_entry(entry: dict, anns: list[tuple[int, dict]], root: str, path, where: str
                ) -> tuple[GroundingRecord, int]:
    entry_id = require_typed(entry, "id", int, path, where)
    caption = require_typed(entry, "caption", str, path, where)
    width, height = image_size(entry, path, where)
    boxes, dropped = [], 0
    for i, ann in anns:
        box = _read_box(ann, caption, path, f"annotations[{i}] (image_id {entry_id})")
        if ann.get("iscrowd", 0) or box.bbox[2] <= 0 or box.bbox[3] <= 0:
            dropped += 1
            continue
        boxes.append(box)
    phrases_raw = entry.get("tokens_positive_eval")
    if phrases_raw is None:
        phrases = _default_phrases(boxes)
    else:
        if not isinstance(phrases_raw, list):
            raise DataFormatError(f"{os.fspath(path)}: {where}: 'tokens_positive_eval' must be "
                                  "a list of span lists")
        phrases = [read_spans(p, caption, f"tokens_positive_eval[{k}]", path, where)
                   for k, p in enumerate(phrases_raw)]
    original = entry.get("original_img_id", entry.get("original_id"))
    sentence_id = entry.get("sentence_id")
    negative = entry.get("tokens_negative")
    record = GroundingRecord(
        image_path=os.path.join(root, require_typed(entry, "file_name", str, path, where)),
        entry_id=entry_id,
        image_id=original if isinstance(original, (int, str)) else entry_id,
        caption=caption,
        width=width,
        height=height,
        boxes=boxes,
        phrases=phrases,
        dataset_name=entry.get("dataset_name") if isinstance(entry.get("dataset_name"), str)
        else None,
        sentence_id=sentence_id if isinstance(sentence_id, int) else None,
        tokens_negative=read_spans(negative, caption, "tokens_negative", path, where)
        if negative is not None else [],
    )
    return record, dropped


def read_mdetr(annotations: str | os.PathLike, image_root: str | os.PathLike,
               required: tuple[str, ...] = ()) -> list[GroundingRecord]:
    """The entries of an MDETR-style grounding file, in file order.

    Args:
        annotations: the JSON file (e.g. ``final_flickr_separateGT_val.json``).
        image_root: the folder holding the ``file_name`` images.
        required: image-entry fields that must be present besides the always required ``id``,
            ``file_name``, ``width``, ``height`` and ``caption``.

    Raises:
        DataFormatError: malformed JSON, a missing field or one of the wrong type, a span
            outside its caption, an annotation of an unknown entry or a repeated entry id; the
            message names the file, the entry and the field.
    """
    images, anns, _ = load_coco_json(annotations)
    by_image = _group_annotations(anns, annotations)
    root = os.fspath(image_root)
    records, seen, dropped = [], set(), 0
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        entry_id = require_typed(entry, "id", int, annotations, where)
        if entry_id in seen:
            raise DataFormatError(f"{os.fspath(annotations)}: {where}: id {entry_id} repeats")
        seen.add(entry_id)
        for name in required:
            require(entry, name, annotations, f"{where} (id {entry_id})")
        record, n = _read_entry(entry, by_image.get(entry_id, []), root, annotations,
                                f"{where} (id {entry_id})")
        records.append(record)
        dropped += n
    unknown = sorted(set(by_image) - seen)
    if unknown:
        i = by_image[unknown[0]][0][0]
        raise DataFormatError(
            f"{os.fspath(annotations)}: annotations[{i}]: image_id {unknown[0]} names no entry "
            f"of 'images' ({len(unknown)} such id(s))"
        )
    if dropped:
        log.info("%s: left out %d crowd or empty box(es)", annotations, dropped)
    return records


def read_flickr_entities(annotations: str | os.PathLike, image_root: str | os.PathLike
                         ) -> list[GroundingRecord]:
    """Flickr30K Entities as MDETR distributes it (``final_flickr_separateGT_*.json``).

    Every entry must carry ``tokens_positive_eval`` and ``sentence_id`` (the evaluation ranks
    boxes per phrase of each sentence); the ground truth of phrase ``p`` is
    ``record.phrase_boxes()[p]`` (any-box protocol).

    Raises:
        DataFormatError: as :func:`read_mdetr`, or an entry without those fields.
    """
    return read_mdetr(annotations, image_root, required=("tokens_positive_eval", "sentence_id"))


def read_refexp(annotations: str | os.PathLike, image_root: str | os.PathLike
                ) -> list[GroundingRecord]:
    """RefCOCO/+/g as MDETR distributes them (``finetune_refcoco_val.json`` ...).

    Each entry is one referring expression with exactly one box (the referred object).

    Raises:
        DataFormatError: as :func:`read_mdetr`, or an entry without exactly one box.
    """
    records = read_mdetr(annotations, image_root)
    for i, rec in enumerate(records):
        if len(rec.boxes) != 1:
            raise DataFormatError(
                f"{os.fspath(annotations)}: images[{i}] (id {rec.entry_id}): a referring "
                f"expression needs exactly one box, found {len(rec.boxes)}"
            )
    return records
