"""Reader of the Karpathy caption split files (``dataset_coco.json``, ``dataset_flickr30k.json``).

Format (see ``DATA_FORMATS.md``)::

    {"dataset": "coco", "images": [{"filepath": "val2014", "filename": "...jpg", "imgid": 0,
     "cocoid": 391895, "split": "test", "sentences": [{"raw": "A man ...", ...}, ...]}, ...]}

The image path is ``<image_root>/<filepath>/<filename>``, ``filepath`` left out when absent
(Flickr30K).
"""

from __future__ import annotations

import os
from pathlib import Path

from vlparse.data.formats.jsonio import load_json, require, require_typed
from vlparse.data.formats.records import ImageCaptions
from vlparse.errors import DataFormatError

__all__ = ["KARPATHY_SPLITS", "read_karpathy"]

KARPATHY_SPLITS = ("train", "restval", "val", "test")
"""The split names used by the Karpathy files."""


def _image_id(entry: dict) -> str | int:
    """COCO id when present, else the Flickr30K number of the file name, else ``imgid``."""
    if "cocoid" in entry:
        return entry["cocoid"]
    stem = Path(str(entry.get("filename", ""))).stem
    if stem.isdigit():
        return int(stem)
    return entry.get("imgid", stem)


def read_karpathy(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    splits: list[str] | tuple[str, ...] | str,
    source: str | None = None,
) -> list[ImageCaptions]:
    """Images of the requested splits with their raw captions, in file order.

    Args:
        path: the Karpathy JSON file.
        image_root: folder that holds ``<filepath>/<filename>``.
        splits: one split name or several (``train``, ``restval``, ``val``, ``test``).
        source: the data set name put on the records; default the file's ``"dataset"`` field
            (else the file name's stem).

    Returns:
        One :class:`ImageCaptions` per image (captions = ``sentences[].raw``; an image without
        sentences has an empty list).

    Raises:
        DataFormatError: the file is not valid JSON, or a field is missing or has the wrong type
            (the message names the file, the image entry and the field).
    """
    wanted = {splits} if isinstance(splits, str) else set(splits)
    unknown = wanted - set(KARPATHY_SPLITS)
    if unknown:
        raise ValueError(
            f"read_karpathy: unknown split(s) {sorted(unknown)}; "
            f"use some of {list(KARPATHY_SPLITS)}"
        )
    data = load_json(path)
    images = require(data, "images", path, "top level")
    if not isinstance(images, list):
        raise DataFormatError(f"{os.fspath(path)}: top level: 'images' must be a list")
    if source is None:
        source = str(data.get("dataset") or Path(path).stem)
    root = os.fspath(image_root)

    records = []
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if isinstance(entry, dict) and "cocoid" in entry:
            where += f" (cocoid {entry['cocoid']})"
        elif isinstance(entry, dict) and "filename" in entry:
            where += f" ({entry['filename']})"
        split = require_typed(entry, "split", str, path, where)
        if split not in wanted:
            continue
        filename = require_typed(entry, "filename", str, path, where)
        sentences = require(entry, "sentences", path, where)
        if not isinstance(sentences, list):
            raise DataFormatError(f"{os.fspath(path)}: {where}: 'sentences' must be a list")
        for key in ("cocoid", "imgid", "filepath"):  # ids must be usable as keys; a path a name
            if key in entry:
                require_typed(entry, key, str if key == "filepath" else (int, str), path, where)
        captions = []
        for j, sent in enumerate(sentences):
            raw = require(sent, "raw", path, f"{where}.sentences[{j}]")
            if not isinstance(raw, str):
                raise DataFormatError(
                    f"{os.fspath(path)}: {where}.sentences[{j}]: 'raw' must be a string, "
                    f"got {type(raw).__name__}"
                )
            captions.append(raw)
        filepath = entry.get("filepath")
        parts = [root, filepath, filename] if filepath else [root, filename]
        records.append(
            ImageCaptions(
                image_path=os.path.join(*map(str, parts)),
                captions=captions,
                image_id=_image_id(entry),
                source=source,
            )
        )
    return records
