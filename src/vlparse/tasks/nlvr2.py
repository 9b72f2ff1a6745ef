"""NLVR2 (paper section 4.2, Table 2): is a statement true of a pair of images?

The pair method (the family's NLVR2 task model; Visual Parsing:
:class:`~vlparse.models.vp_tasks.VisualParsingForNLVR2`): the sentence goes through the model
twice, once with the left image and once with the right, and the two ``[CLS]`` states,
concatenated ``[left; right]``, feed a classifier (class 1 = True). Trained with cross-entropy
(mean over the examples of the global batch); the metric is accuracy, reported on ``dev`` and
``test1`` (the public test set, "test-P").
"""

from __future__ import annotations

from vlparse.data.finetune import NLVR2Dataset
from vlparse.tasks.classification import ClassificationTask

__all__ = ["NLVR2Task", "build_task"]


class NLVR2Task(ClassificationTask):
    """NLVR2 with the pair method; see the module docstring."""

    name = "nlvr2"
    recipe = "nlvr2"
    default_split = "test1"
    kind = "nlvr2"
    dataset_class = NLVR2Dataset
    image_key = "images"  # (B, 2, 3, S, S): left, right
    text_field = "sentence"
    labels_required_in_eval = False  # test1 may come without labels


def build_task() -> NLVR2Task:
    """The NLVR2 task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return NLVR2Task()
