"""Typed configuration: dataclasses validated on construction, YAML files that compose, and
``key=value`` overrides.

A config file is YAML whose keys mirror the dataclasses below. A file may name a ``base``
(another YAML file, relative to itself, or a built-in name such as ``tiny``) whose values it
overrides. Built-in names resolve to the YAML files shipped in ``vlparse/configs``.

Errors name the file, the dotted key and the valid keys, e.g.::

    ConfigError: configs/my.yaml: unknown key 'model.visul'; valid keys of 'model': visual, text
"""

from vlparse.config.base import from_dict, to_dict
from vlparse.config.files import (
    apply_overrides,
    builtin_configs,
    builtin_recipes,
    load_config,
    load_yaml,
)
from vlparse.config.finetune import FINETUNE_TASKS, FinetuneConfig, TaskConfig, validate_finetune
from vlparse.config.model import ModelConfig, TextConfig, VisualConfig
from vlparse.config.pretrain import ObjectiveConfig, PretrainConfig, validate
from vlparse.config.training import DataConfig, OptimConfig, TrainConfig
from vlparse.errors import ConfigError

__all__ = [
    "ConfigError",
    "VisualConfig",
    "TextConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "DataConfig",
    "OptimConfig",
    "TrainConfig",
    "PretrainConfig",
    "TaskConfig",
    "FinetuneConfig",
    "FINETUNE_TASKS",
    "load_config",
    "validate",
    "validate_finetune",
    "builtin_configs",
    "builtin_recipes",
    "apply_overrides",
    "load_yaml",
    "to_dict",
    "from_dict",
]

