"""What pre-training and fine-tuning share: the data section, the optimizer and the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from vlparse.config.base import Config, FieldError
from vlparse.config.ranges import ranged

__all__ = ["DataConfig", "OptimConfig", "TrainConfig"]


@dataclass
class DataConfig(Config):
    """Which data sets of the manifest to pre-train on, and how to treat bad input.

    ``on_error``: ``"skip"`` replaces a missing or corrupt image with another sample, counts it
    and names it in the log; ``"raise"`` makes it fatal. A run fails when more than
    ``max_bad_fraction`` of the images seen are bad.

    ``verify_negatives``: ``"auto"`` checks the unmatched ITM captions of training and of the
    held-out evaluation against the world's ground truth when the manifest names one (the scene
    world's ``generator.scenes``) and draws again any that is true of the image or ambiguous
    (:mod:`vlparse.data.synthetic.truth`: about 7 % of random draws); ``"off"`` draws them at
    random as the paper does. Real data sets have no ground truth, so ``"auto"`` is ``"off"``
    there.

    ``epoch_unit``: what one epoch of pre-training passes over (the paper's "40 epochs", 4.1,
    does not say). ``"images"`` (default, our reading): every image once, drawing
    ``objectives.num_pos`` of its captions. ``"pairs"``: every matched image-caption pair once,
    so an image with ``n`` captions comes ``ceil(n / num_pos)`` times an epoch, each time with
    ``num_pos`` captions it has not had yet that epoch; with Visual Genome (about 50 region
    descriptions an image) an epoch is then about 25 times longer
    (:class:`vlparse.data.pretrain.PretrainDataset`). Fine-tuning data sets ignore it.

    ``format``: ``"manifest"`` reads the training images as files named by the manifest;
    ``"shards"`` streams them from the tar shards of ``vlparse data shard`` at ``shards`` (a
    shard folder or a brace pattern ``DIR/shard-{000000..000099}.tar``), shuffled through a
    buffer of ``shuffle_buffer`` samples per DataLoader worker (pre-training only; the held-out
    evaluation still reads the manifest). ``shard_resume``: how ``--resume`` continues a
    streamed epoch, ``"exact"`` (replays the stream and skips what was consumed: the same items
    as without the stop) or ``"fast"`` (starts where the consumed part ends: the same count,
    while up to ``shuffle_buffer`` samples per worker are swapped for seen ones); see
    :mod:`vlparse.data.shards.reader`.
    """

    train_sets: list[str] = field(default_factory=lambda: ["coco", "vg"])
    train_splits: list[str] = field(default_factory=lambda: ["train", "restval"])
    val_set: str = "coco"
    val_split: str = "val"
    num_workers: int = ranged(2, ge=0)
    on_error: Literal["skip", "raise"] = "skip"
    max_bad_fraction: float = ranged(0.01, ge=0, le=1)
    verify_negatives: Literal["auto", "off"] = "auto"
    epoch_unit: Literal["images", "pairs"] = "images"
    format: Literal["manifest", "shards"] = "manifest"
    shards: str | None = None
    shuffle_buffer: int = ranged(1000, ge=1)
    shard_resume: Literal["exact", "fast"] = "exact"

    def check(self) -> None:
        if self.format == "shards" and not self.shards:
            raise FieldError("format", "'shards' needs data.shards: the folder of `vlparse data "
                             "shard --out DIR` (or a brace pattern of its shards)",
                             also=["shards"])
        if self.format == "shards" and self.epoch_unit == "pairs":
            raise FieldError("epoch_unit", "'pairs' is for data.format=manifest: a stream of "
                             "shards passes over its images once an epoch", also=["format"])


@dataclass
class OptimConfig(Config):
    """AdamW with a linear warm-up over ``warmup_steps`` and the rate times ``decay_factor`` at
    each of ``decay_epochs`` (ascending, fractions allowed). ``lr`` is the rate of everything
    but the visual embedder, which learns at ``visual_lr``; ``grad_clip`` bounds the gradient
    norm (``None``: no clipping)."""

    lr: float = ranged(5e-5, gt=0)
    visual_lr: float = ranged(5e-6, gt=0)
    weight_decay: float = ranged(0.01, ge=0)
    betas: list[float] = ranged(factory=lambda: [0.9, 0.999], ge=0, lt=1)
    eps: float = ranged(1e-8, gt=0)
    warmup_steps: int = ranged(500, ge=0)
    decay_epochs: list[float] = ranged(factory=lambda: [25.0, 35.0], ge=0)
    decay_factor: float = ranged(0.1, gt=0, le=1)
    grad_clip: float | None = ranged(1.0, gt=0)

    def check(self) -> None:
        if len(self.betas) != 2:
            raise FieldError("betas", f"{self.betas} must be two numbers, e.g. [0.9, 0.999]")
        if any(b <= a for a, b in pairwise(self.decay_epochs)):
            raise FieldError("decay_epochs", f"{self.decay_epochs} must be ascending")


@dataclass
class TrainConfig(Config):
    """The loop. ``batch_size`` counts images per optimizer step over all processes (each image
    comes with ``num_pos + num_neg`` texts); ``grad_accum`` splits it into micro-batches.
    ``max_minutes`` ends the run (checkpoint, evaluation, summary) after that much training time,
    whatever ``epochs`` or ``max_steps`` say. ``log_every``, ``ckpt_every`` and ``eval_every``
    count optimizer steps (``ckpt_every`` / ``eval_every`` 0: only at the end).
    ``keep_checkpoints``: the newest checkpoints kept (0: all)."""

    epochs: float = ranged(40.0, gt=0)
    max_steps: int | None = ranged(None, ge=1)
    max_minutes: float | None = ranged(None, gt=0)
    batch_size: int = ranged(2048, ge=1)
    grad_accum: int = ranged(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = ranged(0, ge=0, lt=2**32)
    log_every: int = ranged(10, ge=1)
    ckpt_every: int = ranged(1000, ge=0)
    keep_checkpoints: int = ranged(3, ge=0)
    eval_every: int = ranged(0, ge=0)
    eval_images: int = ranged(500, ge=1)
    progress: bool = True

    def check(self) -> None:
        if self.batch_size % self.grad_accum:
            raise FieldError(
                "batch_size",
                f"{self.batch_size} is not divisible by grad_accum ({self.grad_accum})",
                also=["grad_accum"],
            )
