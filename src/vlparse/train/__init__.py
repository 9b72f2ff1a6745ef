"""Training infrastructure: optimizer and schedule, checkpoints, distributed setup, logging and
run records. The loop itself is :mod:`vlparse.train.loop`.

Import submodules directly (``from vlparse.train.checkpoint import save_checkpoint``); this
package re-exports the most used names.
"""

from vlparse.train.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap_model,
)
from vlparse.train.distributed import DistInfo, init_distributed, wrap_ddp
from vlparse.train.logging import RunLogger, plot_curves, read_jsonl
from vlparse.train.optim import build_optimizer, build_scheduler, clip_grad_norm, lr_factor
from vlparse.train.runinfo import collect_run_info, write_run_info

__all__ = [
    "DistInfo",
    "RunLogger",
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
    "unwrap_model",
    "write_run_info",
    "wrap_ddp",
]
