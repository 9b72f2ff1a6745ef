"""Training infrastructure: the trainer (:mod:`vlparse.train.trainer`) and the task protocol it
runs (:mod:`vlparse.train.protocol`), optimizer and schedule, training state in checkpoints,
distributed setup, logging and run records.

Import submodules directly (``from vlparse.train.trainer import Trainer``); this package
re-exports the most used names.
"""

from vlparse.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap_model,
)
from vlparse.train.distributed import DistInfo, init_distributed
from vlparse.train.logging import LogWindow, RunLogger, plot_curves, read_jsonl
from vlparse.train.optim import build_optimizer, build_scheduler, clip_grad_norm, lr_factor
from vlparse.train.protocol import StepContext, StepOutput, TrainTask
from vlparse.train.runinfo import collect_run_info, write_run_info
from vlparse.train.trainer import Trainer, TrainResult, train

__all__ = [
    "DistInfo",
    "LogWindow",
    "RunLogger",
    "StepContext",
    "StepOutput",
    "TrainResult",
    "TrainTask",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "clip_grad_norm",
    "collect_run_info",
    "find_checkpoint",
    "init_distributed",
    "load_checkpoint",
    "load_model_weights",
    "lr_factor",
    "plot_curves",
    "read_jsonl",
    "save_checkpoint",
    "train",
    "unwrap_model",
    "write_run_info",
]
