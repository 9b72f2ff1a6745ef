"""The shuffle buffer of a shard stream, and the caption reservoir it keeps beside it.

:func:`buffered` holds ``size`` raw samples and, once full, lets a random one out for each new
one read (a FIFO when not shuffling: the order as read). Beside the buffer it keeps a reservoir:
``(record, captions)`` of the last ``size`` samples read into the buffer (those with readable
captions), and each sample leaves with the reservoir as it stands at that moment, a tuple that
later reads leave alone. The pre-training collator draws an item's unmatched captions from its
reservoir when the data set has no global list of records
(:class:`~vlparse.data.collate.PretrainCollator`); the reservoir depends only on the stream and
the generator, so it is the same on every run with the same seed, epoch, ranks and workers, and
after an exact resume (which replays the stream).

It plays the part of :func:`webdataset.shuffle` (the same rule: fill, then one random sample out
per sample in) with its contents readable, which that function keeps to itself.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["Reservoir", "buffered"]

T = TypeVar("T")

Reservoir = tuple[tuple[int, list[str]], ...]
"""``((record, captions), ...)``: samples read near an item, its candidate unmatched captions."""


def buffered(
    entries: Iterable[T],
    size: int,
    rng: random.Random | None,
    captions_of: Callable[[T], tuple[int, list[str]] | None],
    skip: int = 0,
) -> Iterator[tuple[T, Reservoir]]:
    """``entries`` through a shuffle buffer of ``size``, each with the reservoir as it left.

    Args:
        entries: the stream.
        size: samples held to shuffle, and the reservoir's length (at least 1).
        rng: draws which sample leaves; ``None``: the first in (the order as read).
        captions_of: ``(record, captions)`` of an entry, or ``None`` (it joins no reservoir).
        skip: leave out the first ``skip`` entries that leave the buffer (after shuffling, so
            the rest is what an unskipped stream yields from there on); their reservoirs are
            not built.
    """
    if size < 1:
        raise ValueError(f"buffered: size must be >= 1, got {size}")
    buf: list[T] = []
    pool: deque[tuple[int, list[str]]] = deque(maxlen=size)
    out = 0

    def take() -> T:
        if rng is None:
            return buf.pop(0)
        k = rng.randrange(len(buf))
        buf[k], buf[-1] = buf[-1], buf[k]
        return buf.pop()

    for entry in entries:
        buf.append(entry)
        caption = captions_of(entry)
        if caption is not None:
            pool.append(caption)
        if len(buf) < size:
            continue
        leaving, out = take(), out + 1
        if out > skip:
            yield leaving, tuple(pool)
    while buf:
        leaving, out = take(), out + 1
        if out > skip:
            yield leaving, tuple(pool)
