"""Model families: which model and objectives config classes go with each ``model.family``.

A family is one line of :data:`FAMILIES`. Its model config class has a tag field
``family: Literal["<name>"] = "<name>"``; ``PretrainConfig.model`` (and ``FinetuneConfig.model``)
is the family's class picked by that tag, and ``PretrainConfig.objectives`` the objectives class
of the same family. A second family adds its sections in a module of its own (e.g.
``config/fiber.py`` with ``FiberModelConfig`` and ``FiberObjectiveConfig``) and one line here::

    "fiber": Family(FiberModelConfig, FiberObjectiveConfig),
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from vlparse.config.fiber import FiberModelConfig, FiberObjectiveConfig
from vlparse.config.model import ModelConfig
from vlparse.config.objectives import ObjectiveConfig

__all__ = ["Family", "FAMILIES", "family_names", "model_config_type", "objectives_type"]


@dataclass(frozen=True)
class Family:
    """The config classes of one model family."""

    model: type
    objectives: type


FAMILIES: Mapping[str, Family] = MappingProxyType({
    "visual_parsing": Family(ModelConfig, ObjectiveConfig),  # the default: first
    "fiber": Family(FiberModelConfig, FiberObjectiveConfig),
})
"""Every model family by the value of ``model.family``."""


def family_names() -> list[str]:
    """The values ``model.family`` may take."""
    return list(FAMILIES)


def model_config_type(_cfg: Any = None) -> Any:
    """The union of every family's model config class (``PretrainConfig.model``'s type)."""
    return functools.reduce(operator.or_, (f.model for f in FAMILIES.values()))


def objectives_type(cfg: Any) -> type:
    """The objectives config class of ``cfg.model``'s family."""
    return FAMILIES[cfg.model.family].objectives
