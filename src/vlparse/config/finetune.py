"""Fine-tuning recipes: the task, the model, the data sets of the manifest, optimizer and loop.

``task`` is one class a task, picked by ``task.name``: :class:`RetrievalTaskConfig`,
:class:`VQATaskConfig`, :class:`NLVR2TaskConfig`, :class:`SNLIVETaskConfig`,
:class:`CaptionTaskConfig`, or a box task (:class:`GroundingTaskConfig`,
:class:`RefexpTaskConfig`, :class:`DetectionTaskConfig`). A key of another task is refused with
a message naming the task that has it.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal, get_args

from vlparse.config.base import Config, chosen_by
from vlparse.config.families import model_config_type
from vlparse.config.model import ModelConfig
from vlparse.config.ranges import ranged
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig

__all__ = [
    "FINETUNE_TASKS",
    "BaseTaskConfig",
    "RetrievalTaskConfig",
    "VQATaskConfig",
    "NLVR2TaskConfig",
    "SNLIVETaskConfig",
    "CaptionTaskConfig",
    "BoxTaskConfig",
    "GroundingTaskConfig",
    "RefexpTaskConfig",
    "DetectionTaskConfig",
    "TaskConfig",
    "FinetuneConfig",
]


@dataclass
class BaseTaskConfig(Config):
    """What every fine-tuning task has. ``name`` picks the task (and its config class).
    ``head_lr_mult``: the task head's learning rate is ``optim.lr`` times this.
    ``eval_batch_pairs``: image-text pairs per forward pass in evaluation. ``eval_max_images``:
    images of ``data.val_split`` used by the evaluation that runs during / after training
    (0 = all)."""

    name: str = ""
    head_lr_mult: float = ranged(1.0, gt=0)
    eval_batch_pairs: int = ranged(1024, ge=1)
    eval_max_images: int = ranged(0, ge=0)


@dataclass
class RetrievalTaskConfig(BaseTaskConfig):
    """Image-text retrieval. ``num_neg``: unaligned captions per image taken from the other
    images of the mini-batch (``B`` aligned + ``B * num_neg`` unaligned pairs per step).
    ``itm_head_init``: start the matching head from the pre-trained ITM head (with ``--init``).
    ``rerank_k``: 0 = full ranking; ``K > 0`` = only the top ``K`` candidates of the cheap
    unimodal score are re-scored by the full model."""

    name: Literal["retrieval"] = "retrieval"
    num_neg: int = ranged(3, ge=0)
    itm_head_init: bool = True
    rerank_k: int = ranged(0, ge=0)


@dataclass
class VQATaskConfig(BaseTaskConfig):
    """Visual question answering. ``num_answers``: size of the answer vocabulary (the most
    frequent training answers; 3,129 is the standard VQA v2 vocabulary of [24], which the paper
    follows; its text says "3,192-way", which we read as a typo of 3,129).
    ``soft_targets``: the binary cross-entropy targets
    (:func:`vlparse.processing.answers.soft_score`): ``"paper_0_3"`` (default; the scheme of
    [24], which the paper follows: 0 / 0.3 / 0.6 / 0.9 / 1 for 0 / 1 / 2 / 3 / 4+ humans),
    ``"min_n_over_3"`` (``min(1, n / 3)``) or ``"leave_one_out"`` (the metric's own score).
    The metric is the official accuracy whatever the targets."""

    name: Literal["vqa"] = "vqa"
    num_answers: int = ranged(3129, ge=1)
    soft_targets: Literal["paper_0_3", "min_n_over_3", "leave_one_out"] = "paper_0_3"


@dataclass
class NLVR2TaskConfig(BaseTaskConfig):
    """NLVR2: is the sentence true of the pair of images."""

    name: Literal["nlvr2"] = "nlvr2"


@dataclass
class SNLIVETaskConfig(BaseTaskConfig):
    """SNLI-VE: does the image entail, contradict or leave open the hypothesis. ``head``: the
    classifier on ``[CLS]``: ``"linear"`` (default; the paper's "Linear layer", 4.2) or
    ``"mlp"`` (``D -> 2D -> 3``, as for VQA and NLVR2;
    :class:`~vlparse.models.vp_tasks.VisualParsingForVisualEntailment`)."""

    name: Literal["snli-ve"] = "snli-ve"
    head: Literal["linear", "mlp"] = "linear"


@dataclass
class CaptionTaskConfig(BaseTaskConfig):
    """Image captioning with a causal decoder (FIBER: the text backbone, cross-attending to the
    image; :class:`~vlparse.models.fiber.captioning.FiberForCaptioning`).

    Training: next-token cross-entropy with ``label_smoothing``; with ``scst_weight > 0`` the
    loss is ``(1 - w) * MLE + w * SCST`` (self-critical: ``scst_samples`` captions sampled per
    image at ``scst_temperature``, at most ``scst_max_length`` tokens, rewarded by CIDEr-D minus
    the greedy caption's, document frequencies from the training references).
    ``image_features``: which image tokens the decoder's fused layers attend to
    (:mod:`vlparse.models.fiber.decoder`): ``paired`` (each layer the stage it was paired with
    in pre-training, no new weights) or ``last_stage`` (the released code: every layer the last
    stage, through new linear adapters where the widths differ). Evaluation decodes with
    ``num_beams`` (1 = greedy), length-normalised by ``length ** length_alpha``, at most
    ``max_length`` tokens."""

    name: Literal["caption"] = "caption"
    label_smoothing: float = ranged(0.0, ge=0, lt=1)
    scst_weight: float = ranged(0.0, ge=0, le=1)
    scst_samples: int = ranged(5, ge=1)
    scst_temperature: float = ranged(1.0, gt=0)
    scst_max_length: int = ranged(20, ge=1)
    image_features: Literal["paired", "last_stage"] = "paired"
    num_beams: int = ranged(5, ge=1)
    length_alpha: float = ranged(1.0, ge=0)
    max_length: int = ranged(50, ge=1)


@dataclass
class BoxTaskConfig(BaseTaskConfig):
    """What the box tasks (FIBER's fine-grained stage) share. ``flip_prob``: chance of a
    horizontal flip of a training image (never for a caption that says "left" or "right").
    Image sizes, text length and post-processing are the model's (``model.detection``)."""

    flip_prob: float = ranged(0.5, ge=0, le=1)


@dataclass
class GroundingTaskConfig(BoxTaskConfig):
    """Phrase grounding (Flickr30K Entities): Recall@1/5/10 over phrases, any-box protocol at
    IoU >= ``iou_threshold``."""

    name: Literal["grounding"] = "grounding"
    iou_threshold: float = ranged(0.5, gt=0, le=1)


@dataclass
class RefexpTaskConfig(BoxTaskConfig):
    """Referring expressions (RefCOCO/+/g): top-1 accuracy at ``iou_threshold``, by plain IoU
    or, with ``generalized_iou``, by generalised IoU as FIBER's evaluator (both are reported;
    ``accuracy`` is the chosen one). Flips are off: the expressions say left and right."""

    name: Literal["refexp"] = "refexp"
    flip_prob: float = ranged(0.0, ge=0, le=1)
    iou_threshold: float = ranged(0.5, gt=0, le=1)
    generalized_iou: bool = False


@dataclass
class DetectionTaskConfig(BoxTaskConfig):
    """Detection of the categories named in a prompt (COCO instances): AP, AP50, AP75 through
    pycocotools ``COCOeval``."""

    name: Literal["detection"] = "detection"


TaskConfig = (RetrievalTaskConfig | VQATaskConfig | NLVR2TaskConfig | SNLIVETaskConfig
              | CaptionTaskConfig | GroundingTaskConfig | RefexpTaskConfig
              | DetectionTaskConfig)
"""The task section: one of the task classes, picked by ``name`` (default ``retrieval``)."""

FINETUNE_TASKS = tuple(get_args(typing.get_type_hints(c)["name"])[0] for c in get_args(TaskConfig))
"""Names of the fine-tuning tasks (``vlparse finetune TASK``)."""


def _finetune_data() -> DataConfig:
    return DataConfig(
        train_sets=["flickr30k"], train_splits=["train"], val_set="flickr30k", val_split="val"
    )


@dataclass
class FinetuneConfig(Config):
    """A fine-tuning recipe: the task, the model (used when starting from scratch; with
    ``--init`` the pre-trained run's model section replaces it), the data sets of the manifest
    (``data.train_sets`` x ``data.train_splits`` to train, ``data.val_set`` / ``val_split`` to
    evaluate), the optimizer and the loop (``train.batch_size`` counts images, or examples).

    ``model_from`` names a config (built-in such as ``paper``/``tiny`` or a YAML path) whose
    ``model`` section is the starting point; the recipe's own ``model`` keys override it. It is
    resolved by :func:`load_config` and kept only as a record.
    """

    model_from: str | None = "paper"
    model: ModelConfig = chosen_by(model_config_type)
    task: TaskConfig = field(default_factory=RetrievalTaskConfig)
    data: DataConfig = field(default_factory=_finetune_data)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
