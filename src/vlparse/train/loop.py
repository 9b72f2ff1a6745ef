"""One training loop for a single process and for ``torchrun`` DDP.

The loop owns the optimizer, the schedule, mixed precision, gradient accumulation, logging,
checkpoints and resumption; what a step computes comes from ``step_fn``. A run resumed from a
checkpoint continues bit for bit on the CPU: weights, optimizer and scheduler state, RNG states
and the position in the data order are restored, and every sample's randomness is keyed by
``(seed, epoch, index)`` in the data set.

Bad images: the data set replaces a missing or corrupt image and reports it in the batch's
``"skipped"`` list; the loop names each in the log and stops the run (keeping everything already
written) when more than ``data.max_bad_fraction`` of the images seen are bad, checked once at least
``min_images_for_bad_check`` images have been seen and at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from vlparse.config import DataConfig, OptimConfig, TrainConfig
from vlparse.data.sampler import ResumableSampler
from vlparse.errors import BadDataError
from vlparse.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from vlparse.train.distributed import DistInfo, all_reduce_sum, barrier
from vlparse.train.logging import RunLogger
from vlparse.train.optim import build_optimizer, build_scheduler, clip_grad_norm
from vlparse.train.protocol import StepOutput
from vlparse.train.runinfo import write_run_info

__all__ = ["LoopResult", "fit"]

StepFn = Callable[[nn.Module, dict[str, Any], Callable[[Tensor], Tensor], int], "StepOutput"]
"""``step_fn(model, batch, reduce_count, step)``: ``step`` counts the optimizer steps taken
before this batch (0 for the first; the same for every micro-batch of a step, and restored on
``--resume``), for losses whose weights follow a schedule."""


@dataclass
class LoopResult:
    step: int
    epoch: int
    images_seen: int
    bad_images: int
    run_dir: Path
    last_checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)


class _StepModule(nn.Module):
    """Runs ``step_fn`` inside ``forward`` so that DDP sees the whole step."""

    def __init__(self, model: nn.Module, step_fn: StepFn, reduce_count: Callable) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn
        self.reduce_count = reduce_count

    def forward(self, batch: dict[str, Any], step: int) -> tuple[Tensor, StepOutput]:
        out = self.step_fn(self.model, batch, self.reduce_count, step)
        return out.loss, out


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


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
) -> LoopResult:
    """Train ``model`` on ``dataset`` with ``step_fn`` and return where the run stopped.

    ``model`` must offer ``param_groups(lr, visual_lr, weight_decay)``. ``train_cfg.batch_size``
    is the global batch in images, split over processes and ``grad_accum`` micro-batches.
    """
    run_dir = Path(run_dir)
    device = dist.device
    world = dist.world_size
    micro = train_cfg.batch_size // (train_cfg.grad_accum * world)
    if micro < 1 or micro * train_cfg.grad_accum * world != train_cfg.batch_size:
        raise ValueError(
            f"train.batch_size={train_cfg.batch_size} must be a multiple of "
            f"grad_accum ({train_cfg.grad_accum}) x processes ({world})"
        )
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()

    model.to(device)
    groups = model.param_groups(optim_cfg.lr, optim_cfg.visual_lr, optim_cfg.weight_decay)
    optimizer = build_optimizer(groups, optim_cfg)
    sampler = ResumableSampler(
        len(dataset),
        micro,
        num_replicas=world,
        rank=dist.rank,
        seed=train_cfg.seed,
        shuffle=True,
        drop_last=True,
    )
    micro_per_epoch = len(sampler)
    steps_per_epoch = micro_per_epoch // train_cfg.grad_accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"the data set has {len(dataset)} images, fewer than one step of "
            f"{train_cfg.batch_size}; lower train.batch_size"
        )
    scheduler = build_scheduler(optimizer, optim_cfg, steps_per_epoch)
    total_steps = train_cfg.max_steps or math.ceil(train_cfg.epochs * steps_per_epoch)

    step = epoch = batch_in_epoch = images_seen = bad_images = 0
    last_ckpt: Path | None = None
    last_ckpt_step = -1
    if resume:
        try:
            ckpt = find_checkpoint(run_dir)
        except FileNotFoundError:
            ckpt = None
        if ckpt is not None:
            extra = load_checkpoint(ckpt, model, optimizer, scheduler, map_location=device)
            step, epoch = int(extra["step"]), int(extra["epoch"])
            batch_in_epoch = int(extra["batch_in_epoch"])
            images_seen, bad_images = int(extra["images_seen"]), int(extra["bad_images"])
            last_ckpt, last_ckpt_step = ckpt, step
    if dist.is_main:
        write_run_info(run_dir, config_dict)
    logger = RunLogger(
        run_dir,
        enabled=dist.is_main,
        tensorboard=True,
        progress_total=total_steps,
        progress_initial=step,
        desc=desc,
        progress=train_cfg.progress,
    )
    if resume and last_ckpt is not None:
        logger.info(
            f"resumed from {last_ckpt} at step {step} (epoch {epoch}, batch {batch_in_epoch})"
        )
    elif resume:
        logger.warning(f"--resume: no checkpoint under {run_dir}; starting from step 0")
    logger.info(
        f"{len(dataset)} images, {steps_per_epoch} steps/epoch, {total_steps} steps, "
        f"global batch {train_cfg.batch_size} = {world} x {train_cfg.grad_accum} x {micro}"
    )

    amp = _autocast_dtype(train_cfg.precision, device)
    reduce_count = (lambda t: all_reduce_sum(t) / world) if world > 1 else (lambda t: t)
    runner: nn.Module = _StepModule(model, step_fn, reduce_count)
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(
            runner,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
    model.train()

    def checkpoint() -> Path | None:
        nonlocal last_ckpt_step
        last_ckpt_step = step
        extra = {
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "images_seen": images_seen,
            "bad_images": bad_images,
        }
        path = None
        if dist.is_main:
            path = save_checkpoint(
                run_dir, step, model, optimizer, scheduler, extra, keep=train_cfg.keep_checkpoints
            )
            logger.info(f"checkpoint {path}")
        barrier()
        return path

    window: dict[str, list[float]] = {}  # key -> [sum, micro-batches that reported it]
    window_counts: dict[str, int] = {}
    t_window, img_window = time.perf_counter(), 0
    final_metrics: dict[str, float] = {}
    t_start = time.perf_counter()
    out_of_time = False

    while step < total_steps:
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler.set_start_batch(batch_in_epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_fn,
            num_workers=data_cfg.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        accum = 0
        for batch in loader:
            for path, reason in batch.pop("skipped", []):
                logger.warning(f"bad image skipped: {path} ({reason})")
                bad_images += 1
            batch = _to_device(batch, device)
            accum += 1
            last_micro = accum == train_cfg.grad_accum
            sync = last_micro or world == 1
            ctx = runner.no_sync() if (world > 1 and not sync) else nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss, out = runner(batch, step)
                (loss / train_cfg.grad_accum).backward()
            for k, v in out.scalars.items():
                acc = window.setdefault(k, [0.0, 0])
                acc[0] += v
                acc[1] += 1
            for k, v in out.counts.items():
                window_counts[k] = window_counts.get(k, 0) + v
            img_window += batch_images(batch) * world
            batch_in_epoch += 1
            if not last_micro:
                continue
            accum = 0
            gnorm = clip_grad_norm(model.parameters(), optim_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            images_seen += train_cfg.batch_size
            logger.progress(1, {"loss": f"{window['loss'][0] / window['loss'][1]:.3f}"}
                            if "loss" in window else {})

            if step % train_cfg.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t_window
                metrics = {k: total / n for k, (total, n) in window.items()}
                for k in [k for k in window_counts if k.endswith("_total")]:
                    name = k[: -len("_total")]
                    if window_counts[k]:
                        metrics[f"{name}_acc"] = window_counts[f"{name}_correct"] / window_counts[k]
                metrics.update(
                    lr=optimizer.param_groups[-1]["lr"],
                    epoch=epoch,
                    images_per_s=img_window / elapsed,
                )
                if gnorm is not None:
                    metrics["grad_norm"] = gnorm
                logger.log(step, metrics)
                logger.progress(
                    0,
                    {
                        "loss": f"{metrics.get('loss', float('nan')):.3f}",
                        "img/s": f"{metrics['images_per_s']:.0f}",
                    },
                )
                window, window_counts = {}, {}
                t_window, img_window = time.perf_counter(), 0

            _check_bad(
                bad_images,
                images_seen,
                data_cfg,
                min_images_for_bad_check,
                world,
                logger,
                final=False,
            )
            if train_cfg.ckpt_every and step % train_cfg.ckpt_every == 0:
                last_ckpt = checkpoint() or last_ckpt
            if eval_fn is not None and train_cfg.eval_every and step % train_cfg.eval_every == 0:
                if dist.is_main:
                    final_metrics = eval_fn(model)
                    logger.log(step, {f"val/{k}": v for k, v in final_metrics.items()})
                barrier()
            if train_cfg.max_minutes is not None:
                flag = torch.tensor(
                    [float(time.perf_counter() - t_start > 60 * train_cfg.max_minutes)]
                )
                out_of_time = bool(all_reduce_sum(flag) > 0) if world > 1 else bool(flag)
            if step >= total_steps or out_of_time:
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            continue
        # left the data loop because the run is done
        if batch_in_epoch >= micro_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        break
    if out_of_time:
        logger.info(f"train.max_minutes={train_cfg.max_minutes} reached at step {step}")

    _check_bad(bad_images, images_seen, data_cfg, 0, world, logger, final=True)
    if last_ckpt_step != step:
        last_ckpt = checkpoint() or last_ckpt
    if eval_fn is not None and dist.is_main:
        final_metrics = eval_fn(model)
        logger.log(step, {f"val/{k}": v for k, v in final_metrics.items()})
    barrier()
    logger.close()
    return LoopResult(step, epoch, images_seen, bad_images, run_dir, last_ckpt, final_metrics)


def batch_images(batch: dict[str, Any]) -> int:
    """Images in a batch (its first tensor's leading size)."""
    for v in batch.values():
        if isinstance(v, Tensor):
            return int(v.shape[0])
    return 0


def _check_bad(
    bad: int, seen: int, cfg: DataConfig, min_seen: int, world: int, logger: RunLogger, final: bool
) -> None:
    counts = torch.tensor([float(bad), float(seen)])
    if world > 1:
        counts = all_reduce_sum(counts)
        counts[1] /= world  # images_seen already counts the global batch on every rank
    bad_total, seen_total = float(counts[0]), float(counts[1])
    attempted = seen_total + bad_total
    if attempted == 0 or (attempted < min_seen and not final):
        return
    frac = bad_total / attempted
    if frac > cfg.max_bad_fraction:
        msg = (
            f"{int(bad_total)} of {int(attempted)} images were bad ({frac:.1%}), more than "
            f"data.max_bad_fraction={cfg.max_bad_fraction:.1%}; the log names each one. "
            "Checkpoints and logs written so far are kept."
        )
        logger.warning(msg)
        logger.close()
        raise BadDataError(msg)
