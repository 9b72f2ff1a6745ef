"""Streaming pre-training samples from tar shards, split over ranks and DataLoader workers.

The epoch: the ``N`` samples of the index (the sum of the shards' counts), in an order of the
shards drawn from ``(seed, epoch)`` (every rank draws the same), each shard's samples in file
order; a sample's *position* in this sequence is its ``index`` in the epoch.

Balancing: every rank yields exactly ``Q`` samples per epoch, so DDP ranks take the same number
of steps. Rank ``r`` takes the positions ``[r*Q, (r+1)*Q)`` modulo ``N`` (whole shards and at
most two partial ones: a partial shard is read from its start and the samples before the
rank's first are dropped unread by the decoder). With ``balance="repeat"`` (the default)
``Q = ceil(N / R)``: the last ranks wrap around to the start of the epoch, so the first
``R*Q - N`` (< ``R``) samples of the epoch are seen twice and every sample at least once. With
``balance="trim"`` ``Q = floor(N / R)`` and the last ``N - R*Q`` samples of the epoch (other
ones each epoch) are left out. A rank's ``Q`` positions are cut into contiguous, near-equal parts
for its DataLoader workers (``Q // W`` or one more), the same on every rank, so every rank also
yields the same number of batches.

Shuffling: the shard order of each epoch, and a buffer of ``shuffle_buffer`` raw samples (bytes,
not decoded images) per worker, seeded by ``(seed, epoch, rank, worker)``
(:func:`~vlparse.data.shards.buffer.buffered`). The same seed, epoch, ranks and workers give the
same items in the same order.

Caption reservoir: each item carries ``reservoir``, the ``(record, captions)`` of the last
``shuffle_buffer`` samples its worker read into the buffer when the item left it (the item's own
sample may be among them). It stands in for the global list of records when the pre-training
collator draws unmatched captions (``objectives.itm_negatives=dataset``), so those draws are
reproducible for a fixed seed and layout of ranks and workers, not across layouts.

Bad samples (an undecodable image, bad JSON, a missing member, or the samples of a shard cut
short by a truncated tar member) are skipped and counted, as in the manifest path: the item at a
bad sample's position is the next good sample of the worker's stream (the last good one at its
end), and carries ``skipped = [(name, reason)]``, where ``name`` is ``<shard>/<key>`` or
``<shard>#<n>`` (the ``n``-th sample of the shard, when its key is unknown). A worker raises
:class:`~vlparse.errors.BadDataError` once more than ``max_bad_fraction`` of the (at least
``min_bad_check``) samples it has read are bad, or when all of them are. A missing shard fails at
once, naming it (:class:`~vlparse.data.shards.index.ShardError`).

Resume (:meth:`ShardDataset.resume`) with the samples each worker yielded before the stop
(:meth:`ShardDataset.worker_progress` turns the rank's batch count into these):

* ``exact=True``: each worker replays its stream of raw samples through the same shuffle and
  drops the first ``consumed`` before decoding their images, so the rest of the epoch (items and
  reservoirs) is exactly what the uninterrupted run would have yielded (only the interleaving of
  the workers' batches may differ). It costs reading, not decoding, the consumed part of the
  shards again.
* ``exact=False``: each worker starts at position ``start + consumed`` of its part of the epoch
  (the shards wholly before it are not opened). The count of the rest of the epoch is exact, but
  the samples still in the shuffle buffer at the stop (at most ``shuffle_buffer`` per worker) are
  not seen in this epoch and as many already seen are seen again; the reservoirs start empty.

Both need the same number of ranks and workers as the interrupted run.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import math
import os
import random
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_iterator

from vlparse.data.sampler import stable_seed
from vlparse.data.shards.buffer import Reservoir, buffered
from vlparse.data.shards.index import ShardInfo, resolve_shards
from vlparse.errors import BadDataError, BadImageError, ShardError

__all__ = ["ShardDataset"]


class _Segment(NamedTuple):
    shard: int  # index into the dataset's shard list
    first: int  # first sample of the shard read (its position in the shard)
    stop: int  # one past the last
    position: int  # epoch position of ``first``


class _Entry(NamedTuple):
    position: int
    sample: dict[str, Any] | None  # raw members; None when bad
    meta: dict[str, Any] | None  # the parsed JSON member; None when bad
    shard: str
    name: str  # "<shard>/<key>" or "<shard>#<n>"
    reason: str  # why bad, else ""


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes fully, as RGB; every way they can be bad raises
    :class:`~vlparse.errors.BadImageError` naming ``name`` (as ``load_image`` does for files)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Image.UnidentifiedImageError as e:
        raise BadImageError(name, f"not a recognised image format ({e})") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(name, f"image too large ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImageError(name, f"corrupt or truncated image ({type(e).__name__}: {e})") from e


def _tar_samples(f: io.BufferedReader, name: str, errors: list[str]) -> Iterator[dict[str, Any]]:
    """The samples of an open tar file; a read error ends the stream and is put in ``errors``
    (the sample being read when it happened comes out with the members read so far)."""

    def files() -> Iterator[dict[str, Any]]:
        try:
            for member in tar_file_iterator(f):
                member["__url__"] = name
                yield member
        except (tarfile.TarError, OSError, EOFError) as e:
            errors.append(f"{type(e).__name__}: {str(e).split(' @ ')[0]}")

    return group_by_keys(files())


def _problem(sample: dict[str, Any], errors: list[str]) -> str:
    """Why a raw sample cannot be used ("" if it has its JSON and one image member)."""
    members = sorted(k for k in sample if not k.startswith("__"))
    if "json" in members and len(members) == 2:
        return ""
    cut = f"; shard unreadable after it ({errors[0]})" if errors else ""
    return f"incomplete sample (members: {', '.join(members) or 'none'}){cut}"


def _meta(data: bytes) -> tuple[dict[str, Any] | None, str]:
    """The fields of a sample's JSON member, or ``None`` and why it is bad."""
    try:
        meta = json.loads(data)
        captions = meta["captions"]
        if not captions or not all(isinstance(c, str) for c in captions):
            raise ValueError("'captions' must be a non-empty list of strings")
        return {"captions": list(captions), "source": str(meta["source"]),
                "image_id": meta["image_id"], "record": int(meta["record"])}, ""
    except (ValueError, KeyError, TypeError) as err:
        return None, f"bad JSON ({type(err).__name__}: {err})"


