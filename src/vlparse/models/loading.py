"""Load a pre-trained vlparse model back from a ``vlparse pretrain`` run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlparse.config import PretrainConfig

__all__ = ["find_run_dir", "load_run"]

CONFIG_NAME = "config.yaml"


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

    from vlparse.config import from_dict, validate
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.processing.tokenization import build_tokenizer, special_ids
    from vlparse.train.checkpoint import find_checkpoint, load_model_weights

    path = Path(path)
    run_dir = find_run_dir(path)
    ckpt = find_checkpoint(path)  # raises FileNotFoundError naming what exists
    data = yaml.safe_load((run_dir / CONFIG_NAME).read_text()) or {}
    cfg = from_dict(PretrainConfig, data)
    validate(cfg)
    tokenizer = build_tokenizer(cfg.model.text.tokenizer)
    ids = special_ids(tokenizer)
    vocab = cfg.model.text.vocab_size or ids["vocab_size"]
    model = VisualParsingModel(cfg.model, vocab, cls_token_id=ids["cls"], sep_token_id=ids["sep"])
    report = load_model_weights(ckpt, model)
    missing = list(report.missing)
    if missing:
        import warnings

        warnings.warn(
            f"load_run: {len(missing)} weights missing from {ckpt} (e.g. {missing[:3]}); they "
            "keep their initial values.",
            stacklevel=2,
        )
    model.eval()
    return model, cfg, tokenizer
