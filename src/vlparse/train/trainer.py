"""The trainer: one loop for every task, in one process or under ``torchrun`` DDP.

It runs any object that satisfies :class:`~vlparse.train.protocol.TrainTask`::

    result = Trainer(cfg.optim, cfg.train, cfg.data, "runs/x", config=to_dict(cfg)).fit(task)
    result = train(task, cfg, "runs/x", resume=True)          # the same, from a whole config

The trainer owns the run folder (claimed with a lock; see :mod:`vlparse.io.runs`), the
optimizer and schedule (groups from ``model.param_groups(optim)``), precision, gradient
accumulation, DDP, logging, checkpoints and resumption, evaluation, stopping, and the end of a
run: ``model/`` (``model.save_pretrained``), ``loss_curves.png`` (``task.curve_keys()``) and
``summary.json``. A task owns what a step computes. The parts, in order of a step:

- :meth:`Trainer._micro_step`: forward (inside DDP, so that it sees the whole step), backward
  of ``loss / grad_accum``;
- :meth:`Trainer._optimizer_step`: clip, optimizer and scheduler step;
- :meth:`Trainer._after_step`: the log window (:class:`~vlparse.train.logging.LogWindow`), the
  stop rules, checkpoints, periodic evaluation.

A resumed run continues bit for bit on the CPU: weights, optimizer and scheduler state, each
process's RNG state and the position in the data order are restored, and every sample's
randomness is keyed by ``(seed, epoch, index)`` in the data set. The data come as a map-style
data set in the order of a sampler, or as a stream of tar shards that splits itself over
processes and workers (:mod:`vlparse.train.feed` says how each is cut into steps and resumed).

Stop rules: ``train.max_steps`` (else ``train.epochs``), ``train.max_minutes`` and bad data. The
data set replaces a missing or corrupt image and reports it in the batch's ``"skipped"`` list; the
trainer names each in the log. More than ``data.max_bad_fraction`` bad images stops the run once
at least ``min_images_for_bad_check`` images were attempted, at the periodic check as at the end;
a checkpoint of the current step is written before that verdict, so no finished step is lost. The
time and bad-data flags are agreed between processes once per log window (one small all-reduce on
the process's device), not every step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vlparse.config import DataConfig, OptimConfig, TrainConfig
from vlparse.data.sampler import stable_seed
from vlparse.errors import BadDataError, RunFolderError
from vlparse.io.checkpoint import export_pretrained, unwrap_model
from vlparse.io.files import atomic_write_json, atomic_write_text
from vlparse.io.runs import RunLock, open_run_folder
from vlparse.train.checkpoint import (
    apply_checkpoint,
    read_resumable,
    save_training_state,
)
from vlparse.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from vlparse.train.feed import Feed, check_layout, plan_feed
from vlparse.train.logging import LogWindow, RunLogger, plot_curves, truncate_jsonl
from vlparse.train.optim import build_optimizer, build_scheduler, clip_grad_norm, param_groups_of
from vlparse.train.protocol import (
    StepContext,
    StepOutput,
    Summarizes,
    TrainTask,
    WritesRunFiles,
)
from vlparse.train.runinfo import config_changes, write_run_info
from vlparse.train.state import LoopState, TrainResult, batch_images
from vlparse.utils import autocast, seed_everything

__all__ = ["Trainer", "TrainResult", "LoopState", "train"]


class _StepModule(nn.Module):
    """Runs the task's step inside ``forward`` so that DDP sees the whole step."""

    def __init__(self, model: nn.Module, task: TrainTask, reduce_count) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.reduce_count = reduce_count

    def forward(self, batch: dict[str, Any], step: int) -> tuple[Tensor, StepOutput]:
        out = self.task.step(self.model, batch, StepContext(step, self.reduce_count))
        return out.loss, out


