"""Writing the pre-training records of a manifest into WebDataset tar shards.

One sample per image (each image once, with all its captions)::

    000000017.jpg    the image file's bytes as stored (its extension kept: jpg, png, ...)
    000000017.json   {"captions": [...], "source": "coco", "image_id": 391895,
                      "path": "images/coco/train2014/x.jpg", "record": 17}

The key is the record's position in :func:`~vlparse.data.pretrain.read_pretrain_records`;
``path`` is relative to the manifest's folder. Shard ``k`` holds the good images among records
``[k * maxcount, (k + 1) * maxcount)``, so which image lands in which shard does not depend on
where an earlier run stopped. Each shard is written to a temporary file, renamed into place, then
listed in ``index.json`` (:mod:`~vlparse.data.shards.index`): a re-run skips the listed shards
whose size matches and rewrites the others. Tar entries carry a fixed time stamp, so the same
records give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm
from webdataset import TarWriter

from vlparse.data.formats.records import ImageCaptions
from vlparse.data.manifest import load_manifest
from vlparse.data.pretrain import read_pretrain_records
from vlparse.data.shards.index import (
    DEFAULT_SETS,
    DEFAULT_SPLITS,
    FORMAT,
    FORMAT_VERSION,
    INDEX_NAME,
    load_index,
    shard_name,
)
from vlparse.errors import BadImageError, ShardError
from vlparse.io.files import atomic_write_text
from vlparse.processing.images import load_image

__all__ = ["records_digest", "write_shards"]

log = logging.getLogger(__name__)


def _relpath(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive
        return path


def _manifest_base(manifest_path: str | os.PathLike) -> Path:
    base = Path(manifest_path)
    return (base if base.is_dir() else base.parent).resolve()


def records_digest(records: list[ImageCaptions], manifest_path: str | os.PathLike) -> str:
    """The fingerprint of the records of a manifest that ``index.json`` keeps (in
    ``arguments.records_digest``): shards written from other records have another one."""
    base = _manifest_base(manifest_path)
    return _digest(records, [_relpath(r.image_path, base) for r in records])


def _digest(records: list[ImageCaptions], paths: list[str]) -> str:
    """A fingerprint of the records: another manifest content gives another digest."""
    h = hashlib.blake2b(digest_size=16)
    for r, p in zip(records, paths, strict=True):
        h.update(json.dumps([r.source, r.image_id, p, r.captions]).encode("utf-8") + b"\n")
    return h.hexdigest()


def _save(out: Path, index: dict[str, Any]) -> None:
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")


def _open_index(out: Path, arguments: dict, manifest: str, command: str) -> dict[str, Any]:
    """The folder's index, or a new empty one; refuses a folder written with other arguments."""
    if (out / INDEX_NAME).exists():
        index = load_index(out)
        old = index.get("arguments", {})
        if old != arguments:
            diffs = [f"{k}: {old.get(k)!r} there, {v!r} now"
                     for k, v in arguments.items() if old.get(k) != v]
            raise ShardError(
                f"{out} holds shards written with other arguments ({'; '.join(diffs)}); "
                "write to another folder or delete this one"
            )
        return index
    if any(out.glob("shard-*.tar")):
        raise ShardError(f"{out} holds shard files but no {INDEX_NAME}; use an empty folder")
    from vlparse import __version__

    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "vlparse_version": __version__,
             "manifest": manifest, "command": command, "arguments": arguments,
             "complete": False, "shards": [], "total": 0, "num_bad": 0}
    _save(out, index)
    return index


def _is_complete(path: Path, entry: dict) -> bool:
    return path.is_file() and path.stat().st_size == entry.get("bytes")


def _sample(records: list[ImageCaptions], paths: list[str], i: int) -> dict[str, Any]:
    """The tar sample of record ``i``; raises BadImageError when its image does not decode."""
    r = records[i]
    load_image(r.image_path)  # decodes fully: corrupt or truncated files fail here
    meta = {"captions": r.captions, "source": r.source, "image_id": r.image_id,
            "path": paths[i], "record": i}
    ext = Path(r.image_path).suffix.lstrip(".").lower() or "img"
    return {"__key__": f"{i:09d}", ext: Path(r.image_path).read_bytes(),
            "json": json.dumps(meta).encode("utf-8")}


