"""``fit``: the trainer called with functions instead of a task object.

For callers written before :class:`~vlparse.train.protocol.TrainTask` (``run_pretrain`` until
pre-training becomes a task): the model, data set, collate, step and evaluation functions are
wrapped in a task and run by :class:`~vlparse.train.trainer.Trainer`, which does everything
else (see there). New code implements a task and calls ``Trainer(...).fit(task)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import DataConfig, OptimConfig, TrainConfig
from vlparse.train.distributed import DistInfo
from vlparse.train.protocol import StepContext, StepOutput
from vlparse.train.trainer import Trainer, TrainResult

__all__ = ["fit"]

StepFn = Callable[[nn.Module, dict[str, Any], Callable[[Tensor], Tensor], int], StepOutput]
"""``step_fn(model, batch, reduce_count, step)``, ``step`` as in
:class:`~vlparse.train.protocol.StepContext`."""


@dataclass
class _FunctionTask:
    """A :class:`~vlparse.train.protocol.TrainTask` made of a built model and functions."""

    model: nn.Module
    dataset: Dataset
    collate_fn: Callable
    step_fn: StepFn
    eval_fn: Callable[[nn.Module], dict[str, float]] | None
    name: str
    find_unused_parameters: bool

    def build_model(self) -> nn.Module:
        return self.model

    def train_dataset(self) -> Dataset:
        return self.dataset

    def eval_dataset(self) -> Any:
        return self.eval_fn  # not a data set, but None exactly when there is nothing to evaluate

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate_fn(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        return self.step_fn(model, batch, ctx.reduce_count, ctx.step)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return self.eval_fn(model) if self.eval_fn is not None else {}

    def curve_keys(self) -> list[str]:
        return []  # the caller plots its own curves


def fit(
    *,
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    step_fn: StepFn,
    optim_cfg: OptimConfig,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    run_dir: Path,
    dist: DistInfo,
    config_dict: dict[str, Any],
    resume: bool = False,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    find_unused_parameters: bool = False,
    desc: str = "train",
    min_images_for_bad_check: int = 200,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``step_fn`` (see :class:`Trainer`) and return where
    the run stopped. ``model`` offers ``param_groups(optim)``; ``train_cfg.batch_size`` is the
    global batch, split over processes and ``grad_accum`` micro-batches."""
    task = _FunctionTask(model, dataset, collate_fn, step_fn, eval_fn, desc,
                         find_unused_parameters)
    trainer = Trainer(optim_cfg, train_cfg, data_cfg, run_dir, dist=dist, config=config_dict,
                      resume=resume, overwrite=overwrite, evaluate=eval_fn is not None, desc=desc,
                      min_images_for_bad_check=min_images_for_bad_check)
    return trainer.fit(task)
