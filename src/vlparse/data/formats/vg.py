"""Reader of Visual Genome dense captions for pre-training.

Each region phrase becomes a caption of the whole image (paper, section 4.1). Files::

    region_descriptions.json: [{"id": <image_id>, "regions": [{"phrase": ..., ...}, ...]}, ...]
    image_data.json:          [{"image_id": ..., "width", "height", "url", ...}, ...]

The image file is ``<image_root>/VG_100K/<id>.jpg`` or ``<image_root>/VG_100K_2/<id>.jpg``.
"""

from __future__ import annotations

import logging
import os

from vlparse.data.formats.jsonio import load_json, require, require_typed
from vlparse.data.formats.records import ImageCaptions
from vlparse.errors import DataFormatError

__all__ = ["VG_IMAGE_DIRS", "read_vg", "vg_image_path"]

log = logging.getLogger(__name__)

VG_IMAGE_DIRS = ("VG_100K", "VG_100K_2")
"""The folders of ``image_root`` that hold the Visual Genome images, searched in this order."""


def _list_dir(folder: str) -> set[str]:
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()


def vg_image_path(
    image_root: str | os.PathLike,
    image_id: int | str,
    listing: dict[str, set[str]] | None = None,
) -> str:
    """Path of a VG image: ``VG_100K/<id>.jpg`` if it exists, else ``VG_100K_2/<id>.jpg`` if it
    exists, else the ``VG_100K`` path (so that the image loader reports it missing).

    Args:
        listing: optional ``{folder: set of file names}`` (one directory listing per folder
            instead of a ``stat`` per image).
    """
    root = os.fspath(image_root)
    name = f"{image_id}.jpg"
    for folder in VG_IMAGE_DIRS:
        if listing is not None:
            found = name in listing.get(folder, ())
        else:
            found = os.path.exists(os.path.join(root, folder, name))
        if found:
            return os.path.join(root, folder, name)
    return os.path.join(root, VG_IMAGE_DIRS[0], name)


def _list_of(data, path, what: str) -> list:
    if not isinstance(data, list):
        raise DataFormatError(
            f"{os.fspath(path)}: top level: expected a list of {what}, got {type(data).__name__}"
        )
    return data


def read_vg(
    region_descriptions: str | os.PathLike,
    image_data: str | os.PathLike,
    image_root: str | os.PathLike,
    min_phrase_words: int = 1,
) -> list[ImageCaptions]:
    """Visual Genome images with their region phrases as captions, in file order.

    Phrases are stripped; phrases with fewer than ``min_phrase_words`` words are dropped, and
    repeated phrases of one image (same text up to case and spacing) kept once. Images left
    without a phrase, and images that ``image_data`` does not list, are left out (logged).

    Raises:
        DataFormatError: malformed JSON or a missing field, naming file, entry and field.
    """
    regions_all = _list_of(load_json(region_descriptions), region_descriptions, "images")
    meta = _list_of(load_json(image_data), image_data, "images")
    known = set()
    for i, entry in enumerate(meta):
        # VG 1.2 names the id "image_id"; VG 1.0 named it "id"
        key = "id" if isinstance(entry, dict) and "image_id" not in entry and "id" in entry else (
            "image_id"
        )
        known.add(require_typed(entry, key, (int, str), image_data, f"[{i}]"))

    root = os.fspath(image_root)
    listing = {folder: _list_dir(os.path.join(root, folder)) for folder in VG_IMAGE_DIRS}
    records, unknown, empty = [], 0, 0
    for i, entry in enumerate(regions_all):
        image_id = require_typed(entry, "id", (int, str), region_descriptions, f"[{i}]")
        where = f"[{i}] (image {image_id})"
        regions = require(entry, "regions", region_descriptions, where)
        if not isinstance(regions, list):
            raise DataFormatError(
                f"{os.fspath(region_descriptions)}: {where}: 'regions' must be a list"
            )
        if image_id not in known:
            unknown += 1
            continue
        seen, captions = set(), []
        for j, region in enumerate(regions):
            phrase = require(region, "phrase", region_descriptions, f"{where}.regions[{j}]")
            if not isinstance(phrase, str):
                raise DataFormatError(
                    f"{os.fspath(region_descriptions)}: {where}.regions[{j}]: 'phrase' must be a "
                    f"string, got {type(phrase).__name__}"
                )
            words = phrase.split()
            if len(words) < min_phrase_words:
                continue
            key = " ".join(words).lower()
            if key in seen:
                continue
            seen.add(key)
            captions.append(phrase.strip())
        if not captions:
            empty += 1
            continue
        records.append(
            ImageCaptions(
                image_path=vg_image_path(root, image_id, listing),
                captions=captions,
                image_id=image_id,
                source="vg",
            )
        )
    if unknown:
        log.warning(
            "%s: %d image(s) are not listed in %s and were left out",
            region_descriptions, unknown, image_data,
        )
    if empty:
        log.warning(
            "%s: %d image(s) have no phrase of >= %d word(s) and were left out",
            region_descriptions, empty, min_phrase_words,
        )
    return records