def _write_shard(
    out: Path, name: str, records: list[ImageCaptions], paths: list[str], chunk: range,
    bar: tqdm,
) -> dict[str, Any]:
    """Write records ``chunk`` as shard ``name`` (bad images left out); its index entry."""
    tmp = out / f".{name}.{os.getpid()}.tmp"  # opened as usual, so the umask sets its mode
    bad, count = [], 0
    try:
        with open(tmp, "wb") as f:
            with TarWriter(f, encoder=False, mtime=0.0) as writer:
                for i in chunk:
                    bar.update(1)
                    try:
                        writer.write(_sample(records, paths, i))
                        count += 1
                    except BadImageError as e:
                        log.warning("bad image skipped: %s (%s)", e.path, e.reason)
                        r = records[i]
                        bad.append({"path": paths[i], "reason": e.reason, "source": r.source,
                                    "image_id": r.image_id, "record": i})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"name": name, "count": count, "bytes": (out / name).stat().st_size,
            "first_record": chunk.start, "records": len(chunk), "bad": bad}


def write_shards(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    sets: Sequence[str] | None = None,
    splits: Sequence[str] = DEFAULT_SPLITS,
    maxcount: int = 10000,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Write the pre-training records of a manifest into tar shards, resumably.

    Args:
        manifest_path: the manifest (file or folder), recorded in the index as given.
        out_dir: the shard folder (created).
        sets, splits: as ``data.train_sets`` / ``data.train_splits``; ``sets`` defaults to
            :data:`~vlparse.data.shards.index.DEFAULT_SETS`.
        maxcount: records per shard (the shard holds fewer when some of its images are bad).
        progress: show a progress bar.
        command: the command line recorded in the index; default the equivalent
            ``vlparse data shard`` call.

    Returns:
        The index (see :mod:`vlparse.data.shards.index`); nothing is written when the folder is
        already complete.

    Raises:
        ShardError: ``out_dir`` holds shards of other arguments or of another manifest content.
        ManifestError, DataFormatError: from reading the manifest and its annotation files.
    """
    if maxcount < 1:
        raise ShardError(f"maxcount must be >= 1, got {maxcount}")
    sets, splits = list(sets or DEFAULT_SETS), list(splits)
    base = _manifest_base(manifest_path)
    records = read_pretrain_records(load_manifest(manifest_path), sets, splits)
    paths = [_relpath(r.image_path, base) for r in records]
    arguments = {"sets": sets, "splits": splits, "maxcount": maxcount,
                 "records": len(records), "records_digest": _digest(records, paths)}
    if command is None:
        command = shlex.join(["vlparse", "data", "shard", "--data", os.fspath(manifest_path),
                              "--out", os.fspath(out_dir), "--sets", ",".join(sets),
                              "--splits", ",".join(splits), "--maxcount", str(maxcount)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".shard-*.tmp"):  # left by an interrupted run
        stale.unlink()
    index = _open_index(out, arguments, os.fspath(manifest_path), command)
    listed = {s["name"]: s for s in index["shards"]}
    changed = False
    with tqdm(total=len(records), desc="shards", unit="img", disable=not progress) as bar:
        for k, start in enumerate(range(0, len(records), maxcount)):
            name, chunk = shard_name(k), range(start, min(start + maxcount, len(records)))
            if name in listed and _is_complete(out / name, listed[name]):
                bar.update(len(chunk))
                continue
            if listed.pop(name, None) is not None:  # listed but not on disk as written
                index["shards"] = sorted(listed.values(), key=lambda s: s["name"])
                index["complete"] = False
                _save(out, index)
            listed[name] = _write_shard(out, name, records, paths, chunk, bar)
            index["shards"] = sorted(listed.values(), key=lambda s: s["name"])
            _save(out, index)
            changed = True
    if changed or not index["complete"]:
        index["total"] = sum(s["count"] for s in index["shards"])
        index["num_bad"] = sum(len(s["bad"]) for s in index["shards"])
        index["complete"] = True
        _save(out, index)
    log.info("%s: %d shards, %d samples, %d bad images skipped", out, len(index["shards"]),
             index["total"], index["num_bad"])
    return index
