"""Loading a trained model from wherever vlparse wrote it, with its processor.

:func:`load_model` takes

- a folder written by ``save_pretrained`` (a family's model or a task model, with its
  processor): nothing else is read;
- a run folder of ``vlparse pretrain`` or ``vlparse finetune``: its exported ``model/`` when
  present, else its newest intact checkpoint rebuilt from ``config.yaml`` (and, for a VQA run,
  the answers of ``task_state.json``);
- a checkpoint folder ``run/checkpoints/step_XXXXXXXX``: that checkpoint.

Nothing is unpickled: configs are YAML or JSON, weights safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vlparse.config import FinetuneConfig, PretrainConfig, from_dict
from vlparse.errors import CheckpointError
from vlparse.io.checkpoint import find_checkpoint
from vlparse.io.runs import read_run_config, run_task
from vlparse.models.loading import (
    find_run_dir,
    is_pretrained_folder,
    load_pretrained_model,
    load_processor,
    load_run,
)
from vlparse.models.task_registry import processor_for, task_model_class
from vlparse.tasks.base import TASK_STATE_NAME, get_task
from vlparse.train.checkpoint import load_model_weights

__all__ = ["PRETRAIN", "LoadedModel", "load_model", "load_finetuned_checkpoint"]

PRETRAIN = "pretrain"
"""The task name of a pre-trained (not fine-tuned) model."""


@dataclass
class LoadedModel:
    """A model as :func:`load_model` found it.

    Attributes:
        model: the family's model (``task == "pretrain"``) or a task model, in eval mode on the
            CPU.
        processor: its processor (image transform and tokenizer).
        task: ``"pretrain"``, ``"retrieval"``, ``"vqa"``, ``"nlvr2"`` or ``"snli-ve"``.
        path: the folder the weights came from.
        config: the run's config when loaded from a run folder, else ``None``.
    """

    model: nn.Module
    processor: Any
    task: str
    path: Path
    config: PretrainConfig | FinetuneConfig | None = None

    @property
    def backbone(self) -> nn.Module:
        """The family's model: ``model`` itself, or the backbone of a task model."""
        return getattr(self.model, "backbone", self.model)


def _from_folder(folder: Path, config: Any = None) -> LoadedModel:
    from safetensors import SafetensorError

    try:
        model = load_pretrained_model(folder)
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        # a damaged or foreign folder: the user's file, named, not a traceback
        raise CheckpointError(folder, f"cannot be loaded as a saved model: {e}") from None
    task = getattr(model, "task", None) or PRETRAIN
    return LoadedModel(model, load_processor(folder, model), task, folder, config)


def _run_config(run_dir: Path) -> PretrainConfig | FinetuneConfig:
    cls = FinetuneConfig if run_task(run_dir) is not None else PretrainConfig
    return from_dict(cls, read_run_config(run_dir))


def load_finetuned_checkpoint(path: str | Path) -> LoadedModel:
    """A ``vlparse finetune`` run's checkpoint (``path``: the run folder, its newest intact
    checkpoint, or a step folder) rebuilt from its config and task state.

    Raises:
        CheckpointError: a damaged weights file, or weights that do not match the config.
    """
    run_dir = find_run_dir(path)
    cfg = from_dict(FinetuneConfig, read_run_config(run_dir))
    state_file = run_dir / TASK_STATE_NAME
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    processor = processor_for(cfg.model)
    cls = task_model_class(cfg.model.family, cfg.task.name)
    model = cls.from_config(cfg.model, processor, cfg.task, get_task(cfg.task.name).labels(state))
    ckpt = find_checkpoint(path)
    report = load_model_weights(ckpt, model)
    if report.missing or report.unexpected:
        raise CheckpointError(
            ckpt / "model.safetensors",
            f"weights do not match the {cfg.task.name} model of {run_dir}/config.yaml: missing "
            f"{report.missing[:5]}, unexpected {report.unexpected[:5]} {' '.join(report.notes)}",
        )
    return LoadedModel(model.eval(), processor, cfg.task.name, ckpt, cfg)


def load_model(path: str | Path) -> LoadedModel:
    """The model saved at ``path`` (see the module docstring), on the CPU in eval mode.

    Raises:
        FileNotFoundError: nothing vlparse wrote is at ``path``.
        CheckpointError: a damaged or foreign ``config.json``, weights that cannot be read or
            do not match.
    """
    path = Path(path)
    if is_pretrained_folder(path):
        return _from_folder(path)
    run_dir = find_run_dir(path)
    if path.resolve() == run_dir.resolve() and is_pretrained_folder(run_dir / "model"):
        return _from_folder(run_dir / "model", _run_config(run_dir))
    if run_task(run_dir) is not None:
        return load_finetuned_checkpoint(path)
    model, cfg, _ = load_run(path)
    return LoadedModel(model, processor_for(cfg.model), PRETRAIN, find_checkpoint(path), cfg)
