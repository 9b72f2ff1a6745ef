"""Fine-tuning and evaluation on a downstream task, with the one trainer.

:class:`FinetuneTask` adapts a :class:`~vlparse.tasks.base.Task` to the trainer's protocol
(:class:`~vlparse.train.protocol.TrainTask`): it builds the task model of the config's model
family (:func:`~vlparse.models.task_registry.task_model_class`), on a pre-trained model
(``init``) or from scratch, and exposes the model's processor, which the trainer saves with the
model it exports (``run/model``). :func:`run_finetune` runs it with the trainer
(:func:`~vlparse.train.trainer.train`: checkpoints, logs, resume, DDP, ``summary.json``);
:func:`run_evaluate` loads a fine-tuned model (a run folder, a checkpoint or a
``save_pretrained`` folder; for zero-shot tasks a pre-trained one) and writes the task's metrics
as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vlparse.config import FINETUNE_TASKS, FinetuneConfig
from vlparse.errors import ConfigError, WrongTaskError
from vlparse.io.files import atomic_write_json
from vlparse.models.task_registry import processor_for, task_model_class
from vlparse.processing.tokenization import report_unknown_tokens
from vlparse.tasks.base import TASK_STATE_NAME, Task, get_task
from vlparse.tasks.loading import PRETRAIN, load_model
from vlparse.train.protocol import StepContext, StepOutput

__all__ = ["FinetuneTask", "finetune_task", "load_for_task", "run_evaluate", "run_finetune"]


class FinetuneTask:
    """A fine-tuning :class:`~vlparse.tasks.base.Task` as the trainer's task.

    Args:
        task: the task.
        cfg: the recipe, its ``model`` section the one of ``backbone`` when one is given.
        manifest: the data manifest (loaded).
        backbone: a pre-trained model of the family to start from (``None``: from scratch).
        processor: ``backbone``'s processor (default: the one ``cfg.model`` names).
        init: where ``backbone`` came from (recorded in the summary).
        evaluate: read the validation split and evaluate on it.
        log: where start-up lines go (``None``: nowhere, e.g. on processes other than the
            first).

    The task state derived from the training data (e.g. the VQA answers, which size the head)
    is computed here and kept in the run folder as ``task_state.json`` (:meth:`run_files`).
    """

    find_unused_parameters = True  # the pre-training heads get no gradient

    def __init__(self, task: Task, cfg: FinetuneConfig, manifest: dict, *,
                 backbone: nn.Module | None = None, processor: Any = None,
                 init: str | Path | None = None, evaluate: bool = True,
                 log: Callable[[str], None] | None = print) -> None:
        self.task, self.cfg, self.manifest = task, cfg, manifest
        self.name = task.name
        self.backbone, self.init, self.evaluating, self._log = backbone, init, evaluate, log
        self.processor = processor if processor is not None else processor_for(cfg.model)
        self.state = task.prepare(manifest, cfg)
        self.labels = task.labels(self.state)
        self._train_set: Dataset | None = None
        self._val_set: Dataset | None = None

    def build_model(self) -> nn.Module:
        """The family's task model: on ``backbone`` (its head from the pre-trained one where
        the task says so) or on a fresh backbone of ``cfg.model``."""
        cfg = self.cfg
        cls = task_model_class(cfg.model.family, self.name)
        if self.backbone is not None:
            model = cls.from_backbone(self.backbone, cfg.task, self.labels, pretrained=True)
        else:
            model = cls.from_config(cfg.model, self.processor, cfg.task, self.labels)
        if cfg.train.compile:
            model.compile_backbone()
        return model

    def run_files(self) -> dict[str, str]:
        return {TASK_STATE_NAME: json.dumps(self.state) + "\n"}

    def _dataset(self, sets: list[str], splits: list[str], train: bool) -> Dataset:
        return self.task.dataset(self.manifest, sets, splits, self.cfg, self.processor,
                                 self.labels, train)

    def train_dataset(self) -> Dataset:
        """The training examples; the first call reports the rate of unknown tokens in their
        texts (and warns above 1 %)."""
        if self._train_set is None:
            d = self.cfg.data
            self._train_set = self._dataset(d.train_sets, d.train_splits, True)
            report_unknown_tokens(self.processor.tokenizer, self.task.texts(self._train_set),
                                  f"the {self.name} training texts", log=self._log)
        return self._train_set

    def eval_dataset(self) -> Dataset | None:
        if self._val_set is None and self.evaluating:
            d = self.cfg.data
            self._val_set = self._dataset([d.val_set], [d.val_split], False)
        return self._val_set

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.task.collate(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        return self.task.step(model, batch, ctx.reduce_count, self.cfg)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        result = self.task.evaluate(model, self.eval_dataset(), self.cfg, device,
                                    progress=self.cfg.train.progress)
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}

    def curve_keys(self) -> list[str]:
        return ["loss", "lr"]

    def summary(self, result) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "task": self.name,
            "init": str(self.init) if self.init is not None else None,
            "examples_seen": result.images_seen,
            "model": self.cfg.model.name,
            "val_split": f"{d.val_set}/{d.val_split}" if self.evaluating else None,
            "val": result.final_metrics,
        }


# --------------------------------------------------------------------------- commands


def _check_task(task_name: str, cfg: FinetuneConfig) -> Task:
    if task_name not in FINETUNE_TASKS:
        raise ConfigError(f"unknown task {task_name!r}; choose one of {', '.join(FINETUNE_TASKS)}")
    if cfg.task.name != task_name:
        raise ConfigError(
            f"the recipe is for task {cfg.task.name!r}, not {task_name!r}; pass a {task_name} "
            f"recipe (--config) or the override task.name={task_name}"
        )
    return get_task(task_name)


def finetune_task(task_name: str, cfg: FinetuneConfig, manifest: dict,
                  init: str | Path | None = None, evaluate: bool = True,
                  log: Callable[[str], None] | None = print) -> FinetuneTask:
    """The :class:`FinetuneTask` of ``task_name`` with ``cfg``: on the model saved at ``init``
    (see :func:`~vlparse.tasks.loading.load_model`), whose architecture replaces
    ``cfg.model``, or from scratch."""
    task = _check_task(task_name, cfg)
    backbone = processor = None
    if init is not None:
        loaded = load_model(init)
        backbone, processor = loaded.backbone, loaded.processor
        if task_name in getattr(loaded.model, "whole_for", ()):
            backbone = loaded.model  # e.g. a fine-grained FIBER run keeps its box head
        cfg = dataclasses.replace(cfg, model=backbone.cfg)  # the architecture it starts from
    return FinetuneTask(task, cfg, manifest, backbone=backbone, processor=processor, init=init,
                        evaluate=evaluate, log=log)


def run_finetune(
    task_name: str,
    cfg: FinetuneConfig,
    manifest_path: str | Path,
    out_dir: str | Path,
    init: str | Path | None = None,
    resume: bool = False,
    evaluate: bool = True,
    overwrite: bool = False,
) -> dict:
    """Fine-tune on ``cfg.data.train_sets`` x ``train_splits`` of a manifest with the one
    trainer, evaluate on ``cfg.data.val_set`` / ``val_split``, write ``summary.json`` and the
    fine-tuned model with its processor (``out_dir/model``, ``save_pretrained``).

    Args:
        task_name: ``retrieval``, ``vqa``, ``nlvr2`` or ``snli-ve`` (must equal ``cfg.task.name``).
        init: a pre-trained model to start from: a pre-training or fine-tuning run folder, a
            checkpoint or a ``save_pretrained`` folder; its model section replaces ``cfg.model``.
            ``None`` = from scratch.
        resume, overwrite: continue the run in ``out_dir``, or move it aside and start anew.

    Returns:
        The summary (also in ``out_dir/summary.json``): steps, examples, checkpoint, the
        validation metrics ``val`` and where the model came from ``init``.
    """
    from vlparse.data.manifest import load_manifest
    from vlparse.train.distributed import cleanup, init_distributed
    from vlparse.train.trainer import train

    dist = init_distributed()
    finetune = finetune_task(task_name, cfg, load_manifest(manifest_path), init, evaluate,
                             log=print if dist.is_main else None)
    result = train(finetune, finetune.cfg, out_dir, resume=resume, overwrite=overwrite,
                   evaluate=evaluate, dist=dist)
    cleanup()
    return result.summary


def load_for_task(task: Task, path: str | Path) -> tuple[nn.Module, FinetuneConfig, Any]:
    """The task model to evaluate for ``task`` and its config and processor: a model
    fine-tuned for ``task`` (its run's config, else the task's recipe with the model's
    architecture), or, for a zero-shot task, a pre-trained model wrapped in the task model
    (its head from the pre-trained one).

    Raises:
        WrongTaskError: a model of another task, or a pre-trained one for a task that needs
            fine-tuning.
    """
    from vlparse.config import load_config

    loaded = load_model(path)
    if loaded.task not in (task.name, PRETRAIN):
        raise WrongTaskError(
            f"{path} was fine-tuned for {loaded.task!r}, not {task.name!r}; evaluate it with "
            f"'vlparse evaluate {loaded.task}'"
        )
    if loaded.task == PRETRAIN and not task.zero_shot:
        raise WrongTaskError(
            f"{path} is a pre-trained model; task {task.name!r} needs a fine-tuned one "
            f"('vlparse finetune {task.name} --init {path} ...')"
        )
    cfg = loaded.config
    if not isinstance(cfg, FinetuneConfig):
        recipe = load_config(task.recipe, cls=FinetuneConfig)
        cfg = dataclasses.replace(recipe, model=loaded.backbone.cfg)
    model = loaded.model
    if loaded.task == PRETRAIN:
        cls = task_model_class(cfg.model.family, task.name)
        model = cls.from_backbone(loaded.model, cfg.task, pretrained=True).eval()
    return model, cfg, loaded.processor


def run_evaluate(
    task_name: str,
    checkpoint: str | Path,
    manifest_path: str | Path,
    split: str,
    out_json: str | Path | None = None,
    dataset: str | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a fine-tuned model on one split of a manifest and write the metrics as JSON.

    Args:
        task_name: the task the model was fine-tuned for.
        checkpoint: the run folder, a ``checkpoints/step_*`` folder or a ``save_pretrained``
            folder. For retrieval, a pre-trained model is also accepted (zero-shot, scored by
            its ITM head).
        split: the split of the data set, e.g. ``test``.
        dataset: the manifest data set (default: the run's ``data.val_set``).
        overrides: ``key=value`` changes of the run's config for evaluation, e.g.
            ``task.rerank_k=128`` or ``task.eval_batch_pairs=8192``. ``task.eval_max_images`` is
            reset to 0 (the whole split) unless given here.
        device: ``cuda``, ``cpu``...; default CUDA when available.

    Returns:
        The task's metrics plus ``split``, ``dataset``, ``task``, ``checkpoint``, ``wall_s``.

    Raises:
        WrongTaskError: ``checkpoint`` is a model of another task.
    """
    from vlparse.config import apply_overrides, from_dict, to_dict
    from vlparse.data.manifest import load_manifest

    task = get_task(task_name)
    t0 = time.perf_counter()
    model, cfg, processor = load_for_task(task, checkpoint)
    # A cap on evaluation size set for validation during training does not carry over: a
    # stand-alone evaluation covers the whole split unless the caller asks otherwise.
    changes = ["task.eval_max_images=0", *(overrides or [])]
    cfg = from_dict(FinetuneConfig, apply_overrides(to_dict(cfg), changes))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    name = dataset or cfg.data.val_set
    data = task.dataset(load_manifest(manifest_path), [name], [split], cfg, processor,
                        model.labels, False)
    with torch.no_grad():
        result = task.evaluate(model, data, cfg, dev, progress=progress)
    missing = [k for k in (*task.metric_keys, "num_examples") if k not in result]
    if missing:
        raise RuntimeError(f"task {task_name!r}: evaluate() returned no {missing}")
    result = task.write_outputs(result, Path(out_json) if out_json is not None else None)
    result = {**result, "split": split, "dataset": name, "task": task_name,
              "checkpoint": str(checkpoint), "wall_s": time.perf_counter() - t0}
    if out_json is not None:
        atomic_write_json(out_json, result)
    return result
