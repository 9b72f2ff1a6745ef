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

from vlparse.config import FinetuneConfig, ModelConfig
from vlparse.data.finetune import NLVR2Dataset
from vlparse.models.heads import MLPHead
from vlparse.tasks.classification import ClassificationTask
from vlparse.tasks.finetune import FinetuneModel

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


class NLVR2Task(ClassificationTask):
    """NLVR2 with the pair method; see the module docstring."""

    name = "nlvr2"
    recipe = "nlvr2"
    default_split = "test1"
    kind = "nlvr2"
    dataset_class = NLVR2Dataset
    labels_required_in_eval = False  # test1 may come without labels

    def build_head(self, model_cfg: ModelConfig, cfg: FinetuneConfig, state: dict) -> nn.Module:
        d = model_cfg.text.hidden_size
        return MLPHead(2 * d, 2 * d, 2)

    def logits(self, model: FinetuneModel, batch: dict[str, Any]) -> Tensor:
        return nlvr2_logits(model, batch)


def build_task() -> NLVR2Task:
    """The NLVR2 task (registered in :data:`vlparse.tasks.finetune.TASK_MODULES`)."""
    return NLVR2Task()
