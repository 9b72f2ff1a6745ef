"""Pre-training data in WebDataset tar shards: the writer, the index and the streaming reader.

``write_shards(manifest, out)`` turns the pre-training records of a manifest into shards and an
``index.json`` (:mod:`~vlparse.data.shards.writer`, :mod:`~vlparse.data.shards.index`);
``ShardDataset(out, rank=..., world_size=...)`` streams them back, split over processes and
DataLoader workers (:mod:`~vlparse.data.shards.reader`, which states the epoch, balancing,
shuffling, caption reservoir, bad-sample and resume rules).

The ``webdataset`` package reads and writes the tar files: ``pip install 'vlparse[shards]'``.
Importing this package without it raises :class:`~vlparse.errors.ShardError` saying so.
"""

from vlparse.errors import ShardError

try:
    import webdataset  # noqa: F401
except ImportError as e:  # an optional dependency: say how to get it
    raise ShardError(
        "tar shards need the webdataset package: pip install 'vlparse[shards]'"
    ) from e

from vlparse.data.shards.index import (  # noqa: E402
    DEFAULT_SETS,
    DEFAULT_SPLITS,
    ShardInfo,
    load_index,
    resolve_shards,
)
from vlparse.data.shards.reader import ShardDataset, decode_image  # noqa: E402
from vlparse.data.shards.writer import write_shards  # noqa: E402

__all__ = [
    "DEFAULT_SETS", "DEFAULT_SPLITS", "ShardDataset", "ShardError", "ShardInfo", "decode_image",
    "load_index", "resolve_shards", "write_shards",
]
