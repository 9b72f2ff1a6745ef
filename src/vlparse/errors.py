"""The exceptions users catch.

Every error that a user can cause (a wrong config key or value, a malformed annotation file, a
missing manifest entry, a bad image, a run folder in use, a checkpoint that cannot be read ...)
derives from :class:`VlparseError`; the command line reports these as one line
``vlparse: error: ...`` with exit status 2, and lets anything else surface as a traceback (a bug).
"""

from __future__ import annotations

import os

__all__ = [
    "VlparseError",
    "ConfigError",
    "DataFormatError",
    "ManifestError",
    "BadImageError",
    "BadDataError",
    "WrongTaskError",
    "EmptyDatasetError",
    "CheckpointError",
    "LegacyCheckpointError",
    "RunFolderError",
    "RunFolderInUseError",
    "PretrainedUnavailableError",
    "TaskNotImplementedError",
    "AblationMismatchError",
    "OptionalDependencyError",
    "ShardError",
    "ProbeNotApplicableError",
]


class VlparseError(Exception):
    """Base of the errors a user can cause and fix; the message says what, where and what to do."""


class ConfigError(VlparseError, ValueError):
    """A config value or key is wrong; the message says which and what is allowed."""


class DataFormatError(VlparseError, ValueError):
    """An annotation file does not follow its format; the message names file, place and field."""


class ManifestError(VlparseError, ValueError):
    """The manifest is missing, malformed or lacks the requested entry."""


class BadImageError(VlparseError):
    """An image file is missing, unreadable, corrupt or truncated.

    Attributes:
        path: the image file.
        reason: what was wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str = "") -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"bad image {self.path}: {reason}" if reason else self.path)

    def __reduce__(self):  # keep both fields when sent between DataLoader worker processes
        return (type(self), (self.path, self.reason))


class BadDataError(VlparseError, RuntimeError):
    """Too many bad images, or a bad image with ``data.on_error=raise``."""


class WrongTaskError(VlparseError, ValueError):
    """A method was called on a model loaded from a run of another task."""


class EmptyDatasetError(VlparseError, ValueError):
    """The data sets a run asks for hold no example (or fewer than one batch)."""


class CheckpointError(VlparseError):
    """A checkpoint cannot be read: missing, truncated or corrupt files, or another format.

    Attributes:
        path: the file (or folder) that could not be read.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class LegacyCheckpointError(CheckpointError):
    """A checkpoint of the old format, whose state is a pickle: it is refused, never unpickled
    (a pickle can run code); the message says how to convert it when it is trusted."""


class RunFolderError(VlparseError):
    """A run folder cannot be used as asked: it holds another run (and neither ``--resume`` nor
    ``--overwrite`` was given), or it is not a folder."""


class RunFolderInUseError(RunFolderError):
    """Another live process holds the run folder's lock."""


class PretrainedUnavailableError(VlparseError, RuntimeError):
    """Pretrained weights or a tokenizer named by the config cannot be had (offline and not in
    the local cache, or no such model)."""


class TaskNotImplementedError(VlparseError, NotImplementedError):
    """A fine-tuning task is registered but its module is not written yet."""


class AblationMismatchError(ConfigError):
    """An ablation folder's ``ablation.json`` was written with other experiment arguments."""


class OptionalDependencyError(VlparseError, ImportError):
    """An option needs a package that is not installed (e.g. FP8 training needs torchao)."""


class ShardError(VlparseError, ValueError):
    """Tar shards cannot be used as asked: a shard is missing (named) or not in its folder's
    index, the index is incomplete, the folder holds shards written with other arguments, or the
    ``webdataset`` package that reads and writes them is not installed."""


class ProbeNotApplicableError(VlparseError, ValueError):
    """A probe asked of a model family it does not apply to (e.g. the modality NMI of FIBER)."""