@dataclass
class _Run:
    """What one :meth:`Trainer.fit` works on."""

    task: TrainTask
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    feed: Feed
    total_steps: int
    logger: RunLogger
    state: LoopState
    runner: nn.Module | None = None
    window: LogWindow = field(default_factory=LogWindow)
    t_start: float = field(default_factory=time.perf_counter)
    bad_new: int = 0  # bad images of this process since the last agreement between processes
    out_of_time: bool = False
    grad_norm: Tensor | float | None = None
    last_ckpt: Path | None = None
    last_ckpt_step: int = -1
    final_metrics: dict[str, float] = field(default_factory=dict)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()}


class Trainer:
    """Trains a :class:`~vlparse.train.protocol.TrainTask` into ``run_dir``.

    Args:
        optim, train, data: the config sections of the run.
        run_dir: the run folder; a new run needs it empty (or missing), see ``resume`` and
            ``overwrite``.
        dist: where this process stands (default: :func:`init_distributed`).
        config: the whole resolved config as a dict, saved as ``config.yaml``.
        resume: continue from the newest intact checkpoint in ``run_dir``.
        overwrite: move a previous run in ``run_dir`` aside and start anew.
        evaluate: run ``task.evaluate`` (every ``train.eval_every`` steps and at the end).
        desc: the progress bar's label (default: the task's name).
        min_images_for_bad_check: images to attempt before the bad-data fraction can stop a run.
    """

    def __init__(
        self,
        optim: OptimConfig,
        train: TrainConfig,
        data: DataConfig,
        run_dir: str | Path,
        *,
        dist: DistInfo | None = None,
        config: dict[str, Any] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        evaluate: bool = True,
        desc: str | None = None,
        min_images_for_bad_check: int = 200,
    ) -> None:
        self.optim, self.train, self.data = optim, train, data
        self.run_dir = Path(run_dir)
        self.dist = dist or init_distributed()
        self.config = config if config is not None else {
            "optim": dataclasses.asdict(optim), "train": dataclasses.asdict(train),
            "data": dataclasses.asdict(data)}
        self.resume, self.overwrite, self.evaluate = resume, overwrite, evaluate
        self.desc = desc
        self.min_images_for_bad_check = min_images_for_bad_check

    # ----------------------------------------------------------------- the run

    def fit(self, task: TrainTask) -> TrainResult:
        """Train ``task`` until a stop rule ends the run; returns where it stopped."""
        t0 = time.perf_counter()
        lock = self._claim_run_dir()
        try:
            run = self._setup(task)
            try:
                while run.state.step < run.total_steps and not run.out_of_time:
                    self._train_epoch(run)
                return self._finish(run, t0)
            finally:
                run.logger.close()
        finally:
            if lock is not None:
                lock.release()

    def _claim_run_dir(self) -> RunLock | None:
        """The main process takes the run folder's lock (refusing a folder that holds another
        run); every process learns whether it could, and all fail together when not."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                lock = open_run_folder(self.run_dir, resume=self.resume,
                                       overwrite=self.overwrite)
            except Exception as e:  # re-raised below, after telling the other processes
                error = e
        failed = torch.tensor([float(error is not None)], device=self.dist.device)
        if all_reduce_sum(failed).item() > 0:
            if error is not None:
                raise error
            raise RunFolderError(f"the main process could not claim {self.run_dir}")
        return lock

    def _setup(self, task: TrainTask) -> _Run:
        dist, tr = self.dist, self.train
        seed_everything(tr.seed)  # the same initial weights in every process
        model = task.build_model().to(dist.device)
        seed_everything(tr.seed, dist.rank)  # then each process draws its own dropout
        feed = plan_feed(task.train_dataset(), tr, self.data, dist.world_size, dist.rank)
        steps_per_epoch = feed.steps_per_epoch
        optimizer = build_optimizer(param_groups_of(model, self.optim), self.optim)
        scheduler = build_scheduler(optimizer, self.optim, steps_per_epoch)
        total = tr.max_steps or math.ceil(tr.epochs * steps_per_epoch)
        messages: list[str] = []
        state, ckpt_path = self._restore(model, optimizer, scheduler, messages)
        check_layout(state, feed, dist.world_size)
        if dist.is_main:
            messages += self._write_run_files(task)
        logger = RunLogger(self.run_dir, enabled=dist.is_main, tensorboard=True,
                           progress_total=total, progress_initial=state.step,
                           desc=self.desc or task.name, progress=tr.progress,
                           purge_step=state.step + 1 if self.resume else None)
        for msg in messages:
            if msg.startswith("--resume"):
                logger.warning(msg)
            else:
                logger.info(msg)
        run = _Run(task, model, optimizer, scheduler, feed, total, logger, state,
                   last_ckpt=ckpt_path, last_ckpt_step=state.step if ckpt_path else -1)
        run.runner = self._runner(run)
        logger.info(f"{feed.examples(dist.world_size)} examples, {steps_per_epoch} steps/epoch, "
                    f"{total} steps, global batch {tr.batch_size} = {dist.world_size} x "
                    f"{tr.grad_accum} x {feed.micro}")
        model.train()
        return run

    def _runner(self, run: _Run) -> nn.Module:
        world = self.dist.world_size
        reduce_count = (lambda t: all_reduce_sum(t) / world) if world > 1 else (lambda t: t)
        runner: nn.Module = _StepModule(run.model, run.task, reduce_count)
        if world > 1:
            device = self.dist.device
            runner = nn.parallel.DistributedDataParallel(
                runner, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=run.task.find_unused_parameters)
        return runner

    # ----------------------------------------------------------------- resume and records

    def _restore(self, model, optimizer, scheduler, messages: list[str]):
        """``(LoopState, checkpoint folder)`` after ``--resume`` (a fresh state without it)."""
        if not self.resume:
            return LoopState(), None
        ckpt = read_resumable(self.run_dir, messages.append)
        if ckpt is None:
            messages.append(f"--resume: no checkpoint under {self.run_dir}; starting from step 0")
            state = LoopState()
        else:
            rank = self.dist.rank
            extra = apply_checkpoint(ckpt, model, optimizer, scheduler, rng_index=rank)
            state = LoopState.from_dict(extra)
            messages.append(f"resumed from {ckpt.path} at step {state.step} (epoch "
                            f"{state.epoch}, batch {state.batch_in_epoch})")
            if rank >= len(ckpt.rng):
                messages.append(f"the checkpoint holds the RNG states of {len(ckpt.rng)} "
                                "processes; the others start from their fresh seeds")
        if self.dist.is_main:
            dropped = truncate_jsonl(self.run_dir / "log.jsonl", state.step)
            if dropped:
                messages.append(f"log.jsonl: dropped {dropped} records after step {state.step}, "
                                "the step the run resumes from")
        return state, None if ckpt is None else ckpt.path

    def _write_run_files(self, task: TrainTask) -> list[str]:
        """``config.yaml`` and ``run_info.json`` (or their ``resume-<n>`` versions), and the
        task's own files; returns messages for the log."""
        messages = []
        if self.resume and (self.run_dir / "config.yaml").is_file():
            changes = config_changes(self.run_dir / "config.yaml", self.config)
            if changes:
                messages.append("--resume with a changed config: " + "; ".join(changes))
        write_run_info(self.run_dir, self.config)
        if isinstance(task, WritesRunFiles):
            for name, text in task.run_files().items():
                atomic_write_text(self.run_dir / name, text)
        return messages

    # ----------------------------------------------------------------- the loop

    def _loader(self, run: _Run) -> DataLoader:
        epoch = run.state.epoch
        # a generator of its own: the loader's draw of its workers' base seed must not move
        # the global RNG, which a resumed run restores (dropout would differ after a resume)
        gen = torch.Generator().manual_seed(stable_seed(self.train.seed, epoch, self.dist.rank))
        return run.feed.loader(run.state, run.task.collate, gen,
                               pin_memory=self.dist.device.type == "cuda",
                               exact=self.data.shard_resume == "exact")

    def _train_epoch(self, run: _Run) -> None:
        """Steps from the loop state's position to the end of its epoch, or until a stop rule.
        Micro-batches beyond the last whole step of an epoch are not used."""
        accum, s = self.train.grad_accum, run.state
        usable = run.feed.steps_per_epoch * accum
        if s.batch_in_epoch >= usable:  # a checkpoint written at the very end of an epoch
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        for batch in self._loader(run):
            s.batch_in_epoch += 1
            last_micro = s.batch_in_epoch % accum == 0
            self._micro_step(run, batch, last_micro)
            if not last_micro:
                continue
            end_of_epoch = s.batch_in_epoch >= usable
            if end_of_epoch:
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            self._optimizer_step(run)
            if self._after_step(run) or end_of_epoch:
                return

    def _micro_step(self, run: _Run, batch: dict[str, Any], last_micro: bool) -> None:
        """Forward and backward of one micro-batch (gradients synchronised on the last)."""
        for path, reason in batch.pop("skipped", []):
            run.logger.warning(f"bad image skipped: {path} ({reason})")
            run.bad_new += 1
        batch = _to_device(batch, self.dist.device)
        world = self.dist.world_size
        sync = last_micro or world == 1
        with run.runner.no_sync() if not sync else nullcontext():
            with autocast(self.train.precision, self.dist.device):
                loss, out = run.runner(batch, run.state.step)
            (loss / self.train.grad_accum).backward()
        run.window.add(out.scalars, out.counts, batch_images(batch) * world)

    def _optimizer_step(self, run: _Run) -> None:
        # nothing here reads a number back from the device: the grad norm stays a tensor and the
        # loss reaches the progress bar at the log window (_log)
        run.grad_norm = clip_grad_norm(run.model.parameters(), self.optim.grad_clip,
                                       as_tensor=True)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.state.step += 1
        run.state.images_seen += self.train.batch_size
        run.logger.progress(1)

    def _after_step(self, run: _Run) -> bool:
        """Log window, stop rules, checkpoint and evaluation after a step; True: stop now."""
        tr, step = self.train, run.state.step
        if step % tr.log_every == 0 or step == run.total_steps:
            self._log(run)
            self._agree(run)
            self._check_bad(run, final=False)
        if tr.ckpt_every and step % tr.ckpt_every == 0:
            self._checkpoint(run)
        if self.evaluate and tr.eval_every and step % tr.eval_every == 0:
            self._evaluate(run)
        return step >= run.total_steps or run.out_of_time

    def _log(self, run: _Run) -> None:
        metrics = run.window.metrics()
        metrics.update(lr=run.optimizer.param_groups[-1]["lr"], epoch=run.state.epoch)
        if run.grad_norm is not None:
            metrics["grad_norm"] = float(run.grad_norm)
        run.logger.log(run.state.step, metrics)
        run.logger.progress(0, {"loss": f"{metrics.get('loss', float('nan')):.3f}",
                                "img/s": f"{metrics['images_per_s']:.0f}"})
        run.window.reset()

    # ----------------------------------------------------------------- stop rules

    def _agree(self, run: _Run) -> None:
        """Sum the new bad images over the processes and agree on the time limit: one
        all-reduce of a small tensor on the process's device (a collective)."""
        limit = self.train.max_minutes
        late = limit is not None and time.perf_counter() - run.t_start > 60 * limit
        flags = torch.tensor([float(run.bad_new), float(late)], device=self.dist.device)
        flags = all_reduce_sum(flags).tolist()
        run.state.bad_images += int(flags[0])
        run.bad_new = 0
        if flags[1] > 0 and not run.out_of_time:
            run.out_of_time = True
            run.logger.info(f"train.max_minutes={limit} reached at step {run.state.step}")

    def _check_bad(self, run: _Run, final: bool) -> None:
        """Stop the run (after a checkpoint of this step) when too many images were bad; the
        same minimum number of images applies during the run and at its end."""
        bad, seen = run.state.bad_images, run.state.images_seen
        attempted = bad + seen
        if not attempted or bad / attempted <= self.data.max_bad_fraction:
            return
        frac = bad / attempted
        msg = (f"{bad} of {attempted} images were bad ({frac:.1%}), more than "
               f"data.max_bad_fraction={self.data.max_bad_fraction:.1%}; the log names each one")
        if attempted < self.min_images_for_bad_check:
            if final:
                run.logger.warning(f"{msg}. Too few images ({attempted} < "
                                   f"{self.min_images_for_bad_check}) to stop the run for it.")
            return
        if run.last_ckpt_step != run.state.step:
            self._checkpoint(run)
        msg += f". Stopped at step {run.state.step}; checkpoints and logs are kept."
        run.logger.warning(msg)
        raise BadDataError(msg)

    # ----------------------------------------------------------------- checkpoint, evaluate

    def _checkpoint(self, run: _Run) -> None:
        if run.bad_new or self.dist.world_size > 1:
            self._agree(run)  # the checkpoint stores the bad-image count of all processes
        s = run.state
        path = save_training_state(self.run_dir, s.step, run.model, run.optimizer, run.scheduler,
                                   dataclasses.asdict(s), self.train.keep_checkpoints, self.dist)
        run.last_ckpt_step = s.step
        if path is not None:
            run.last_ckpt = path
            run.logger.info(f"checkpoint {path}")

    def _evaluate(self, run: _Run) -> None:
        """``task.evaluate`` on the main process (the others wait), logged as ``val/*``."""
        if self.dist.is_main and run.task.eval_dataset() is not None:
            model = run.model
            was = model.training
            model.eval()
            with torch.no_grad():
                run.final_metrics = run.task.evaluate(model, self.dist.device)
            model.train(was)
            run.logger.log(run.state.step, {f"val/{k}": v for k, v in run.final_metrics.items()})
        barrier()

    # ----------------------------------------------------------------- end of the run

    def _finish(self, run: _Run, t0: float) -> TrainResult:
        """Final checkpoint, then the bad-data verdict, the final evaluation, and the exported
        model, curves and summary."""
        if run.last_ckpt_step != run.state.step:
            self._checkpoint(run)
        self._agree(run)
        self._check_bad(run, final=True)
        if self.evaluate:
            self._evaluate(run)
        s = run.state
        result = TrainResult(s.step, s.epoch, s.images_seen, s.bad_images, self.run_dir,
                             run.last_ckpt, run.final_metrics,
                             wall_s=time.perf_counter() - t0)
        if self.dist.is_main:
            result.model_dir = export_pretrained(run.model, self.run_dir,
                                                 getattr(run.task, "processor", None))
            self._plot(run)
        elif hasattr(unwrap_model(run.model), "save_pretrained"):
            result.model_dir = self.run_dir / "model"
        result.summary = self._summary(run, result)  # every process returns it
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "summary.json", result.summary)
        barrier()
        return result

    def _plot(self, run: _Run) -> None:
        keys = run.task.curve_keys()
        if keys and (self.run_dir / "log.jsonl").is_file():
            plot_curves(self.run_dir / "log.jsonl", self.run_dir / "loss_curves.png", keys=keys,
                        title=f"vlparse {run.task.name}")

    def _summary(self, run: _Run, result: TrainResult) -> dict[str, Any]:
        summary = {
            "task": run.task.name, "steps": result.step, "epochs_completed": result.epoch,
            "images_seen": result.images_seen, "bad_images": result.bad_images,
            "train_examples": run.feed.examples(self.dist.world_size),
            "checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
            "model_dir": str(result.model_dir) if result.model_dir else None,
            "wall_s": result.wall_s, "world_size": self.dist.world_size,
            "eval": result.final_metrics,
        }
        if isinstance(run.task, Summarizes):
            summary.update(run.task.summary(result))
        return summary


def train(
    task: TrainTask,
    cfg: Any,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    evaluate: bool = True,
    dist: DistInfo | None = None,
) -> TrainResult:
    """Train ``task`` with the ``optim``, ``train`` and ``data`` sections of ``cfg`` (a
    pre-training or fine-tuning config, saved whole as ``config.yaml``) into ``out_dir``."""
    from vlparse.config import to_dict

    trainer = Trainer(cfg.optim, cfg.train, cfg.data, out_dir, dist=dist, config=to_dict(cfg),
                      resume=resume, overwrite=overwrite, evaluate=evaluate)
    return trainer.fit(task)
