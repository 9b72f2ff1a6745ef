"""Pre-training data in WebDataset tar shards: the writer, the index and the streaming reader.

``write_shards(manifest, out)`` turns the pre-training records of a manifest into shards and an
``index.json`` (:mod:`~vlparse.data.shards.writer`, :mod:`~vlparse.data.shards.index`);
``ShardDataset(out, rank=..., world_size=...)`` streams them back, split over processes and
DataLoader workers (:mod:`~vlparse.data.shards.reader`, which states the epoch, balancing,
shuffling, bad-sample and resume rules).
"""

from vlparse.data.shards.index import (
    DEFAULT_SETS,
    DEFAULT_SPLITS,
    ShardError,
    ShardInfo,
    load_index,
    resolve_shards,
)
from vlparse.data.shards.reader import ShardDataset, decode_image
from vlparse.data.shards.writer import write_shards

__all__ = [
    "DEFAULT_SETS", "DEFAULT_SPLITS", "ShardDataset", "ShardError", "ShardInfo", "decode_image",
    "load_index", "resolve_shards", "write_shards",
]
