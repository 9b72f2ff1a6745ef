"""The task-model registry: every family's classes by name, errors that name what exists."""

from __future__ import annotations

import pytest

from vlparse.config import load_config
from vlparse.errors import ConfigError
from vlparse.models.processor import VisualParsingProcessor
from vlparse.models.single_stream import VisualParsingModel
from vlparse.models.task_registry import (
    FAMILY_MODELS,
    architectures,
    base_model_class,
    processor_for,
    task_model_class,
)
from vlparse.models.vp_tasks import TASK_MODELS


def test_visual_parsing_classes_are_found_by_family_and_task():
    assert base_model_class("visual_parsing") is VisualParsingModel
    for task, cls in TASK_MODELS.items():
        assert task_model_class("visual_parsing", task) is cls
        assert cls.task == task and cls.family == "visual_parsing"
    names = architectures()
    assert names["VisualParsingModel"] is VisualParsingModel
    assert {c.__name__ for c in TASK_MODELS.values()} <= set(names)
    processor = processor_for(load_config("tiny").model)
    assert isinstance(processor, VisualParsingProcessor) and processor.image_size == 96


def test_unknown_family_or_task_is_a_config_error_naming_what_exists():
    with pytest.raises(ConfigError, match="family 'owl' has no task models.*visual_parsing"):
        task_model_class("owl", "vqa")
    assert set(FAMILY_MODELS) == {"visual_parsing", "fiber"}
    assert architectures()["FiberModel"].__name__ == "FiberModel"
    with pytest.raises(ConfigError, match="no task model for 'captioning'.*retrieval"):
        task_model_class("visual_parsing", "captioning")
