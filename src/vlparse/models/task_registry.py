"""Which classes make up each model family: its pre-trained model, its processor and its task
models. The fine-tuning tasks (:mod:`vlparse.tasks`) and the inference API (:mod:`vlparse.api`)
find every class here, by ``model.family`` and task name, and never import a family's module
themselves; a second family (FIBER, ``model.family: fiber``) joins by writing the classes below
and adding one line to :data:`FAMILY_MODELS`.

The interface the tasks call
----------------------------

**Every task model** (``task_model_class(family, task)``; the Visual Parsing ones are in
:mod:`vlparse.models.vp_tasks`):

- ``task: str`` (class attribute): ``"retrieval"``, ``"vqa"``, ``"nlvr2"`` or ``"snli-ve"``.
- ``from_backbone(backbone, task_cfg, labels=None, pretrained=False)`` (classmethod): wrap a
  model of the family (``backbone``, e.g. loaded from a pre-training run) with a new head.
  ``task_cfg`` is the task's section of :class:`~vlparse.config.FinetuneConfig` (its
  ``head_lr_mult`` at least); ``labels`` the head's classes where the data set them (the VQA
  answers); ``pretrained`` says that ``backbone`` holds trained weights (retrieval then starts
  its head from the pre-trained matching head when ``task_cfg.itm_head_init``).
- ``from_config(model_cfg, processor, task_cfg, labels=None)`` (classmethod): the same on a
  freshly initialised backbone of ``model_cfg`` sized for ``processor``'s tokenizer (no I/O).
- ``backbone``: the family's model inside (``backbone.cfg`` its model config).
- ``labels: list[str]``: the head's classes in output order (``id2label``).
- ``param_groups(optim)``, ``save_pretrained(dir, processor=None)``, ``from_pretrained(dir)``
  (:class:`~vlparse.models.base.PretrainedMixin`); ``compile_backbone()`` for
  ``train.compile``.
- ``forward(...) -> TaskOutput`` (:class:`~vlparse.models.outputs.TaskOutput`): ``logits`` and,
  when ``labels`` are given, ``loss`` divided by ``loss_normalizer`` (default: the local count;
  a fine-tuning step passes the mean count per process so DDP averages like one process).

**Classification** (``vqa``, ``nlvr2``, ``snli-ve``): ``forward(images, input_ids,
attention_mask, labels=None, loss_normalizer=None)`` with ``images (B, 3, S, S)`` (NLVR2:
``(B, 2, 3, S, S)``, left then right) and texts ``(B, L)`` from the processor; ``logits (B, C)``.
VQA's ``labels`` for the loss are soft scores ``(B, A)``; the others take class ids ``(B,)``,
``-1`` = unlabelled.

**Retrieval**:

- ``encode_images(images (B, 3, S, S)) -> Tensor (B, ...)``: per-image features computed once
  and reused for every caption (Visual Parsing: the parser's tokens ``(B, m, c)``); indexable
  along the first dimension.
- ``forward(images=None, input_ids, attention_mask, labels=None, image_features=None,
  loss_normalizer=None)``: logits ``(P, 2)`` of ``P`` aligned pairs (class 1 = matched), from
  images or from their ``encode_images`` features.
- ``match_scores(image_features (P, ...), input_ids (P, L), attention_mask (P, L)) -> (P,)``:
  float scores, higher = better match (the margin ``z_1 - z_0``).
- ``shortlist_embeddings(image_features (I, ...), input_ids (T, L), attention_mask (T, L))
  -> ((I, D), (T, D))`` (optional): L2-normalised embeddings whose dot product is a cheap
  first-stage score; ``task.rerank_k > 0`` re-scores only its top candidates (FIBER: the ITC
  embeddings of its dual-encoder pass).

**A processor** (``processor_for(model_cfg)``; :class:`~vlparse.models.processor.
VisualParsingProcessor`): ``tokenizer``, ``image_size``, ``max_text_len``, ``special_ids``;
``image_transform`` (an 8-bit RGB PIL image -> ``(3, S, S)``, picklable for data-loading
workers) and ``image(PIL image of any mode, or path) -> (3, S, S)``; ``encode_text(texts,
padding) -> (input_ids, attention_mask)``, the text part the family's model expects;
``__call__(images=, text=)``; ``save_pretrained`` / ``from_pretrained``;
``from_config(model_cfg)``. The fine-tuning data sets transform and tokenise through these, so a
family with another text convention (FIBER's ``[CLS] W [SEP]``) only brings its processor.

**The family's model** (``base_model_class(family)``): ``cfg`` (its model config),
``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from vlparse.errors import ConfigError

__all__ = [
    "FamilyModels",
    "FAMILY_MODELS",
    "architectures",
    "base_model_class",
    "processor_class",
    "processor_for",
    "task_model_class",
]


@dataclass(frozen=True)
class FamilyModels:
    """Where one family's classes live, as ``"module:Class"`` (imported when first asked for,
    so that importing vlparse does not import timm or transformers).

    Attributes:
        model: the pre-trained model.
        processor: its processor.
        tasks: the module whose ``TASK_MODELS`` maps task names to task model classes.
    """

    model: str
    processor: str
    tasks: str


FAMILY_MODELS: Mapping[str, FamilyModels] = MappingProxyType({
    "visual_parsing": FamilyModels(
        model="vlparse.models.single_stream:VisualParsingModel",
        processor="vlparse.models.processor:VisualParsingProcessor",
        tasks="vlparse.models.vp_tasks",
    ),
    "fiber": FamilyModels(
        model="vlparse.models.fiber:FiberModel",
        processor="vlparse.models.fiber:FiberProcessor",
        tasks="vlparse.models.fiber.tasks",
    ),
})
"""Every family with task models, by the value of ``model.family``."""


def _family(family: str) -> FamilyModels:
    if family not in FAMILY_MODELS:
        raise ConfigError(
            f"model family {family!r} has no task models or processor in this version of "
            f"vlparse (families with them: {', '.join(FAMILY_MODELS)})"
        )
    return FAMILY_MODELS[family]


def _resolve(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def base_model_class(family: str) -> type:
    """The pre-trained model class of ``family``."""
    return _resolve(_family(family).model)


def processor_class(family: str) -> type:
    """The processor class of ``family``."""
    return _resolve(_family(family).processor)


def _task_models(family: str) -> Mapping[str, type]:
    return importlib.import_module(_family(family).tasks).TASK_MODELS


def task_model_class(family: str, task: str) -> type:
    """The task model of ``task`` (``retrieval``, ``vqa``, ``nlvr2``, ``snli-ve``) in
    ``family``.

    Raises:
        ConfigError: the family has no task models, or none for ``task``.
    """
    models = _task_models(family)
    if task not in models:
        raise ConfigError(f"model family {family!r} has no task model for {task!r}; it has "
                          f"{', '.join(models) or 'none'}")
    return models[task]


def processor_for(model_cfg: Any) -> Any:
    """The processor of a model config (its family's class, its tokenizer and image size)."""
    return processor_class(model_cfg.family).from_config(model_cfg)


def architectures() -> dict[str, type]:
    """Every class a ``save_pretrained`` folder may name in its ``config.json``
    (``architecture``): each family's model and task models, by class name."""
    found: dict[str, type] = {}
    for family in FAMILY_MODELS:
        for cls in (base_model_class(family), *_task_models(family).values()):
            found[cls.__name__] = cls
    return found
