"""What a fine-tuning task is: the :class:`Task` base class and the registry of task modules.

A task plugs in by subclassing :class:`Task` in ``vlparse/tasks/<module>.py`` and exposing a
module-level ``build_task() -> Task``; :data:`TASK_MODULES` maps each task name to its module.
A task owns its data and its metric; the model it trains is its family's task model
(:func:`vlparse.models.task_registry.task_model_class`), which a task only calls through the
interface documented there, so one task serves every model family.

What a task provides (all on :class:`Task`):

- ``prepare(manifest, cfg) -> dict``: JSON-ready state derived from the training data (e.g. the
  VQA answer vocabulary), saved as ``task_state.json`` in the run folder; ``labels(state)``:
  the head's classes it implies (the answers), or ``None`` for a fixed head.
- ``dataset(manifest, sets, splits, cfg, processor, labels, train) -> Dataset`` and
  ``collate(items) -> batch``: items carry ``index`` and a ``skipped`` list like
  :class:`~vlparse.data.pretrain.PretrainDataset`; images and texts go through the model's
  processor (its tokenizer, image size and text length); ``labels`` are the model's.
- ``texts(dataset) -> list[str]``: the texts the run tokenizes (for the unknown-token report).
- ``step(model, batch, reduce_count, cfg) -> StepOutput``: the loss of one batch, from the task
  model's ``forward(..., labels=...)``; ``reduce_count`` turns a local count into the mean over
  processes (loss normalisers).
- ``evaluate(model, dataset, cfg, device, progress) -> dict``: the metrics from the task model's
  logits, with every key of ``metric_keys`` and ``num_examples``.
- ``write_outputs(result, out_json) -> dict`` (optional): files written beside the evaluation
  JSON, e.g. the VQA test-server submission.
"""

from __future__ import annotations

import importlib
import importlib.util
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import FinetuneConfig
from vlparse.errors import ConfigError, TaskNotImplementedError
from vlparse.train.protocol import StepOutput

__all__ = ["TASK_MODULES", "TASK_STATE_NAME", "Task", "get_task"]

TASK_MODULES: types.MappingProxyType[str, str] = types.MappingProxyType(
    {
        "retrieval": "vlparse.tasks.retrieval",
        "vqa": "vlparse.tasks.vqa",
        "nlvr2": "vlparse.tasks.nlvr2",
        "snli-ve": "vlparse.tasks.snli_ve",
        "caption": "vlparse.tasks.caption",
        "grounding": "vlparse.tasks.grounding",
        "refexp": "vlparse.tasks.refexp",
        "detection": "vlparse.tasks.detection",
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
        zero_shot: ``vlparse evaluate`` may take a pre-trained model (the task model's head
            then starts from the pre-trained one).
    """

    name: str = ""
    recipe: str = ""
    default_split: str = "test"
    metric_keys: tuple[str, ...] = ()
    zero_shot: bool = False

    def prepare(self, manifest: dict, cfg: FinetuneConfig) -> dict[str, Any]:
        """State derived from the training data, JSON-ready (default: none)."""
        return {}

    def labels(self, state: dict[str, Any]) -> list[str] | None:
        """The head's classes implied by ``state`` (default: ``None``, a fixed head)."""
        return None

    def dataset(self, manifest: dict, sets: list[str], splits: list[str], cfg: FinetuneConfig,
                processor: Any, labels: list[str], train: bool) -> Dataset:
        """The examples of ``sets`` x ``splits`` of the manifest."""
        raise NotImplementedError(f"task {self.name!r} defines no dataset")

    def texts(self, dataset: Dataset) -> list[str]:
        """Every text of ``dataset`` (the questions, captions, sentences ...)."""
        raise NotImplementedError(f"task {self.name!r} defines no texts")

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items -> batch (default: :func:`~vlparse.data.collate.stack_items`, which
        stacks every tensor field and gathers ``index`` and ``skipped``)."""
        from vlparse.data.collate import stack_items

        return stack_items(items)

    def step(self, model: nn.Module, batch: dict[str, Any],
             reduce_count: Callable[[Tensor], Tensor], cfg: FinetuneConfig) -> StepOutput:
        """The loss of one batch as a :class:`~vlparse.train.protocol.StepOutput`."""
        raise NotImplementedError(f"task {self.name!r} defines no step")

    def evaluate(self, model: nn.Module, dataset: Dataset, cfg: FinetuneConfig,
                 device: torch.device, progress: bool = True) -> dict[str, Any]:
        """Metrics of ``model`` on ``dataset`` (``metric_keys`` and ``num_examples``)."""
        raise NotImplementedError(f"task {self.name!r} defines no evaluate")

    def write_outputs(self, result: dict[str, Any], out_json: Path | None) -> dict[str, Any]:
        """Called by :func:`~vlparse.tasks.finetune.run_evaluate` after ``evaluate``: write the
        task's extra files beside ``out_json`` (e.g. the VQA test-server file; nothing when
        ``None``) and return the JSON-ready result to report, without bulky entries (default:
        unchanged)."""
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
