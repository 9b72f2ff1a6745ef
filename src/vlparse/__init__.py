"""vlparse: vision-language pre-training with a self-attention visual parser (Visual Parsing,
NeurIPS 2021) and fusion in the backbone (FIBER, NeurIPS 2022).

Public API: :func:`create_model`, :func:`list_models`, :func:`load_config`, :func:`load`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load", "load_config"]


def create_model(name_or_cfg: Any, vocab_size: int | None = None) -> Any:
    """Build a model from a built-in name (``tiny``, ``ablation``, ``paper``), a YAML path or a
    config, randomly initialised (no I/O). See :func:`vlparse.registry.create_model`."""
    from vlparse.registry import create_model as _create

    return _create(name_or_cfg, vocab_size)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    from vlparse.registry import list_models as _list

    return _list()


def load_config(name_or_path: Any = None, overrides: list[str] | None = None) -> Any:
    """Load a pre-training config by built-in name or path, with ``key=value`` overrides."""
    from vlparse.config import load_config as _load

    return _load(name_or_path, overrides)


def load(path: Any, device: Any = None) -> Any:
    """Load a pre-training or fine-tuning run for inference (``score``, ``rank``, ``answer``,
    ``entail``, ``reason``). See :func:`vlparse.api.load`."""
    from vlparse.api import load as _load

    return _load(path, device)
