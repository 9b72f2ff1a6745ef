"""What a training run carries from step to step and hands back: the loop's position (stored in
every checkpoint), what a streamed data set offers to resume its epoch, and the result of a
run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["LoopState", "ResumableStream", "TrainResult", "batch_images"]


@runtime_checkable
class ResumableStream(Protocol):
    """An ``IterableDataset`` the trainer can run and resume (e.g.
    :class:`~vlparse.data.shards.ShardDataset`): it splits itself over processes and DataLoader
    workers, knows its batches per epoch, and continues an epoch from the samples each worker
    had yielded. ``len()``: the samples this process yields per epoch."""

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def resume(self, epoch: int, consumed: Sequence[int], exact: bool = True) -> None: ...

    def num_batches(self, batch_size: int, num_workers: int, drop_last: bool = False) -> int: ...

    def worker_progress(self, batches: int, batch_size: int, num_workers: int,
                        drop_last: bool = False) -> list[int]: ...


@dataclass
class TrainResult:
    """Where a run stopped: optimizer steps, epochs completed, images seen and bad (over all
    processes), the last checkpoint, the final evaluation, the exported model and the summary
    written to ``summary.json``."""

    step: int
    epoch: int
    images_seen: int
    bad_images: int
    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    model_dir: Path | None = None
    wall_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopState:
    """The loop's position, stored in every checkpoint: optimizer steps taken, the epoch and the
    micro-batches consumed within it, images seen and bad images (both over all processes), and
    the data layout that consumed them (processes, DataLoader workers, micro-batch size: a
    streamed epoch resumes only under the same layout; 0 in checkpoints that predate it)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    bad_images: int = 0
    world_size: int = 0
    num_workers: int = 0
    micro_batch: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in d.items() if k in names})


def batch_images(batch: dict[str, Any]) -> int:
    """Images in a batch (its first tensor's leading size)."""
    for v in batch.values():
        if isinstance(v, Tensor):
            return int(v.shape[0])
    return 0
