"""Models by name (timm's convention): ``create_model("tiny")``, ``create_model("tiny",
pretrained=True)``, ``create_model("tiny", pretrained="exported/model")``; ``list_models()`` for
the architectures and ``list_recipes()`` for the training recipes, apart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlparse.config import (
    ModelConfig,
    PretrainConfig,
    builtin_configs,
    builtin_recipes,
    from_dict,
    load_config,
    load_yaml,
    to_dict,
)
from vlparse.config.fiber import FiberModelConfig

__all__ = ["DEFAULT_VOCAB_SIZE", "create_model", "list_models", "list_recipes"]

DEFAULT_VOCAB_SIZE = 30522  # bert-base-uncased


def _is_architecture(name: str) -> bool:
    """A built-in config is an architecture when it names its model after itself (``tiny``,
    ``paper``, ``ablation_r50`` ...); one that only trains a named model (``quickstart``
    trains ``tiny``) is a recipe."""
    return (load_yaml(name).get("model") or {}).get("name") == name


def list_models() -> list[str]:
    """Names of the built-in architectures, for :func:`create_model`."""
    return [name for name in builtin_configs() if _is_architecture(name)]


def list_recipes() -> list[str]:
    """Names of the built-in training recipes, each loadable with
    :func:`vlparse.load_config`: pre-training recipes (``quickstart``) and the fine-tuning
    recipes as ``finetune/<name>`` (``finetune/vqa``, ...)."""
    pretrain = [name for name in builtin_configs() if not _is_architecture(name)]
    return pretrain + [f"finetune/{name}" for name in builtin_recipes()]


def _model_config(name_or_cfg: str | ModelConfig | FiberModelConfig | PretrainConfig,
                  overrides: dict[str, Any]) -> ModelConfig | FiberModelConfig:
    if isinstance(name_or_cfg, PretrainConfig):
        cfg = name_or_cfg.model
    elif isinstance(name_or_cfg, (ModelConfig, FiberModelConfig)):
        cfg = name_or_cfg
    elif isinstance(name_or_cfg, (str, os.PathLike)):
        cfg = load_config(name_or_cfg).model
    else:
        raise TypeError(
            f"create_model: expected a name, ModelConfig or PretrainConfig, "
            f"got {type(name_or_cfg).__name__}"
        )
    if not overrides:
        return cfg
    data = to_dict(cfg)
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return from_dict(type(cfg), data)


def create_model(
    name_or_cfg: str | ModelConfig | FiberModelConfig | PretrainConfig,
    pretrained: bool | str | os.PathLike = False,
    *,
    vocab_size: int | None = None,
    cls_token_id: int = 101,
    sep_token_id: int = 102,
    **overrides: Any,
) -> Any:
    """Build a model by name.

    Args:
        name_or_cfg: a built-in architecture (:func:`list_models`) or recipe, a YAML path, or a
            config.
        pretrained: ``False``: random initialisation, no I/O. ``True``: then load the
            initialisation sources the config names (``model.visual.pretrained``,
            ``model.text.pretrained``; e.g. ImageNet Swin, BERT). A path: the model saved there
            by ``save_pretrained`` (its architecture must carry the name asked for).
        vocab_size: tokenizer size; ``None`` takes ``text.vocab_size`` if set, else 30522
            (bert-base-uncased). (A FIBER model's vocabulary is ``model.text.vocab_size``.)
        cls_token_id, sep_token_id: the tokenizer's ``[CLS]`` and ``[SEP]`` ids (Visual
            Parsing only).
        **overrides: model config sections to change, e.g. ``text={"num_layers": 2}``,
            ``visual={"pretrained": "parser.safetensors"}``.

    Returns:
        a :class:`~vlparse.models.single_stream.VisualParsingModel` or, for a config of family
        ``fiber``, a :class:`~vlparse.models.fiber.FiberModel` (from a folder, the class saved
        there).

    Raises:
        ValueError: ``pretrained=True`` and the config names no source; a folder of another
            architecture; overrides given with a folder; ``vocab_size`` given for FIBER.
    """
    from vlparse.models.loading import load_pretrained_model
    from vlparse.models.single_stream import VisualParsingModel

    if not isinstance(pretrained, bool):
        if overrides or vocab_size is not None:
            raise ValueError("create_model: a saved model fixes its architecture; give no "
                             "overrides or vocab_size with pretrained=<folder>")
        model = load_pretrained_model(Path(pretrained))
        saved = (model.backbone if hasattr(model, "backbone") else model).cfg.name
        wanted = _model_config(name_or_cfg, {}).name
        if saved != wanted:
            raise ValueError(f"create_model: {pretrained} holds a '{saved}' model, not "
                             f"'{wanted}'; ask for create_model('{saved}', pretrained=...)")
        return model
    cfg = _model_config(name_or_cfg, overrides)
    if cfg.family == "fiber":
        model = _fiber_model(cfg, vocab_size)
    else:
        vocab = vocab_size or cfg.text.vocab_size or DEFAULT_VOCAB_SIZE
        model = VisualParsingModel(cfg, vocab, cls_token_id=cls_token_id,
                                   sep_token_id=sep_token_id)
    if pretrained:
        if not (cfg.visual.pretrained or cfg.text.pretrained):
            raise ValueError(
                f"create_model(pretrained=True): the config '{cfg.name}' names no "
                "initialisation source (model.visual.pretrained, model.text.pretrained)"
            )
        model.load_pretrained()
    return model


def _fiber_model(cfg: FiberModelConfig, vocab_size: int | None) -> Any:
    from vlparse.models.fiber import FiberModel

    if vocab_size is not None:
        raise ValueError("create_model: a FIBER model's vocabulary is model.text.vocab_size "
                         "(its pretrained text backbone's); override text={'vocab_size': ...}")
    return FiberModel(cfg)
