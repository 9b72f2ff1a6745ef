"""Loading models back: a folder written by ``save_pretrained`` (self-contained), or a
``vlparse pretrain`` run folder (its config and the model weights of a checkpoint).

Run folders are read without the trainer's code: only ``config.yaml`` and a checkpoint's
``model.safetensors`` are used, so loading never unpickles anything.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from vlparse.config import PretrainConfig
from vlparse.errors import CheckpointError
from vlparse.io.checkpoint import find_checkpoint
from vlparse.models.base import WEIGHTS_NAME, read_pretrained_config

__all__ = ["find_run_dir", "load_pretrained_model", "load_run"]

CONFIG_NAME = "config.yaml"


def load_pretrained_model(directory: str | Path) -> Any:
    """The model a ``save_pretrained`` folder holds, of whatever class its ``config.json``
    names (:class:`~vlparse.models.single_stream.VisualParsingModel`,
    :class:`~vlparse.models.fiber.FiberModel` or a task model).

    Raises:
        FileNotFoundError: not a ``save_pretrained`` folder; ValueError: an unknown
            architecture.
    """
    from vlparse.models.fiber import FiberModel
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.models.vp_tasks import TASK_MODELS

    config = read_pretrained_config(directory)
    classes = {c.__name__: c for c in (VisualParsingModel, FiberModel, *TASK_MODELS.values())}
    cls = classes.get(config["architecture"])
    if cls is None:
        raise ValueError(
            f"{directory}: unknown architecture {config['architecture']!r} of family "
            f"{config['family']!r}; this version of vlparse knows {', '.join(sorted(classes))}"
        )
    return cls.from_pretrained(directory)


def find_run_dir(path: str | Path) -> Path:
    """The run folder of ``path``: the folder itself when it holds ``config.yaml``, else the
    run folder two levels up of a checkpoint step folder (``run/checkpoints/step_XXXXXXXX``),
    or one level up of a ``checkpoints`` folder.

    Raises:
        FileNotFoundError: ``path`` does not exist or no ``config.yaml`` is found near it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"load_run: {path} does not exist; pass a run folder written by 'vlparse pretrain' "
            "or one of its checkpoints/step_XXXXXXXX folders."
        )
    if path.is_file():
        path = path.parent
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise FileNotFoundError(
        f"load_run: no {CONFIG_NAME} in {path} nor in the two folders above it; a run folder "
        f"written by 'vlparse pretrain' holds {CONFIG_NAME} and checkpoints/."
    )


def load_run(path: str | Path) -> tuple[Any, PretrainConfig, Any]:
    """Rebuild the model of a pre-training run and load its checkpoint weights.

    Args:
        path: a run folder (its ``checkpoints/latest`` is used) or a checkpoint step folder
            ``run/checkpoints/step_XXXXXXXX`` (that checkpoint is used, with the config of the
            run two levels up).

    Returns:
        ``(model, cfg, tokenizer)``: a :class:`~vlparse.models.single_stream.VisualParsingModel`
        in eval mode on the CPU, the run's resolved :class:`~vlparse.config.PretrainConfig` and
        its tokenizer.

    Raises:
        FileNotFoundError: the folder, its ``config.yaml`` or its checkpoint is missing.
    """
    import yaml
    from safetensors.torch import load_model

    from vlparse.config import from_dict, validate
    from vlparse.models.processor import VisualParsingProcessor
    from vlparse.models.single_stream import VisualParsingModel

    run_dir = find_run_dir(path)
    weights = find_checkpoint(path) / WEIGHTS_NAME
    data = yaml.safe_load((run_dir / CONFIG_NAME).read_text()) or {}
    cfg = from_dict(PretrainConfig, data)
    validate(cfg)
    processor = VisualParsingProcessor.from_config(cfg.model)
    ids = processor.special_ids
    vocab = cfg.model.text.vocab_size or ids["vocab_size"]
    model = VisualParsingModel(cfg.model, vocab, cls_token_id=ids["cls"], sep_token_id=ids["sep"],
                               objectives=cfg.objectives)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise CheckpointError(weights, f"cannot be read, the file is damaged or truncated "
                                       f"({type(e).__name__}: {e})") from None
    if missing or unexpected:
        warnings.warn(
            f"load_run: {weights} does not match the model of {run_dir / CONFIG_NAME}: "
            f"{len(missing)} weights missing (e.g. {sorted(missing)[:3]}; they keep their "
            f"initial values), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})",
            stacklevel=2,
        )
    model.eval()
    return model, cfg, processor.tokenizer

