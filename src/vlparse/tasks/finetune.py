"""Fine-tuning and evaluation of a Visual Parsing model on a downstream task.

A task plugs in by subclassing :class:`Task` in ``vlparse/tasks/<module>.py`` and exposing a
module-level ``build_task() -> Task``; :data:`TASK_MODULES` maps each task name to its module.
:class:`FinetuneTask` adapts a :class:`Task` to the trainer's protocol
(:class:`~vlparse.train.protocol.TrainTask`), and :func:`run_finetune` runs it with the one
trainer (:class:`~vlparse.train.trainer.Trainer`): model from a pre-trained run (``init``) or from
scratch, the task head, checkpoints, logs, resume, DDP and ``summary.json``; :func:`run_evaluate`
rebuilds a fine-tuned run and writes the task's metrics as JSON.

What a task provides (all on :class:`Task`):

- ``prepare(manifest, cfg, tokenizer) -> dict``: JSON-ready state derived from the training
  data (e.g. the VQA answer vocabulary); saved as ``task_state.json`` in the run folder and given
  back to ``build_head`` and ``dataset`` at evaluation time.
- ``build_head(model_cfg, cfg, state) -> nn.Module``: the head on top of the backbone.
- ``init_head(head, backbone)``: called once when starting from a pre-trained backbone.
- ``dataset(manifest, sets, splits, cfg, tokenizer, state, train) -> Dataset`` and
  ``collate(items) -> batch``: items carry ``index`` and a ``skipped`` list like
  :class:`~vlparse.data.pretrain.PretrainDataset`; the loop counts images per batch from the
  first tensor's leading size.
- ``step_fn(model, batch, reduce_count, cfg) -> StepOutput``: the loss of one batch;
  ``reduce_count`` turns a local count into the mean over processes (loss normalisers).
- ``evaluate(model, dataset, cfg, device, progress) -> dict``: the metrics, with every key of
  ``metric_keys`` and ``num_examples``; ``split`` is added by :func:`run_evaluate`.
- ``write_outputs(result, out_json) -> dict`` (optional): files written beside the evaluation
  JSON, e.g. the VQA test-server submission.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import FINETUNE_TASKS, FinetuneConfig, ModelConfig
from vlparse.errors import ConfigError, TaskNotImplementedError, WrongTaskError
from vlparse.io.files import atomic_write_json
from vlparse.io.runs import read_run_config, run_task
from vlparse.tasks.finetune_model import FinetuneModel, build_backbone, with_run_model
from vlparse.train.protocol import StepContext, StepOutput

__all__ = [
    "TASK_MODULES",
    "TASK_STATE_NAME",
    "TaskNotImplementedError",
    "Task",
    "FinetuneModel",
    "FinetuneTask",
    "get_task",
    "build_finetune_model",
    "load_finetuned",
    "run_finetune",
    "run_evaluate",
]

TASK_MODULES: types.MappingProxyType[str, str] = types.MappingProxyType(
    {
        "retrieval": "vlparse.tasks.retrieval",
        "vqa": "vlparse.tasks.vqa",
        "nlvr2": "vlparse.tasks.nlvr2",
        "snli-ve": "vlparse.tasks.snli_ve",
    }
)
"""Task name -> module that defines ``build_task()``; read-only."""

TASK_STATE_NAME = "task_state.json"


class Task:
    """A fine-tuning task. Subclass it and override the methods that raise.

    Attributes:
        name: the task name (a key of :data:`TASK_MODULES`).
        recipe: the built-in recipe used when ``--config`` is not given.
        default_split: the split ``vlparse evaluate`` documents as the usual test split.
        metric_keys: keys every ``evaluate`` result must have (besides ``num_examples``).
        zero_shot: ``vlparse evaluate`` may take a pre-training run (head from ``init_head``).
    """

    name: str = ""
    recipe: str = ""
    default_split: str = "test"
    metric_keys: tuple[str, ...] = ()
    zero_shot: bool = False

    def prepare(self, manifest: dict, cfg: FinetuneConfig, tokenizer) -> dict[str, Any]:
        """State derived from the training data, JSON-ready (default: none)."""
        return {}

    def build_head(self, model_cfg: ModelConfig, cfg: FinetuneConfig, state: dict) -> nn.Module:
        """The task head (randomly initialised, no I/O)."""
        raise NotImplementedError(f"task {self.name!r} defines no build_head")

    def init_head(self, head: nn.Module, backbone: nn.Module) -> None:
        """Initialise ``head`` from a pre-trained ``backbone`` (default: nothing)."""

    def dataset(
        self,
        manifest: dict,
        sets: list[str],
        splits: list[str],
        cfg: FinetuneConfig,
        tokenizer,
        state: dict,
        train: bool,
    ) -> Dataset:
        """The examples of ``sets`` x ``splits`` of the manifest."""
        raise NotImplementedError(f"task {self.name!r} defines no dataset")

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items -> batch (default: :func:`~vlparse.data.collate.stack_items`, which
        stacks every tensor field and gathers ``index`` and ``skipped``)."""
        from vlparse.data.collate import stack_items

        return stack_items(items)

    def step_fn(
        self,
        model: FinetuneModel,
        batch: dict[str, Any],
        reduce_count: Callable[[Tensor], Tensor],
        cfg: FinetuneConfig,
    ):
        """The loss of one batch as a :class:`~vlparse.train.protocol.StepOutput`."""
        raise NotImplementedError(f"task {self.name!r} defines no step_fn")

    def evaluate(
        self,
        model: FinetuneModel,
        dataset: Dataset,
        cfg: FinetuneConfig,
        device: torch.device,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Metrics of ``model`` on ``dataset`` (``metric_keys`` and ``num_examples``)."""
        raise NotImplementedError(f"task {self.name!r} defines no evaluate")

    def write_outputs(self, result: dict[str, Any], out_json: Path | None) -> dict[str, Any]:
        """Called by :func:`run_evaluate` after ``evaluate``: write the task's extra files
        beside ``out_json`` (e.g. the VQA test-server file; nothing when ``None``) and return
        the JSON-ready result to report, without bulky entries (default: unchanged)."""
        return result


def get_task(name: str) -> Task:
    """The task called ``name`` (``retrieval``, ``vqa``, ``nlvr2``, ``snli-ve``).

    Raises:
        ConfigError: unknown name.
        TaskNotImplementedError: the task's module does not exist yet.
    """
    if name not in TASK_MODULES:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASK_MODULES)}")
    module_name = TASK_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise TaskNotImplementedError(
            f"task {name!r} is not yet implemented in this version of vlparse ({module_name} "
            f"does not exist); implemented: {', '.join(_implemented())}"
        ) from None
    task = module.build_task()
    if not isinstance(task, Task) or task.name != name:
        raise TypeError(f"{module_name}.build_task() must return a Task named {name!r}")
    return task


def _implemented() -> list[str]:
    return [n for n, m in TASK_MODULES.items() if importlib.util.find_spec(m) is not None]


# --------------------------------------------------------------------------- the model


def _backbone_from(init: str | Path) -> tuple[nn.Module, ModelConfig, Any]:
    """Backbone, its model config and tokenizer from a pre-training or fine-tuning run."""
    from vlparse.models.loading import find_run_dir, load_run

    if run_task(find_run_dir(init)) is not None:
        model, cfg, tokenizer, _ = load_finetuned(init)
        return model.backbone, cfg.model, tokenizer
    backbone, pcfg, tokenizer = load_run(init)
    return backbone, pcfg.model, tokenizer


def build_finetune_model(
    task: Task,
    cfg: FinetuneConfig,
    state: dict,
    init: str | Path | None = None,
    tokenizer=None,
) -> tuple[FinetuneModel, FinetuneConfig, Any]:
    """Backbone (loaded from ``init``, else fresh from ``cfg.model``) plus the task head.

    With ``init`` the run's model config replaces ``cfg.model`` and ``task.init_head`` runs.

    Returns:
        ``(model, cfg, tokenizer)``; ``cfg`` is a copy with the model section actually used.
    """
    import dataclasses

    if init is not None:
        backbone, model_cfg, tokenizer = _backbone_from(init)
        cfg = dataclasses.replace(cfg, model=model_cfg)
    else:
        backbone, tokenizer = build_backbone(cfg.model, tokenizer)
    head = task.build_head(cfg.model, cfg, state)
    if init is not None:
        task.init_head(head, backbone)
    return FinetuneModel(backbone, head, cfg.task.head_lr_mult), cfg, tokenizer


def load_finetuned(path: str | Path) -> tuple[FinetuneModel, FinetuneConfig, Any, dict]:
    """Rebuild a ``vlparse finetune`` run (its folder or a ``checkpoints/step_*`` folder).

    Returns:
        ``(model, cfg, tokenizer, state)``, the model in eval mode on the CPU.

    Raises:
        FileNotFoundError: no run folder / checkpoint; CheckpointError: a damaged weights file
        (named) or weights that do not match.
    """
    from vlparse.config import from_dict
    from vlparse.errors import CheckpointError
    from vlparse.models.loading import find_run_dir
    from vlparse.train.checkpoint import find_checkpoint, load_model_weights

    run_dir = find_run_dir(path)
    ckpt = find_checkpoint(path)
    cfg = from_dict(FinetuneConfig, read_run_config(run_dir))
    state_file = run_dir / TASK_STATE_NAME
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    task = get_task(cfg.task.name)
    model, cfg, tokenizer = build_finetune_model(task, cfg, state)
    report = load_model_weights(ckpt, model)
    if report.missing or report.unexpected:
        raise CheckpointError(
            ckpt / "model.safetensors",
            f"weights do not match the {cfg.task.name} model of {run_dir}/config.yaml: missing "
            f"{report.missing[:5]}, unexpected {report.unexpected[:5]} {' '.join(report.notes)}",
        )
    model.eval()
    return model, cfg, tokenizer, state


def _load_for_eval(task: Task, checkpoint: str | Path):
    """A fine-tuned run, or (for tasks that accept it, e.g. zero-shot retrieval) a pre-training
    run wrapped with a head initialised from it."""
    from vlparse.config import load_config
    from vlparse.models.loading import find_run_dir

    run_dir = find_run_dir(checkpoint)
    tuned = run_task(run_dir)
    if tuned is not None:
        if tuned != task.name:
            raise WrongTaskError(
                f"{run_dir} was fine-tuned for {tuned!r}, not {task.name!r}; evaluate it with "
                f"'vlparse evaluate {tuned}'"
            )
        return load_finetuned(checkpoint)
    if not task.zero_shot:
        raise WrongTaskError(
            f"{run_dir} is a pre-training run; task {task.name!r} needs a fine-tuned run "
            f"('vlparse finetune {task.name} --init {checkpoint} ...')"
        )
    cfg = load_config(task.recipe, cls=FinetuneConfig)
    model, cfg, tokenizer = build_finetune_model(task, cfg, {}, init=checkpoint)
    return model.eval(), cfg, tokenizer, {}


# --------------------------------------------------------------------------- the trainer's task


class FinetuneTask:
    """A fine-tuning :class:`Task` as the trainer's :class:`~vlparse.train.protocol.TrainTask`.

    ``cfg`` is the recipe with its final model section (:func:`with_run_model` when starting
    from ``init``). :meth:`build_model` also derives the task state from the training data (e.g.
    the VQA answers), which the run folder keeps as ``task_state.json`` (:meth:`run_files`).
    """

    find_unused_parameters = True  # the pre-training heads get no gradient

    def __init__(self, task: Task, cfg: FinetuneConfig, manifest: dict,
                 init: str | Path | None = None, evaluate: bool = True) -> None:
        self.task, self.cfg, self.manifest, self.init = task, cfg, manifest, init
        self.name = task.name
        self.evaluating = evaluate
        self.state: dict[str, Any] = {}
        self.tokenizer: Any = None
        self._train_set: Dataset | None = None
        self._val_set: Dataset | None = None

    def build_model(self) -> nn.Module:
        task, cfg = self.task, self.cfg
        model, cfg, self.tokenizer = build_finetune_model(task, cfg, {}, init=self.init)
        self.state = task.prepare(self.manifest, cfg, self.tokenizer)
        if self.state:  # heads that depend on the data (e.g. VQA answers) are built again
            model.head = task.build_head(cfg.model, cfg, self.state)
            if self.init is not None:
                task.init_head(model.head, model.backbone)
        if cfg.train.compile:
            model.backbone.visual.compile()
            model.backbone.encoder.compile()
        return model

    def run_files(self) -> dict[str, str]:
        return {TASK_STATE_NAME: json.dumps(self.state) + "\n"}

    def train_dataset(self) -> Dataset:
        if self._train_set is None:
            d = self.cfg.data
            self._train_set = self.task.dataset(self.manifest, d.train_sets, d.train_splits,
                                                self.cfg, self.tokenizer, self.state, True)
        return self._train_set

    def eval_dataset(self) -> Dataset | None:
        if self._val_set is None and self.evaluating:
            d = self.cfg.data
            self._val_set = self.task.dataset(self.manifest, [d.val_set], [d.val_split],
                                              self.cfg, self.tokenizer, self.state, False)
        return self._val_set

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self.task.collate(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        return self.task.step_fn(model, batch, ctx.reduce_count, self.cfg)

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
    trainer, evaluate on ``cfg.data.val_set`` / ``val_split``, write ``summary.json``.

    Args:
        task_name: ``retrieval``, ``vqa``, ``nlvr2`` or ``snli-ve`` (must equal ``cfg.task.name``).
        init: a pre-training (or fine-tuning) run folder or checkpoint; ``None`` = from scratch.
        resume, overwrite: continue the run in ``out_dir``, or move it aside and start anew.

    Returns:
        The summary (also in ``out_dir/summary.json``): steps, examples, checkpoint, the
        validation metrics ``val`` and where the model came from ``init``.
    """
    from vlparse.data.manifest import load_manifest
    from vlparse.train.distributed import cleanup
    from vlparse.train.trainer import train

    if task_name not in FINETUNE_TASKS:
        raise ConfigError(f"unknown task {task_name!r}; choose one of {', '.join(FINETUNE_TASKS)}")
    if cfg.task.name != task_name:
        raise ConfigError(
            f"the recipe is for task {cfg.task.name!r}, not {task_name!r}; pass a {task_name} "
            f"recipe (--config) or the override task.name={task_name}"
        )
    task = get_task(task_name)
    cfg = with_run_model(cfg, init)
    finetune = FinetuneTask(task, cfg, load_manifest(manifest_path), init, evaluate)
    result = train(finetune, cfg, out_dir, resume=resume, overwrite=overwrite, evaluate=evaluate)
    cleanup()
    return result.summary


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
    """Evaluate a fine-tuned run on one split of a manifest and write the metrics as JSON.

    Args:
        task_name: the task the run was fine-tuned for.
        checkpoint: the run folder or a ``checkpoints/step_*`` folder. For retrieval, a
            pre-training run is also accepted (zero-shot, scored by its ITM head).
        split: the split of the data set, e.g. ``test``.
        dataset: the manifest data set (default: the run's ``data.val_set``).
        overrides: ``key=value`` changes of the run's config for evaluation, e.g.
            ``task.rerank_k=128`` or ``task.eval_batch_pairs=8192``. ``task.eval_max_images`` is
            reset to 0 (the whole split) unless given here.
        device: ``cuda``, ``cpu``...; default CUDA when available.

    Returns:
        The task's metrics plus ``split``, ``dataset``, ``task``, ``checkpoint``, ``wall_s``.

    Raises:
        WrongTaskError: ``checkpoint`` is a run of another task.
    """
    from vlparse.config import apply_overrides, from_dict, to_dict
    from vlparse.data.manifest import load_manifest

    task = get_task(task_name)
    t0 = time.perf_counter()
    model, cfg, tokenizer, state = _load_for_eval(task, checkpoint)
    # A cap on evaluation size set for validation during training does not carry over: a
    # stand-alone evaluation covers the whole split unless the caller asks otherwise.
    changes = ["task.eval_max_images=0", *(overrides or [])]
    cfg = from_dict(FinetuneConfig, apply_overrides(to_dict(cfg), changes))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    manifest = load_manifest(manifest_path)
    name = dataset or cfg.data.val_set
    data = task.dataset(manifest, [name], [split], cfg, tokenizer, state, False)
    with torch.no_grad():
        result = task.evaluate(model, data, cfg, dev, progress=progress)
    missing = [k for k in (*task.metric_keys, "num_examples") if k not in result]
    if missing:
        raise RuntimeError(f"task {task_name!r}: evaluate() returned no {missing}")
    result = task.write_outputs(result, Path(out_json) if out_json is not None else None)
    result = {
        **result,
        "split": split,
        "dataset": name,
        "task": task_name,
        "checkpoint": str(checkpoint),
        "wall_s": time.perf_counter() - t0,
    }
    if out_json is not None:
        atomic_write_json(out_json, result)
    return result
