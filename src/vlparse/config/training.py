"""What pre-training and fine-tuning share: the data section, the optimizer and the loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DataConfig", "OptimConfig", "TrainConfig", "shared_checks"]


@dataclass
class DataConfig:
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
    """

    train_sets: list[str] = field(default_factory=lambda: ["coco", "vg"])
    train_splits: list[str] = field(default_factory=lambda: ["train", "restval"])
    val_set: str = "coco"
    val_split: str = "val"
    num_workers: int = 2
    on_error: Literal["skip", "raise"] = "skip"
    max_bad_fraction: float = 0.01
    verify_negatives: Literal["auto", "off"] = "auto"


@dataclass
class OptimConfig:
    lr: float = 5e-5
    visual_lr: float = 5e-6
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 500
    decay_epochs: list[float] = field(default_factory=lambda: [25, 35])
    decay_factor: float = 0.1
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    """The loop. ``batch_size`` counts images per optimizer step over all processes (each image
    comes with ``num_pos + num_neg`` texts); ``grad_accum`` splits it into micro-batches.
    ``max_minutes`` ends the run (checkpoint, evaluation, summary) after that much training time,
    whatever ``epochs`` or ``max_steps`` say."""

    epochs: float = 40
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 2048
    grad_accum: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_images: int = 500
    progress: bool = True


def shared_checks(cfg: Any) -> list[tuple[bool, str]]:
    """Checks of the parts that pre-training and fine-tuning configs have in common."""
    tr, v, text = cfg.train, cfg.model.visual, cfg.model.text
    return [
        (tr.batch_size >= 1 and tr.grad_accum >= 1, "train.batch_size and grad_accum must be >= 1"),
        (
            tr.batch_size % tr.grad_accum == 0,
            "train.batch_size must be divisible by train.grad_accum",
        ),
        (v.image_size > 0 and v.window_size > 0, "model.visual sizes must be positive"),
        (
            text.hidden_size % text.num_heads == 0,
            "model.text.hidden_size must be divisible by model.text.num_heads",
        ),
        (text.initializer_range > 0, "model.text.initializer_range must be > 0"),
        (0.0 <= cfg.data.max_bad_fraction <= 1.0, "data.max_bad_fraction must be in [0, 1]"),
    ]
