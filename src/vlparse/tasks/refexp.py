"""Referring expressions (RefCOCO/+/g as MDETR distributes them): the box model's best box for
the expression, top-1 accuracy at IoU >= 0.5 (``task.generalized_iou``: generalised IoU, as
FIBER's evaluator); horizontal flips off by default (the expressions say left and right). See
:mod:`vlparse.tasks.grounding` for the data and the training step."""

from __future__ import annotations

from typing import Any

from vlparse.tasks.grounding import BoxTask
from vlparse.tasks.grounding_eval import predict_boxes, refexp_metrics

__all__ = ["RefexpTask", "build_task"]


class RefexpTask(BoxTask):
    """Referring expressions; ``accuracy`` (and both ``accuracy_iou`` / ``accuracy_giou``)."""

    name = "refexp"
    recipe = "refexp"
    kind = "refexp"
    default_split = "testA"
    metric_keys = ("accuracy", "accuracy_iou", "accuracy_giou")

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        found = predict_boxes(model, dataset, cfg, device, progress, "evaluate refexp")
        return refexp_metrics(dataset, found, cfg.task.iou_threshold, cfg.task.generalized_iou)


def build_task() -> RefexpTask:
    """The referring-expression task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return RefexpTask()
