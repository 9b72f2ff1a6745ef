"""NLVR2 (paper section 4.2, Table 2): is a statement true of a pair of images?

The pair method: the sentence goes through the model twice, once with the left image and once
with the right (the visual parser and the multi-modal Transformer run for each), and the two
``[CLS]`` states, concatenated ``[left; right]`` into ``(B, 2D)``, feed a classifier
(:class:`~vlparse.models.heads.MLPHead`, ``2D -> 2D -> 2``; class 1 = True). Trained with
cross-entropy (mean over the examples of the global batch); the metric is accuracy, reported on
``dev`` and ``test1`` (the public test set, "test-P").
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import FinetuneConfig, ModelConfig
from vlparse.data.finetune import NLVR2Dataset, collate_finetune
from vlparse.models.heads import MLPHead
from vlparse.tasks.finetune import FinetuneModel, Task
from vlparse.tasks.snli_ve import (
    classification_step,
    evaluate_classifier,
    manifest_records,
)
from vlparse.train.loop import StepOutput

__all__ = ["NLVR2Task", "build_task", "nlvr2_logits", "pair_logits"]


def pair_logits(
    model: FinetuneModel, images: Tensor, input_ids: Tensor, attention_mask: Tensor
) -> Tensor:
    """Pair-method logits.

    Args:
        images: ``(B, 2, 3, S, S)``, left then right.
        input_ids, attention_mask: ``(B, L)``, the sentence.

    Returns:
        ``(B, 2)`` logits (class 1 = the statement is True) of ``head([cls_left; cls_right])``.
    """
    b = images.shape[0]
    if images.dim() != 5 or images.shape[1] != 2:
        raise ValueError(f"NLVR2 images must be (B, 2, 3, S, S), got {tuple(images.shape)}")
    tokens = model.encode_image(images.flatten(0, 1)).tokens  # (2B, m, c): l0, r0, l1, r1, ...
    ids = input_ids.repeat_interleave(2, dim=0)
    mask = attention_mask.repeat_interleave(2, dim=0)
    cls = model.fuse(tokens, ids, mask).cls  # (2B, D)
    return model.head(cls.reshape(b, -1))  # (B, 2D) = [left; right]


def nlvr2_logits(model: FinetuneModel, batch: dict[str, Any]) -> Tensor:
    """:func:`pair_logits` of a batch of :class:`~vlparse.data.finetune.NLVR2Dataset`."""
    return pair_logits(model, batch["images"], batch["input_ids"], batch["attention_mask"])


class NLVR2Task(Task):
    """NLVR2 with the pair method; see the module docstring."""

    name = "nlvr2"
    recipe = "nlvr2"
    default_split = "test1"
    metric_keys = ("accuracy",)

    def build_head(self, model_cfg: ModelConfig, cfg: FinetuneConfig, state: dict) -> nn.Module:
        d = model_cfg.text.hidden_size
        return MLPHead(2 * d, 2 * d, 2)

    def dataset(self, manifest, sets, splits, cfg, tokenizer, state, train) -> Dataset:
        records = manifest_records(manifest, sets, splits, "nlvr2", require_labels=train)
        if not train and cfg.task.eval_max_images:
            records = records[: cfg.task.eval_max_images]
        on_error = cfg.data.on_error if train else "raise"  # a score needs every example
        return NLVR2Dataset(records, tokenizer, cfg.model.visual.image_size,
                            cfg.model.text.max_text_len, on_error)

    def collate(self, items):
        return collate_finetune(items)

    def step_fn(self, model, batch, reduce_count, cfg) -> StepOutput:
        return classification_step(nlvr2_logits(model, batch), batch["label"], reduce_count)

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_classifier(model, dataset, cfg, device, nlvr2_logits, progress,
                                   "evaluate nlvr2")

    def write_outputs(self, result, out_json):
        result = dict(result)
        result.pop("predictions", None)
        return result


def build_task() -> NLVR2Task:
    """The NLVR2 task (registered in :data:`vlparse.tasks.finetune.TASK_MODULES`)."""
    return NLVR2Task()
