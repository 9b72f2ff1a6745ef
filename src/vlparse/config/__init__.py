"""Typed configuration: dataclasses validated on construction, YAML files that compose, and
``key=value`` overrides.

A config file is YAML whose keys mirror the dataclasses below. A file may name a ``base``
(another YAML file, relative to itself, or a built-in name such as ``tiny``) whose values it
overrides. Built-in names resolve to the YAML files shipped in ``vlparse/configs``.

Every config class checks its types, ranges and choices when it is made, from a file or in
Python (``OptimConfig(lr=-1)`` raises). Errors name the file and line (or the override), the
dotted key, the value and what is allowed, e.g.::

    ConfigError: configs/my.yaml:4: model.visul: unknown key; valid keys of 'model': family, ...

``PretrainConfig.model`` and ``.objectives`` are the classes of ``model.family``
(:mod:`vlparse.config.families`); ``FinetuneConfig.task`` is the class of ``task.name``.
"""

from vlparse.config.base import Config, FieldError, from_dict, to_dict, validate
from vlparse.config.families import FAMILIES, Family, family_names
from vlparse.config.files import (
    apply_overrides,
    builtin_configs,
    builtin_recipes,
    load_config,
    load_yaml,
    with_overrides,
)
from vlparse.config.finetune import (
    FINETUNE_TASKS,
    BaseTaskConfig,
    BoxTaskConfig,
    DetectionTaskConfig,
    FinetuneConfig,
    GroundingTaskConfig,
    NLVR2TaskConfig,
    RefexpTaskConfig,
    RetrievalTaskConfig,
    SNLIVETaskConfig,
    TaskConfig,
    VQATaskConfig,
)
from vlparse.config.model import ModelConfig, TextConfig, VisualConfig
from vlparse.config.objectives import ObjectiveConfig
from vlparse.config.pretrain import PretrainConfig
from vlparse.config.ranges import Range, ranged
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig
from vlparse.errors import ConfigError

__all__ = [
    "ConfigError",
    "FieldError",
    "Config",
    "Range",
    "ranged",
    "VisualConfig",
    "TextConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "BaseTaskConfig",
    "RetrievalTaskConfig",
    "VQATaskConfig",
    "NLVR2TaskConfig",
    "SNLIVETaskConfig",
    "BoxTaskConfig",
    "GroundingTaskConfig",
    "RefexpTaskConfig",
    "DetectionTaskConfig",
    "TaskConfig",
    "FinetuneConfig",
    "FINETUNE_TASKS",
    "FAMILIES",
    "Family",
    "family_names",
    "load_config",
    "validate",
    "builtin_configs",
    "builtin_recipes",
    "apply_overrides",
    "with_overrides",
    "load_yaml",
    "to_dict",
    "from_dict",
]
