"""SNLI-VE visual entailment (paper section 4.2, Table 3): a 3-way classifier on ``[CLS]``.

The premise is a Flickr30K image, the hypothesis a sentence; the classes are entailment (0),
neutral (1) and contradiction (2), the order of
:data:`~vlparse.data.formats.snli_ve.SNLI_VE_LABELS`. The head is an MLP on the ``[CLS]`` state
(:class:`~vlparse.models.heads.MLPHead`, ``D -> 2D -> 3``), trained with cross-entropy (mean over
the examples of the global batch); the metric is accuracy
(:class:`~vlparse.tasks.classification.ClassificationTask`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vlparse.config import FinetuneConfig, ModelConfig
from vlparse.data.finetune import SNLIVEDataset
from vlparse.data.formats.snli_ve import SNLI_VE_LABELS
from vlparse.models.heads import MLPHead
from vlparse.tasks.classification import ClassificationTask
from vlparse.tasks.finetune import FinetuneModel

__all__ = ["SNLIVETask", "build_task", "snli_ve_logits"]


def snli_ve_logits(model: FinetuneModel, batch: dict[str, Any]) -> Tensor:
    """``(B, 3)`` logits of ``image (B, 3, S, S)`` and hypotheses ``input_ids`` /
    ``attention_mask (B, L)``."""
    out = model.backbone(batch["image"], batch["input_ids"], batch["attention_mask"])
    return model.head(out.cls)


class SNLIVETask(ClassificationTask):
    """SNLI-VE; see the module docstring."""

    name = "snli-ve"
    recipe = "snli_ve"
    default_split = "test"
    kind = "snli_ve"
    dataset_class = SNLIVEDataset

    def build_head(self, model_cfg: ModelConfig, cfg: FinetuneConfig, state: dict) -> nn.Module:
        d = model_cfg.text.hidden_size
        return MLPHead(d, 2 * d, len(SNLI_VE_LABELS))

    def logits(self, model: FinetuneModel, batch: dict[str, Any]) -> Tensor:
        return snli_ve_logits(model, batch)


def build_task() -> SNLIVETask:
    """The SNLI-VE task (registered in :data:`vlparse.tasks.finetune.TASK_MODULES`)."""
    return SNLIVETask()
