"""JSON and JSON-lines loading with errors that say which file, line and column is wrong.

Every reader of an official format goes through :func:`load_json` / :func:`load_jsonl`, and
checks fields with :func:`require`, so a broken annotation file fails with a message such as::

    DataFormatError: /data/dataset_coco.json: images[12] (cocoid 391895): missing field 'sentences'
"""

from __future__ import annotations

import json
import os
from typing import Any

from vlparse.errors import DataFormatError

__all__ = ["DataFormatError", "load_json", "load_jsonl", "require", "require_typed"]

_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a JSON object",
               bool: "true/false"}


def _open_text(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: {what} file not found; check the path (or the manifest entry that names it)"
        )
    if os.path.isdir(path):
        raise DataFormatError(f"{path}: expected a {what} file, found a directory")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataFormatError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); is this the right file?"
        ) from e


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        DataFormatError: the file is not valid JSON; the message gives file, line and column.
    """
    text = _open_text(path, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{os.fspath(path)}: line {e.lineno}, column {e.colno}: malformed JSON ({e.msg})"
        ) from e


def load_jsonl(path: str | os.PathLike) -> list[Any]:
    """Parse a JSON-lines file (one JSON value per line; blank lines are skipped).

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: a line is not valid JSON; the message gives file, line and column.
    """
    text = _open_text(path, "JSON-lines")
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataFormatError(
                f"{os.fspath(path)}: line {lineno}, column {e.colno}: malformed JSON ({e.msg})"
            ) from e
    return out


def require(record: Any, field: str, path: str | os.PathLike, where: str) -> Any:
    """``record[field]``, or a :class:`DataFormatError` naming the file, the record and the field.

    Args:
        record: a parsed JSON object (must be a dict).
        field: the required key.
        path: the file the record comes from (for the message).
        where: the record's place, e.g. ``"images[3] (cocoid 391895)"``.
    """
    if not isinstance(record, dict):
        raise DataFormatError(
            f"{os.fspath(path)}: {where}: expected a JSON object with field '{field}', "
            f"got {type(record).__name__}"
        )
    if field not in record:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise DataFormatError(
            f"{os.fspath(path)}: {where}: missing field '{field}' (fields present: {keys})"
        )
    return record[field]


def require_typed(record: Any, name: str, types: type | tuple[type, ...], path, where: str) -> Any:
    """``record[name]`` checked to be of ``types`` (``bool`` never passes for ``int``).

    Raises:
        DataFormatError: the field is missing or of another type; the message names the file,
            the record and the field, and says what was expected.
    """
    value = require(record, name, path, where)
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return value
    expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
    raise DataFormatError(
        f"{os.fspath(path)}: {where}: field '{name}' must be {expected}, "
        f"got {type(value).__name__} {value!r:.60}"
    )
