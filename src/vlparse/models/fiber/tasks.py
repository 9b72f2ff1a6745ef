"""FIBER's task models, by task name (:data:`TASK_MODELS`, what
:func:`~vlparse.models.task_registry.task_model_class` reads for the family ``fiber``)."""

from __future__ import annotations

from vlparse.models.fiber.captioning import FiberForCaptioning

__all__ = ["TASK_MODELS"]

TASK_MODELS: dict[str, type] = {"caption": FiberForCaptioning}
"""FIBER's task models by task; fine-tuning FIBER on a task without one is refused by name."""
