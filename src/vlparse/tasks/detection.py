"""Detection from a category prompt (COCO instances): every image is paired with the prompt
naming the categories (``"circle. square. triangle"``), the box model's boxes for each name
are that category's detections, scored by pycocotools ``COCOeval`` (AP, AP50, AP75, ...). See
:mod:`vlparse.tasks.grounding` for the data and the training step."""

from __future__ import annotations

from typing import Any

from vlparse.tasks.grounding import BoxTask
from vlparse.tasks.grounding_eval import detection_metrics, predict_boxes

__all__ = ["DetectionTask", "build_task"]


class DetectionTask(BoxTask):
    """Detection; COCO box AP."""

    name = "detection"
    recipe = "detection"
    kind = "detection"
    default_split = "val"
    metric_keys = ("AP", "AP50", "AP75")

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        found = predict_boxes(model, dataset, cfg, device, progress, "evaluate detection")
        src = dataset.source
        return detection_metrics(dataset, found, src.instances, src.prompt.category_ids)


def build_task() -> DetectionTask:
    """The detection task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return DetectionTask()
