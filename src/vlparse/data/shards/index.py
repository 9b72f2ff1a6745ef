"""The index of a shard folder, and which shards a ``data.shards`` source names.

A shard folder holds ``shard-000000.tar``, ``shard-000001.tar``, ... and ``index.json``::

    {"format": "vlparse-shards", "format_version": 1, "vlparse_version": "0.1.0",
     "manifest": "world/manifest.json",                      # as given to the writer
     "command": "vlparse data shard --data world/manifest.json --out shards ...",
     "arguments": {"sets": ["coco", "vg"], "splits": ["train", "restval"], "maxcount": 10000,
                   "records": 123287, "records_digest": "9f3c..."},
     "complete": true,
     "shards": [{"name": "shard-000000.tar", "count": 9998, "bytes": 512000000,
                 "first_record": 0, "records": 10000,
                 "bad": [{"path": "images/coco/x.jpg", "reason": "...", "source": "coco",
                          "image_id": 9, "record": 17}]}, ...],
     "total": 123280, "num_bad": 7}

A shard is listed only once it is complete on disk, so the list doubles as the writer's
completion marker. Shard ``k`` holds the good images among records ``[k * maxcount, (k + 1) *
maxcount)`` of :func:`~vlparse.data.pretrain.read_pretrain_records`, in record order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand

from vlparse.data.formats.jsonio import load_json
from vlparse.errors import ConfigError, DataFormatError, ShardError

__all__ = [
    "DEFAULT_SETS", "DEFAULT_SPLITS", "INDEX_NAME", "ShardInfo", "check_sets", "load_index",
    "resolve_shards", "shard_name",
]

INDEX_NAME = "index.json"
FORMAT = "vlparse-shards"
FORMAT_VERSION = 1

#: The sets and splits the writer takes by default: those ``vlparse pretrain`` trains on by
#: default (``data.train_sets``, ``data.train_splits``). Flickr30K is left out on purpose: its
#: test split is a retrieval benchmark.
DEFAULT_SETS = ("coco", "vg")
DEFAULT_SPLITS = ("train", "restval")


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file ``name`` at ``path`` holding ``count`` samples (from the index)."""

    name: str
    path: str
    count: int


def shard_name(k: int) -> str:
    """The file name of shard ``k``: ``shard-000007.tar``."""
    return f"shard-{k:06d}.tar"


def load_index(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``folder/index.json``.

    Raises:
        ShardError: there is no index (the folder is not a shard folder).
        DataFormatError: the index is malformed (file and field named).
    """
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise ShardError(
            f"{folder}: no {INDEX_NAME}; write shards with `vlparse data shard --data MANIFEST "
            f"--out {folder}`"
        )
    index = load_json(path)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataFormatError(f"{path}: not a vlparse shard index ('format' must be {FORMAT!r})")
    if index.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(
            f"{path}: format_version {index.get('format_version')!r}; this vlparse reads "
            f"version {FORMAT_VERSION}"
        )
    shards = index.get("shards")
    if not isinstance(shards, list):
        raise DataFormatError(f"{path}: 'shards' must be a list")
    for i, s in enumerate(shards):
        if not (isinstance(s, dict) and isinstance(s.get("name"), str)
                and isinstance(s.get("count"), int) and s["count"] >= 0):
            raise DataFormatError(f"{path}: shards[{i}] needs a 'name' and a 'count' >= 0")
    return index


def _missing(shards: list[ShardInfo], where: str) -> None:
    gone = [s.name for s in shards if not os.path.isfile(s.path)]
    if gone:
        more = f" and {len(gone) - 5} more" if len(gone) > 5 else ""
        raise ShardError(f"{where}: shard(s) missing: {', '.join(gone[:5])}{more}")


def resolve_shards(source: str | os.PathLike) -> tuple[list[ShardInfo], dict[str, Any]]:
    """The shards that ``source`` names and their folder's index.

    Args:
        source: a shard folder (all its shards; the index must be complete) or a brace pattern
            such as ``DIR/shard-{000000..000099}.tar`` (those shards; each must be listed in
            ``DIR/index.json``).

    Raises:
        ShardError: a shard is missing on disk (named), a named shard is not in the index, the
            folder's index is incomplete, or the pattern names shards of several folders.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        index = load_index(source)
        if not index.get("complete"):
            raise ShardError(
                f"{source}: the shards are incomplete (the writer stopped); run the same "
                "`vlparse data shard` command again to finish them"
            )
        shards = [ShardInfo(s["name"], os.path.join(source, s["name"]), s["count"])
                  for s in index["shards"]]
    else:
        paths = list(braceexpand.braceexpand(source))
        folders = {os.path.dirname(p) for p in paths}
        if len(folders) != 1:
            raise ShardError(f"{source}: the shards of a pattern must lie in one folder")
        folder = folders.pop() or "."
        index = load_index(folder)
        counts = {s["name"]: s["count"] for s in index["shards"]}
        unknown = [os.path.basename(p) for p in paths if os.path.basename(p) not in counts]
        if unknown:
            raise ShardError(
                f"{source}: not in {os.path.join(folder, INDEX_NAME)} (missing or unfinished): "
                f"{', '.join(unknown[:5])}"
            )
        shards = [ShardInfo(os.path.basename(p), p, counts[os.path.basename(p)]) for p in paths]
    if not shards or sum(s.count for s in shards) == 0:
        raise ShardError(f"{source}: no samples in the shards")
    _missing(shards, source)
    return shards, index


def check_sets(index: dict[str, Any], sets: list[str], splits: list[str], source: str) -> None:
    """Refuse shards written for other data sets or splits than a run trains on.

    Raises:
        ConfigError: naming the run's ``data.train_sets`` / ``data.train_splits`` and the
            shards' ``--sets`` / ``--splits``.
    """
    args = index.get("arguments", {})
    have_sets, have_splits = args.get("sets"), args.get("splits")
    if have_sets == list(sets) and have_splits == list(splits):
        return
    raise ConfigError(
        f"data.train_sets={list(sets)} and data.train_splits={list(splits)}, but the shards at "
        f"{source} hold sets {have_sets} and splits {have_splits} (their {INDEX_NAME}); train "
        "on those (set data.train_sets / data.train_splits) or write shards with `vlparse data "
        f"shard --sets {','.join(sets)} --splits {','.join(splits)}`"
    )
