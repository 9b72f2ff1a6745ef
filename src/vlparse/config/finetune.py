"""Fine-tuning recipes: the task, the model, the data sets of the manifest, optimizer and loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlparse.config.base import raise_failed
from vlparse.config.model import ModelConfig
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig, shared_checks

__all__ = ["FINETUNE_TASKS", "TaskConfig", "FinetuneConfig", "validate_finetune"]


FINETUNE_TASKS = ("retrieval", "vqa", "nlvr2", "snli-ve")
"""Names of the fine-tuning tasks (``vlparse finetune TASK``)."""


@dataclass
class TaskConfig:
    """What a fine-tuning task needs beyond the model, the data sets and the loop.

    ``name``: one of :data:`FINETUNE_TASKS`. ``num_neg``: retrieval, unaligned captions per image
    taken from the other images of the mini-batch (``B`` aligned + ``B * num_neg`` unaligned
    pairs per step). ``itm_head_init``: retrieval, start the matching head from the pre-trained
    ITM head (with ``--init``). ``num_answers``: VQA, size of the answer vocabulary (most frequent
    training answers). ``head_lr_mult``: the task head's learning rate is ``optim.lr`` times this.
    ``eval_batch_pairs``: image-text pairs per forward pass in evaluation. ``eval_max_images``:
    images of ``data.val_split`` used by the evaluation that runs during / after training
    (0 = all). ``rerank_k``: retrieval, 0 = full ranking; ``K > 0`` = only the top ``K``
    candidates of the cheap unimodal score are re-scored by the full model.
    """

    name: Literal["retrieval", "vqa", "nlvr2", "snli-ve"] = "retrieval"
    num_neg: int = 3
    itm_head_init: bool = True
    num_answers: int = 3129
    head_lr_mult: float = 1.0
    eval_batch_pairs: int = 1024
    eval_max_images: int = 0
    rerank_k: int = 0


def _finetune_data() -> DataConfig:
    return DataConfig(
        train_sets=["flickr30k"], train_splits=["train"], val_set="flickr30k", val_split="val"
    )


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe: the task, the model (used when starting from scratch; with
    ``--init`` the pre-trained run's model section replaces it), the data sets of the manifest
    (``data.train_sets`` x ``data.train_splits`` to train, ``data.val_set`` / ``val_split`` to
    evaluate), the optimizer and the loop (``train.batch_size`` counts images, or examples).

    ``model_from`` names a config (built-in such as ``paper``/``tiny`` or a YAML path) whose
    ``model`` section is the starting point; the recipe's own ``model`` keys override it. It is
    resolved by :func:`load_config` and kept only as a record.
    """

    model_from: str | None = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=_finetune_data)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate_finetune(self)


def validate_finetune(cfg: FinetuneConfig) -> None:
    """Cross-field checks of a fine-tuning recipe."""
    t = cfg.task
    raise_failed([
        (t.num_neg >= 0, "task.num_neg must be >= 0"),
        (t.num_answers >= 1, "task.num_answers must be >= 1"),
        (t.head_lr_mult > 0, "task.head_lr_mult must be > 0"),
        (t.eval_batch_pairs >= 1, "task.eval_batch_pairs must be >= 1"),
        (t.eval_max_images >= 0, "task.eval_max_images must be >= 0 (0 = all)"),
        (t.rerank_k >= 0, "task.rerank_k must be >= 0 (0 = full ranking)"),
        *shared_checks(cfg),
    ])
