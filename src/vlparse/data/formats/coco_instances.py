"""Reader of COCO instances files, and the category prompt of grounding-style detectors.

File (``instances_<subtype>.json``)::

    {"images": [{"id", "file_name", "height", "width", ...}],
     "annotations": [{"id", "image_id", "bbox": [x, y, w, h], "category_id", "area", "iscrowd",
                      "segmentation"}],
     "categories": [{"id", "name", "supercategory"}]}

A detector that scores boxes against text tokens detects the categories named in a prompt: the
category names (cleaned: parenthesised parts dropped, underscores as spaces) in ascending id order
joined by ``". "`` (``"person. bicycle. car"``), with each name's character span recorded, as
GLIP/FIBER build it (``separation_tokens=". "``, nothing after the last name).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from vlparse.data.formats.cocojson import BBox, image_size, load_coco_json, read_bbox
from vlparse.data.formats.mdetr import GroundedBox, GroundingRecord
from vlparse.data.formats.vqa import require_typed
from vlparse.errors import DataFormatError

__all__ = [
    "Category",
    "CategoryPrompt",
    "CocoInstances",
    "DetectionBox",
    "DetectionRecord",
    "category_prompt",
    "clean_category_name",
    "detection_as_grounding",
    "read_coco_instances",
]


@dataclass
class Category:
    """A COCO category: ``id`` and ``name`` as in the file."""

    id: int
    name: str


@dataclass
class DetectionBox:
    """One annotated object: ``bbox`` ``(x, y, w, h)``, ``category_id``, ``iscrowd``, ``area``."""

    bbox: BBox
    category_id: int
    annotation_id: int
    iscrowd: bool = False
    area: float = 0.0


@dataclass
class DetectionRecord:
    """One image of an instances file with all its boxes (crowd boxes included, flagged)."""

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: list[DetectionBox]


@dataclass
class CocoInstances:
    """A read instances file: its images in file order and its categories in id order."""

    records: list[DetectionRecord]
    categories: list[Category]


@dataclass
class CategoryPrompt:
    """A text prompt naming categories.

    Attributes:
        text: e.g. ``"circle. square. triangle"``.
        category_ids: the categories in prompt order.
        spans: ``{category id: (start, end)}``, the name's characters in ``text``.
    """

    text: str
    category_ids: list[int]
    spans: dict[int, tuple[int, int]]


def clean_category_name(name: str) -> str:
    """``"tv_(monitor)"`` -> ``"tv"``: parenthesised parts dropped, ``_`` as spaces, one space."""
    name = re.sub(r"\(.*?\)", "", name).replace("_", " ")
    return " ".join(name.split())


def category_prompt(categories: Sequence[Category], separator: str = ". ") -> CategoryPrompt:
    """The prompt naming ``categories`` in the given order, with each name's span.

    Raises:
        ValueError: no categories, or a name that is empty once cleaned.
    """
    if not categories:
        raise ValueError("category_prompt: no categories to name")
    text, spans = "", {}
    for k, cat in enumerate(categories):
        name = clean_category_name(cat.name)
        if not name:
            raise ValueError(f"category {cat.id}: name {cat.name!r} is empty once cleaned")
        if k:
            text += separator
        spans[cat.id] = (len(text), len(text) + len(name))
        text += name
    return CategoryPrompt(text=text, category_ids=[c.id for c in categories], spans=spans)


def _categories(raw: list, path) -> list[Category]:
    cats = []
    for i, c in enumerate(raw):
        where = f"categories[{i}]"
        cats.append(Category(id=require_typed(c, "id", int, path, where),
                             name=require_typed(c, "name", str, path, where)))
    ids = [c.id for c in cats]
    if len(set(ids)) != len(ids):
        raise DataFormatError(f"{os.fspath(path)}: categories: ids repeat ({sorted(ids)})")
    return sorted(cats, key=lambda c: c.id)


def read_coco_instances(instances: str | os.PathLike, image_root: str | os.PathLike
                        ) -> CocoInstances:
    """Images (in file order) with their boxes, and the categories, of an instances file.

    Raises:
        DataFormatError: malformed JSON, a missing or mistyped field, an annotation of an
            unknown image or category, or repeated ids; the message names file, entry, field.
    """
    images, anns, raw_cats = load_coco_json(instances)
    categories = _categories(raw_cats, instances)
    known_cats = {c.id for c in categories}
    by_image: dict[int, list[DetectionBox]] = defaultdict(list)
    for i, ann in enumerate(anns):
        where = f"annotations[{i}]"
        image_id = require_typed(ann, "image_id", int, instances, where)
        category = require_typed(ann, "category_id", int, instances, where)
        if category not in known_cats:
            raise DataFormatError(f"{os.fspath(instances)}: {where}: category_id {category} is "
                                  "not in 'categories'")
        bbox = read_bbox(ann, instances, where)
        area = ann.get("area", bbox[2] * bbox[3])
        by_image[image_id].append(DetectionBox(
            bbox=bbox, category_id=category,
            annotation_id=require_typed(ann, "id", int, instances, where),
            iscrowd=bool(ann.get("iscrowd", 0)),
            area=float(area) if isinstance(area, (int, float)) else bbox[2] * bbox[3]))
    root, records, seen = os.fspath(image_root), [], set()
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        image_id = require_typed(entry, "id", int, instances, where)
        if image_id in seen:
            raise DataFormatError(f"{os.fspath(instances)}: {where}: id {image_id} repeats")
        seen.add(image_id)
        width, height = image_size(entry, instances, f"{where} (id {image_id})")
        name = require_typed(entry, "file_name", str, instances, where)
        records.append(DetectionRecord(os.path.join(root, name), image_id, width, height,
                                       by_image.get(image_id, [])))
    unknown = sorted(set(by_image) - seen)
    if unknown:
        raise DataFormatError(f"{os.fspath(instances)}: annotations: image_id {unknown[0]} names "
                              f"no entry of 'images' ({len(unknown)} such id(s))")
    return CocoInstances(records=records, categories=categories)


def detection_as_grounding(record: DetectionRecord, prompt: CategoryPrompt) -> GroundingRecord:
    """A detection image as a grounding record: the prompt is the caption, each box grounds
    its category's name, and the phrases are the prompt's names in prompt order.

    Crowd boxes, empty boxes and boxes of categories the prompt does not name are left out.
    """
    boxes = [
        GroundedBox(bbox=b.bbox, spans=[prompt.spans[b.category_id]],
                    annotation_id=b.annotation_id, category_id=b.category_id)
        for b in record.boxes
        if not b.iscrowd and b.bbox[2] > 0 and b.bbox[3] > 0 and b.category_id in prompt.spans
    ]
    return GroundingRecord(
        image_path=record.image_path, entry_id=record.image_id, image_id=record.image_id,
        caption=prompt.text, width=record.width, height=record.height, boxes=boxes,
        phrases=[[prompt.spans[c]] for c in prompt.category_ids], dataset_name="coco_detection",
    )
