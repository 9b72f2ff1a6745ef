"""What the trainer asks of a task: the contract between :mod:`vlparse.train` and every task
(pre-training of either model family, each fine-tuning task).

The trainer owns the optimizer, the schedule, precision, accumulation, DDP, logging,
checkpoints, resumption, evaluation and stopping; a task owns what a step computes. A new model
family or task is a new class that satisfies :class:`TrainTask`, not an edit of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["StepOutput", "StepContext", "TrainTask", "WritesRunFiles", "Summarizes"]


@dataclass
class StepOutput:
    """What a task's step returns: the loss to back-propagate, scalars to log and integer counts
    (``*_correct`` / ``*_total`` pairs become accuracies in the log). Scalars and counts may be
    0-dim tensors on the device: the trainer reads them back once per log window, so a step
    that hands tensors never waits for the device."""

    loss: Tensor
    scalars: dict[str, float | Tensor] = field(default_factory=dict)
    counts: dict[str, int | Tensor] = field(default_factory=dict)


@dataclass
class StepContext:
    """What the trainer tells a step.

    Attributes:
        step: optimizer steps taken before this batch (0 for the first; the same for every
            micro-batch of a step, and restored on ``--resume``), for loss weights that follow a
            schedule.
        reduce_count: turns a count of this process into the mean over processes, so that a
            loss normalised by it makes a DDP step equal a one-process step over the global
            batch (the identity in one process).
    """

    step: int
    reduce_count: Callable[[Tensor], Tensor]


@runtime_checkable
class TrainTask(Protocol):
    """A task the trainer can run.

    Attributes:
        name: ``"pretrain"``, ``"retrieval"``, ``"vqa"``, ...
        find_unused_parameters: parameters may get no gradient in a step (DDP must look for
            them).

    A task may also have a ``processor`` attribute (its image transform and tokenizer): the
    trainer saves it beside the model it exports at the end of a run (``run/model``).
    """

    name: str
    find_unused_parameters: bool

    def build_model(self) -> nn.Module:
        """The model to train, with ``param_groups(optim)`` and ``save_pretrained(dir)``."""
        ...

    def train_dataset(self) -> Dataset:
        """Training items; each carries ``index`` and a ``skipped`` list of bad images."""
        ...

    def eval_dataset(self) -> Dataset | None:
        """Held-out items for :meth:`evaluate`, or ``None``."""
        ...

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items -> batch (picklable: DataLoader workers call it)."""
        ...

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        """The loss of one micro-batch."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Held-out metrics of ``model``."""
        ...

    def curve_keys(self) -> list[str]:
        """Logged keys that ``loss_curves.png`` shows."""
        ...


@runtime_checkable
class WritesRunFiles(Protocol):
    """Optional: a task with files of its own in the run folder (e.g. a fine-tuning task's
    ``task_state.json``, the answer vocabulary), written once the trainer holds the folder and
    the model is built."""

    def run_files(self) -> dict[str, str]:
        """``{file name: text}``."""
        ...


@runtime_checkable
class Summarizes(Protocol):
    """Optional: a task that adds its own entries to ``summary.json`` (e.g. ``val`` and
    ``init`` of a fine-tuning run) beside the trainer's (steps, images, checkpoint, ...)."""

    def summary(self, result: Any) -> dict[str, Any]:
        """Entries for ``summary.json`` from the trainer's ``TrainResult``."""
        ...
