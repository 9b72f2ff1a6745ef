"""Reader of NLVR2 (``train.json``, ``dev.json``, ``test1.json``: one JSON object per line).

Each line (see ``DATA_FORMATS.md``)::

    {"identifier": "train-10171-0-0", "sentence": "...", "label": "True", "directory": "64", ...}

The identifier is ``<split>-<set>-<pair>-<sentence>``; the pair's two images are
``<split>-<set>-<pair>-img0.png`` (left) and ``...-img1.png`` (right), under
``<image_root>/train/<directory>/`` for train and ``<image_root>/<split>/`` otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlparse.data.formats.jsonio import load_jsonl, require_typed
from vlparse.errors import DataFormatError

__all__ = ["NLVR2Example", "nlvr2_image_names", "nlvr2_image_paths", "read_nlvr2"]


@dataclass
class NLVR2Example:
    """One NLVR2 statement about a pair of images.

    Attributes:
        identifier: ``<split>-<set>-<pair>-<sentence>``, e.g. ``"train-10171-0-0"``.
        sentence: the statement.
        label: whether it is true of the pair; ``None`` when the file has no labels.
        left_image: path of ``<split>-<set>-<pair>-img0.png``.
        right_image: path of ``<split>-<set>-<pair>-img1.png``.
        directory: the train sub-folder (``"64"``), ``None`` outside train.
    """

    identifier: str
    sentence: str
    label: bool | None
    left_image: str
    right_image: str
    directory: str | None = None


def nlvr2_image_names(identifier: str) -> tuple[str, str]:
    """``("<split>-<set>-<pair>-img0.png", "<split>-<set>-<pair>-img1.png")`` of an identifier.

    Raises:
        ValueError: the identifier is not ``<split>-<set>-<pair>-<sentence>``.
    """
    parts = identifier.split("-")
    if len(parts) != 4 or not all(parts) or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(
            f"NLVR2 identifier {identifier!r} is not <split>-<set>-<pair>-<sentence> "
            "(e.g. 'train-10171-0-0')"
        )
    stem = "-".join(parts[:3])
    return f"{stem}-img0.png", f"{stem}-img1.png"


def nlvr2_image_paths(
    image_root: str | os.PathLike, identifier: str, directory: str | None = None
) -> tuple[str, str]:
    """Left and right image paths of an identifier: ``<root>/train/<directory>/<name>`` for train
    identifiers, ``<root>/<split>/<name>`` otherwise.

    Raises:
        ValueError: a malformed identifier, or a train identifier without ``directory``.
    """
    left, right = nlvr2_image_names(identifier)
    split = identifier.split("-")[0]
    folder = os.path.join(os.fspath(image_root), split)
    if split == "train":
        if directory is None:
            raise ValueError(f"NLVR2 train identifier {identifier!r} needs its 'directory'")
        folder = os.path.join(folder, str(directory))
    return os.path.join(folder, left), os.path.join(folder, right)


def _label(value, path, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise DataFormatError(
        f"{os.fspath(path)}: {where}: field 'label' must be \"True\" or \"False\", got {value!r}"
    )


def read_nlvr2(
    path: str | os.PathLike, image_root: str | os.PathLike, require_labels: bool = True
) -> list[NLVR2Example]:
    """NLVR2 examples of one JSON-lines file, in file order.

    Args:
        path: ``train.json``, ``dev.json`` or ``test1.json``.
        image_root: folder holding ``train/<directory>/``, ``dev/`` and ``test1/``.
        require_labels: if false, lines without ``label`` give ``label=None`` (unlabelled test
            files); otherwise a missing label is an error.

    Raises:
        DataFormatError: malformed JSON (file, line, column), a missing or mistyped field, an
            identifier that is not ``<split>-<set>-<pair>-<sentence>``, or a train line without
            ``directory``; the message names the file, the record and the field.
    """
    root = os.fspath(image_root)
    records = []
    for i, row in enumerate(load_jsonl(path)):
        where = f"record {i}"
        ident = require_typed(row, "identifier", str, path, where)
        where += f" (identifier {ident})"
        sentence = require_typed(row, "sentence", str, path, where)
        label = None
        if require_labels or "label" in row:
            label = _label(require_typed(row, "label", (str, bool), path, where), path, where)
        directory = row.get("directory")
        if directory is not None:
            directory = str(require_typed(row, "directory", (str, int), path, where))
        try:
            left, right = nlvr2_image_paths(root, ident, directory)
        except ValueError as e:
            field = "directory" if "directory" in str(e) else "identifier"
            raise DataFormatError(f"{os.fspath(path)}: {where}: field '{field}': {e}") from e
        records.append(NLVR2Example(ident, sentence, label, left, right, directory))
    return records
