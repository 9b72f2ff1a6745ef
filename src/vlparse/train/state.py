"""What a training run carries from step to step and hands back: the loop's position (stored in
every checkpoint) and the result of a run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["LoopState", "TrainResult", "batch_images"]


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
    micro-batch within it, images seen and bad images (both over all processes)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    bad_images: int = 0

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
