"""FIBER's task models, by task name (:data:`TASK_MODELS`, what
:func:`~vlparse.models.task_registry.task_model_class` reads for the family ``fiber``)."""

from __future__ import annotations

from vlparse.models.fiber.grounding import (
    FiberForDetection,
    FiberForGrounding,
    FiberForReferringExpressions,
)

__all__ = ["TASK_MODELS"]

TASK_MODELS: dict[str, type] = {
    "grounding": FiberForGrounding,
    "refexp": FiberForReferringExpressions,
    "detection": FiberForDetection,
}
"""FIBER's task models by task; fine-tuning FIBER on a task without one is refused by name."""
