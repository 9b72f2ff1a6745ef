"""What feeds the trainer: the training data of a run, cut into micro-batches, epoch by epoch.

Two kinds of data set:

- a map-style ``Dataset`` is ordered by a :class:`~vlparse.data.sampler.ResumableSampler`: the
  same global batches for any number of processes; an epoch has
  ``len(dataset) // (micro * processes) // grad_accum`` steps, and a resumed epoch starts at the
  sampler's batch ``batch_in_epoch``;
- an ``IterableDataset`` that is a :class:`~vlparse.train.state.ResumableStream` (tar shards,
  :class:`~vlparse.data.shards.ShardDataset`) splits itself over processes and DataLoader
  workers. An epoch has ``num_batches(micro, workers, drop_last=True) // grad_accum`` steps
  (each worker drops its own last partial micro-batch). A checkpoint's ``(epoch,
  batch_in_epoch)`` resumes it with ``resume(epoch, worker_progress(batch_in_epoch, ...),
  exact=data.shard_resume == "exact")``: ``exact`` replays each worker's stream and skips the
  samples it had yielded, so the rest of the epoch holds the same items (with the same
  reservoirs) as a run without the stop; ``fast`` starts after them and swaps up to a shuffle
  buffer of samples per worker for seen ones. Either needs the processes, workers and
  micro-batch size of the interrupted run (:func:`check_layout`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vlparse.config import DataConfig, TrainConfig
from vlparse.data.sampler import ResumableSampler
from vlparse.errors import ConfigError, EmptyDatasetError
from vlparse.train.state import LoopState, ResumableStream

__all__ = ["Feed", "check_layout", "plan_feed"]


@dataclass
class Feed:
    """The training data of a run: ``dataset``, its ``sampler`` (``None`` for a stream), the
    images per micro-batch of this process, the optimizer steps per epoch and the DataLoader
    workers."""

    dataset: Dataset
    sampler: ResumableSampler | None
    micro: int
    steps_per_epoch: int
    num_workers: int

    def examples(self, world_size: int) -> int:
        """Training examples per epoch over all processes."""
        n = len(self.dataset)
        return n * world_size if self.sampler is None else n

    def loader(self, state: LoopState, collate: Callable[[list], Any],
               generator: torch.Generator, pin_memory: bool, exact: bool) -> DataLoader:
        """The DataLoader of the loop state's epoch, after its consumed micro-batches."""
        common = dict(collate_fn=collate, num_workers=self.num_workers, generator=generator,
                      pin_memory=pin_memory,
                      persistent_workers=False)  # workers copy the data set's epoch at start
        if self.sampler is None:
            self._position_stream(state, exact)
            return DataLoader(self.dataset, batch_size=self.micro, drop_last=True, **common)
        self.sampler.set_epoch(state.epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(state.epoch)
        self.sampler.set_start_batch(min(state.batch_in_epoch, len(self.sampler)))
        return DataLoader(self.dataset, batch_sampler=self.sampler, **common)

    def _position_stream(self, state: LoopState, exact: bool) -> None:
        stream = self.dataset
        if not state.batch_in_epoch:
            stream.set_epoch(state.epoch)
            return
        consumed = stream.worker_progress(state.batch_in_epoch, self.micro, self.num_workers,
                                          drop_last=True)
        stream.resume(state.epoch, consumed, exact=exact)


def _micro_batch(train: TrainConfig, world: int) -> int:
    micro = train.batch_size // (train.grad_accum * world)
    if micro < 1 or micro * train.grad_accum * world != train.batch_size:
        raise ConfigError(f"train.batch_size={train.batch_size} must be a multiple of "
                          f"train.grad_accum ({train.grad_accum}) x processes ({world})")
    return micro


def _map_feed(dataset: Dataset, train: TrainConfig, data: DataConfig, world: int, rank: int,
              micro: int) -> Feed:
    n = len(dataset)
    if data.format == "shards":
        raise ConfigError("data.format=shards: this task reads a map-style data set, not tar "
                          "shards (only pre-training streams shards)")
    if n == 0:
        raise EmptyDatasetError(
            f"the training data set is empty: data.train_sets={data.train_sets} x "
            f"data.train_splits={data.train_splits} of the manifest hold no example")
    steps = n // (micro * world) // train.grad_accum
    if steps < 1:
        raise ConfigError(f"the training data set has {n} examples, fewer than one step of "
                          f"train.batch_size={train.batch_size}; lower train.batch_size")
    sampler = ResumableSampler(n, micro, num_replicas=world, rank=rank, seed=train.seed,
                               shuffle=True, drop_last=True)
    return Feed(dataset, sampler, micro, steps, data.num_workers)


def _stream_feed(stream: IterableDataset, train: TrainConfig, data: DataConfig,
                 micro: int) -> Feed:
    if not isinstance(stream, ResumableStream):
        raise TypeError(f"{type(stream).__name__}: an IterableDataset the trainer runs must be "
                        "a ResumableStream (num_batches, worker_progress, set_epoch, resume)")
    batches = stream.num_batches(micro, data.num_workers, drop_last=True)
    steps = batches // train.grad_accum
    if steps < 1:
        raise ConfigError(
            f"the training stream gives {batches} micro-batch(es) of {micro} per process and "
            f"epoch ({len(stream)} samples over {max(1, data.num_workers)} worker(s)), fewer "
            f"than one step of train.grad_accum={train.grad_accum}; lower train.batch_size or "
            "data.num_workers")
    return Feed(stream, None, micro, steps, data.num_workers)


def plan_feed(dataset: Dataset, train: TrainConfig, data: DataConfig, world_size: int,
              rank: int) -> Feed:
    """The feed of ``dataset`` for process ``rank`` of ``world_size``.

    Raises:
        ConfigError: ``train.batch_size`` does not split into whole micro-batches, the data
            make no whole step, or ``data.format=shards`` with a map-style data set.
        EmptyDatasetError: the data set is empty.
    """
    micro = _micro_batch(train, world_size)
    if isinstance(dataset, IterableDataset):
        return _stream_feed(dataset, train, data, micro)
    return _map_feed(dataset, train, data, world_size, rank, micro)


def check_layout(state: LoopState, feed: Feed, world_size: int) -> None:
    """Refuse to resume a stream mid-epoch under another data layout than the one that
    consumed its start (processes, workers, micro-batch size); then record this run's layout
    in ``state``."""
    layout = (world_size, feed.num_workers, feed.micro)
    saved = (state.world_size, state.num_workers, state.micro_batch)
    if feed.sampler is None and state.batch_in_epoch and any(saved) and saved != layout:
        raise ConfigError(
            f"--resume: the checkpoint stopped mid-epoch in a stream read by {saved[0]} "
            f"process(es) x {saved[1]} data.num_workers in micro-batches of {saved[2]}; this run "
            f"has {layout[0]} x {layout[1]} in micro-batches of {layout[2]}. Resume with the "
            "same layout (or from a checkpoint at the end of an epoch)")
    state.world_size, state.num_workers, state.micro_batch = layout
