"""SNLI-VE visual entailment (paper section 4.2, Table 3): a 3-way classifier.

The premise is a Flickr30K image, the hypothesis a sentence; the classes are entailment (0),
neutral (1) and contradiction (2), the order of
:data:`~vlparse.data.formats.snli_ve.SNLI_VE_LABELS`. The family's entailment task model
(Visual Parsing: :class:`~vlparse.models.vp_tasks.VisualParsingForVisualEntailment`, an MLP on
the ``[CLS]`` state) is trained with cross-entropy (mean over the examples of the global batch);
the metric is accuracy (:class:`~vlparse.tasks.classification.ClassificationTask`).
"""

from __future__ import annotations

from vlparse.data.finetune import SNLIVEDataset
from vlparse.tasks.classification import ClassificationTask

__all__ = ["SNLIVETask", "build_task"]


class SNLIVETask(ClassificationTask):
    """SNLI-VE; see the module docstring."""

    name = "snli-ve"
    recipe = "snli_ve"
    default_split = "test"
    kind = "snli_ve"
    dataset_class = SNLIVEDataset
    text_field = "hypothesis"


def build_task() -> SNLIVETask:
    """The SNLI-VE task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return SNLIVETask()
