"""vlparse: vision-language pre-training with a self-attention visual parser (Visual Parsing,
NeurIPS 2021) and fusion in the backbone (FIBER, NeurIPS 2022).

Public API: :func:`create_model`, :func:`list_models`, :func:`list_recipes`,
:func:`load_config`, :func:`load`. Importing ``vlparse`` imports neither timm nor transformers:
every function imports what it needs when called.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "list_recipes", "load", "load_config"]


def create_model(name_or_cfg: Any, pretrained: Any = False, **kwargs: Any) -> Any:
    """Build a model by name (``tiny``, ``ablation``, ``paper``, ...), YAML path or config;
    ``pretrained=True`` loads the initialisation sources the config names, a path loads a
    ``save_pretrained`` folder. See :func:`vlparse.models.registry.create_model`."""
    from vlparse.models.registry import create_model as _create

    return _create(name_or_cfg, pretrained, **kwargs)


def list_models() -> list[str]:
    """Names of the built-in architectures accepted by :func:`create_model`."""
    from vlparse.models.registry import list_models as _list

    return _list()


def list_recipes() -> list[str]:
    """Names of the built-in training recipes (``quickstart``, ``finetune/vqa``, ...), for
    :func:`load_config`."""
    from vlparse.models.registry import list_recipes as _list

    return _list()


def load_config(name_or_path: Any = None, overrides: list[str] | None = None) -> Any:
    """Load a config by built-in name or path, with ``key=value`` overrides: a pre-training
    config, or a fine-tuning recipe when the name starts with ``finetune/``."""
    from vlparse.config import FinetuneConfig
    from vlparse.config import load_config as _load

    if isinstance(name_or_path, str) and name_or_path.startswith("finetune/"):
        return _load(name_or_path.removeprefix("finetune/"), overrides, cls=FinetuneConfig)
    return _load(name_or_path, overrides)


def load(path: Any, device: Any = None) -> Any:
    """Load a trained model for inference (``score``, ``rank``, ``answer``, ``entail``,
    ``reason``): a ``save_pretrained`` folder such as a run's ``model/``, a run folder or a
    checkpoint. See :func:`vlparse.api.load`."""
    from vlparse.api import load as _load

    return _load(path, device)