def _captions_of(entry: _Entry) -> tuple[int, list[str]] | None:
    meta = entry.meta
    return None if meta is None else (meta["record"], meta["captions"])


class ShardDataset(IterableDataset):
    """Pre-training samples streamed from the shards of ``vlparse data shard``.

    Args:
        source: a shard folder or a brace pattern (``DIR/shard-{000000..000099}.tar``).
        rank, world_size: this process and the number of processes.
        seed: base seed of the shard order and the shuffle buffers.
        shuffle: shuffle the shard order and the samples (off: the epoch's order as written).
        shuffle_buffer: raw samples per worker held to shuffle (also the length of the caption
            reservoir, kept when not shuffling too).
        transform: applied to the decoded PIL image (RGB), e.g. ``image_transform(S)``.
        balance: ``"repeat"`` or ``"trim"`` (module docstring).
        max_bad_fraction: the share of bad samples a worker tolerates; ``None``: no limit (the
            trainer's own check over all processes then decides).
        min_bad_check: samples a worker reads before it checks the share.

    Items: ``image`` (PIL image, or what ``transform`` returns), ``captions`` (list of str),
    ``source``, ``image_id``, ``key`` (the sample's key: its record number, 9 digits),
    ``shard`` (its shard's file name), ``record`` (its position in the writer's records),
    ``index`` (its position in the epoch, ``[0, R*Q)``), ``epoch``, ``reservoir`` (the caption
    reservoir, module docstring), and ``skipped``: the ``(name, reason)`` of the bad sample this
    item replaces (empty for most items).

    DataLoader workers iterate copies of the dataset made when the loader's iterator starts:
    call :meth:`set_epoch` / :meth:`resume` before ``iter(loader)`` and leave
    ``persistent_workers`` off. Count batches with :meth:`num_batches` (``len(loader)`` does not
    know that each worker ends with its own partial batch).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1000,
        transform: Callable[[Image.Image], Any] | None = None,
        balance: str = "repeat",
        max_bad_fraction: float | None = 0.01,
        min_bad_check: int = 1000,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank} and {world_size}")
        if balance not in ("repeat", "trim"):
            raise ValueError(f"balance must be 'repeat' or 'trim', got {balance!r}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.source = os.fspath(source)
        self.shards: list[ShardInfo] = resolve_shards(source)[0]
        self.total = sum(s.count for s in self.shards)
        q, extra = divmod(self.total, world_size)
        self.per_rank = q + (balance == "repeat" and extra > 0)
        if self.per_rank == 0:
            raise ShardError(f"{source}: {self.total} samples cannot feed {world_size} processes")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.shuffle_buffer, self.transform = shuffle, shuffle_buffer, transform
        self.max_bad_fraction, self.min_bad_check = max_bad_fraction, min_bad_check
        self.epoch = 0
        self._resume: tuple[int, list[int], bool] | None = None

    def __len__(self) -> int:
        """``Q``: the samples this rank yields per epoch."""
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        """Yield epoch ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, consumed: Sequence[int], exact: bool = True) -> None:
        """Continue epoch ``epoch`` after worker ``w`` yielded ``consumed[w]`` samples (see the
        module docstring for how exact that is). Applies to iterations of that epoch only."""
        self.set_epoch(epoch)
        self._resume = (int(epoch), [int(c) for c in consumed], bool(exact))

    def worker_ranges(self, num_workers: int) -> list[tuple[int, int]]:
        """The epoch positions ``[start, stop)`` of each of this rank's ``num_workers``."""
        size, extra = divmod(self.per_rank, num_workers)
        bounds = [self.rank * self.per_rank]
        for w in range(num_workers):
            bounds.append(bounds[-1] + size + (w < extra))
        return list(itertools.pairwise(bounds))

    def _worker_batches(self, batch_size: int, num_workers: int, drop_last: bool) -> list[int]:
        quotas = [b - a for a, b in self.worker_ranges(max(1, num_workers))]
        return [q // batch_size if drop_last else math.ceil(q / batch_size) for q in quotas]

    def num_batches(self, batch_size: int, num_workers: int, drop_last: bool = False) -> int:
        """Batches per epoch of a ``DataLoader(batch_size, num_workers, drop_last)`` over this
        rank (each worker batches its own part, so each may end with a smaller batch)."""
        return sum(self._worker_batches(batch_size, num_workers, drop_last))

    def worker_progress(
        self, batches: int, batch_size: int, num_workers: int, drop_last: bool = False
    ) -> list[int]:
        """Samples each worker had yielded when this rank's DataLoader had given ``batches``
        batches: the DataLoader takes batches from its workers in turn (``in_order``), passing
        over workers that have finished."""
        full = self._worker_batches(batch_size, num_workers, drop_last)
        quotas = [b - a for a, b in self.worker_ranges(len(full))]
        if not 0 <= batches <= sum(full):
            raise ValueError(f"batches must be in [0, {sum(full)}], got {batches}")
        consumed = [0] * len(full)
        turns = (w for r in range(max(full)) for w in range(len(full)) if r < full[w])
        for w in itertools.islice(turns, batches):
            consumed[w] = min(consumed[w] + batch_size, quotas[w])
        return consumed

    def shard_order(self) -> list[int]:
        """The order of the shards in the current epoch (indices into ``self.shards``)."""
        if not self.shuffle:
            return list(range(len(self.shards)))
        gen = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch))
        return torch.randperm(len(self.shards), generator=gen).tolist()

    def _segments(self, start: int, stop: int) -> list[_Segment]:
        """Runs of shard samples covering the epoch positions ``[start, stop)`` (modulo N)."""
        order = self.shard_order()
        ends = list(itertools.accumulate((self.shards[i].count for i in order), initial=0))
        segments, p = [], start
        while p < stop:
            q = p % self.total
            j = bisect.bisect_right(ends, q) - 1  # ends[j] <= q < ends[j + 1]
            n = min(stop - p, ends[j + 1] - q)
            segments.append(_Segment(order[j], q - ends[j], q - ends[j] + n, p))
            p += n
        return segments

    def _read(self, seg: _Segment) -> Iterator[_Entry]:
        """The entries of one segment; samples a truncated shard lost come out as bad."""
        shard = self.shards[seg.shard]
        try:
            f = open(shard.path, "rb")  # closed by the with below, also on early exit
        except FileNotFoundError:
            raise ShardError(f"shard missing: {shard.path}") from None
        errors: list[str] = []
        n = seg.first
        with f:
            for sample in itertools.islice(_tar_samples(f, shard.name, errors), n, seg.stop):
                name, why = f"{shard.name}/{sample['__key__']}", _problem(sample, errors)
                meta = None
                if not why:
                    meta, why = _meta(sample["json"])
                yield _Entry(seg.position + n - seg.first, None if why else sample, meta,
                             shard.name, name, why)
                n += 1
        reason = (f"shard unreadable ({errors[0]})" if errors
                  else f"shard ended after {n} of {shard.count} samples")
        for i in range(n, seg.stop):
            yield _Entry(seg.position + i - seg.first, None, None, shard.name,
                         f"{shard.name}#{i}", reason)

    def _decode(self, e: _Entry) -> tuple[dict[str, Any] | None, str]:
        """An item without its ``index`` / ``skipped``, or ``None`` and why the sample is bad."""
        if e.sample is None or e.meta is None:
            return None, e.reason
        ext = next(k for k in e.sample if not k.startswith("__") and k != "json")
        try:
            image = decode_image(e.sample[ext], e.name)
        except BadImageError as err:
            return None, err.reason
        return {
            "image": self.transform(image) if self.transform is not None else image,
            "captions": list(e.meta["captions"]), "source": e.meta["source"],
            "image_id": e.meta["image_id"], "key": e.sample["__key__"], "shard": e.shard,
            "record": e.meta["record"], "epoch": self.epoch,
        }, ""

    def _check_bad(self, bad: int, seen: int, where: str, first: tuple[str, str]) -> None:
        limit = self.max_bad_fraction
        if limit is not None and seen >= self.min_bad_check and bad > limit * seen:
            raise BadDataError(
                f"{where}: {bad} of {seen} samples were bad ({bad / seen:.1%}), more than "
                f"max_bad_fraction={limit:.1%}; first: {first[0]} ({first[1]})"
            )

    def _items(self, entries: Iterator[tuple[_Entry, Reservoir]],
               where: str) -> Iterator[dict[str, Any]]:
        """Decoded items, one per entry, bad ones replaced by the next good one."""
        pending: list[tuple[int, tuple[str, str]]] = []
        first_bad: tuple[str, str] | None = None
        last, seen, bad = None, 0, 0
        for e, reservoir in entries:
            seen += 1
            item, reason = self._decode(e)
            if item is None:
                bad += 1
                first_bad = first_bad or (e.name, reason)
                pending.append((e.position, (e.name, reason)))
                self._check_bad(bad, seen, where, first_bad)
                continue
            item["reservoir"] = reservoir
            for position, skipped in pending:
                yield {**item, "index": position, "skipped": [skipped]}
            pending.clear()
            last = item
            yield {**item, "index": e.position, "skipped": []}
        if pending and last is None:
            raise BadDataError(f"{where}: all {seen} samples read were bad; first: "
                               f"{first_bad[0]} ({first_bad[1]})")
        for position, skipped in pending:
            yield {**last, "index": position, "skipped": [skipped]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start, stop = self.worker_ranges(workers)[worker]
        skip, exact = 0, True
        if self._resume is not None and self._resume[0] == self.epoch:
            consumed, exact = self._resume[1], self._resume[2]
            if len(consumed) != workers:
                raise ShardError(f"resume: the interrupted run had {len(consumed)} data "
                                 f"worker(s), this one has {workers}; use the same number")
            skip = min(max(consumed[worker], 0), stop - start)
        if not exact:
            start, skip = start + skip, 0
        entries = (e for seg in self._segments(start, stop) for e in self._read(seg))
        rng = (random.Random(stable_seed(self.seed, self.epoch, self.rank, worker))
               if self.shuffle else None)
        where = f"{self.source} (rank {self.rank}, worker {worker})"
        stream = buffered(entries, self.shuffle_buffer, rng, _captions_of, skip=skip)
        yield from self._items(stream, where)
