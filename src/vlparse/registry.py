"""Building models by name: ``create_model("tiny")``, ``list_models()``."""

from __future__ import annotations

from vlparse.config import ModelConfig, PretrainConfig, builtin_configs, load_config
from vlparse.models.single_stream import VisualParsingModel

__all__ = ["create_model", "list_models", "DEFAULT_VOCAB_SIZE"]

DEFAULT_VOCAB_SIZE = 30522  # bert-base-uncased


def list_models() -> list[str]:
    """Names of the built-in model configs (the YAML files in ``vlparse/configs``)."""
    return builtin_configs()


def create_model(
    name_or_cfg: str | ModelConfig | PretrainConfig, vocab_size: int | None = None
) -> VisualParsingModel:
    """Build a randomly initialised :class:`VisualParsingModel` (no weights are read; call
    ``model.load_pretrained()`` for the checkpoints the config names).

    Args:
        name_or_cfg: a built-in name (see :func:`list_models`), a YAML path, or a config.
        vocab_size: tokenizer size; ``None`` takes ``text.vocab_size`` if set, else 30522
            (bert-base-uncased).
    """
    if isinstance(name_or_cfg, PretrainConfig):
        cfg = name_or_cfg.model
    elif isinstance(name_or_cfg, ModelConfig):
        cfg = name_or_cfg
    elif isinstance(name_or_cfg, str):
        cfg = load_config(name_or_cfg).model
    else:
        raise TypeError(
            f"create_model: expected a name, ModelConfig or PretrainConfig, "
            f"got {type(name_or_cfg).__name__}"
        )
    if vocab_size is None:
        vocab_size = cfg.text.vocab_size or DEFAULT_VOCAB_SIZE
    return VisualParsingModel(cfg, vocab_size)
