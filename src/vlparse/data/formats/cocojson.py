"""Checks shared by the readers of COCO-style JSON (MDETR grounding files, COCO instances).

A COCO-style file is ``{"images": [...], "annotations": [...], "categories": [...]}``; these
helpers read one entry's fields with errors that name the file, the entry and the field.
"""

from __future__ import annotations

import math
import os
from typing import Any

from vlparse.data.formats.jsonio import load_json
from vlparse.data.formats.vqa import require_typed
from vlparse.errors import DataFormatError

__all__ = ["BBox", "image_size", "load_coco_json", "read_bbox", "read_spans"]

BBox = tuple[float, float, float, float]
"""A COCO box ``(x, y, w, h)``: top-left corner, width and height in pixels."""


def load_coco_json(path: str | os.PathLike) -> tuple[list[dict], list[dict], list[dict]]:
    """``(images, annotations, categories)`` of a COCO-style file (``categories`` may be absent).

    Raises:
        DataFormatError: malformed JSON, or a top level without the ``images`` and
            ``annotations`` lists.
    """
    data = load_json(path)
    images = require_typed(data, "images", list, path, "top level")
    annotations = require_typed(data, "annotations", list, path, "top level")
    categories = data.get("categories") or []
    if not isinstance(categories, list):
        raise DataFormatError(f"{os.fspath(path)}: top level: 'categories' must be a list")
    return images, annotations, categories


def _int_like(value: Any, name: str, path, where: str) -> int:
    """An integer, or a string of digits (MDETR's Flickr files store sizes as strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DataFormatError(
        f"{os.fspath(path)}: {where}: field '{name}' must be an integer, got {value!r:.40}"
    )


def image_size(entry: dict, path, where: str) -> tuple[int, int]:
    """``(width, height)`` of an image entry; both must be positive."""
    w = _int_like(require_typed(entry, "width", (int, str, float), path, where), "width", path,
                  where)
    h = _int_like(require_typed(entry, "height", (int, str, float), path, where), "height",
                  path, where)
    if w <= 0 or h <= 0:
        raise DataFormatError(f"{os.fspath(path)}: {where}: image size {w}x{h} is not positive")
    return w, h


def read_bbox(ann: dict, path, where: str) -> BBox:
    """The ``bbox`` ``[x, y, w, h]`` of an annotation: four finite numbers."""
    box = require_typed(ann, "bbox", list, path, where)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    if len(box) != 4 or not numbers or not all(math.isfinite(v) for v in box):
        raise DataFormatError(
            f"{os.fspath(path)}: {where}: 'bbox' must be four numbers [x, y, w, h], "
            f"got {box!r:.80}"
        )
    return float(box[0]), float(box[1]), float(box[2]), float(box[3])


def read_spans(value: Any, text: str, field: str, path, where: str) -> list[tuple[int, int]]:
    """Character spans ``[[start, end], ...]`` with ``0 <= start <= end <= len(text)``."""
    if not isinstance(value, list):
        raise DataFormatError(f"{os.fspath(path)}: {where}: '{field}' must be a list of spans")
    spans = []
    for k, span in enumerate(value):
        ok = (isinstance(span, (list, tuple)) and len(span) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in span))
        if not ok or not 0 <= span[0] <= span[1] <= len(text):
            raise DataFormatError(
                f"{os.fspath(path)}: {where}: {field}[{k}] = {span!r:.40} is not a character "
                f"span [start, end] of the {len(text)}-character caption"
            )
        spans.append((span[0], span[1]))
    return spans
