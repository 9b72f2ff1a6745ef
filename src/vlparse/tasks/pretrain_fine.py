"""FIBER's fine-grained pre-training (``objectives.stage: fine``): the fused backbone and the box
head trained on grounding and detection data mixed, the trainer's task protocol.

``vlparse pretrain --config fiber_fine_tiny --init RUN`` starts from a coarse-grained run (its
backbone weights and architecture; the config's ``model.detection`` section sizes the new head);
without ``--init`` the backbone starts from the sources the config names (ImageNet / text
weights). The training data are every ``data.train_sets`` x ``data.train_splits`` of the
manifest that holds boxes (MDETR-style grounding files, COCO instances with their category
prompt; :func:`~vlparse.data.grounding.read_box_source`), mixed in one shuffled set; each step
is the box tasks' step (:func:`~vlparse.tasks.grounding.box_step`). The held-out evaluation
scores ``data.val_set`` / ``val_split`` with its own metric (Recall@k, top-1 accuracy or COCO
AP) over at most ``train.eval_images`` examples. The exported model (``run/model``) is a
:class:`~vlparse.models.fiber.grounding.FiberForGrounding` saved as pre-trained: ``vlparse
evaluate grounding | refexp | detection`` takes it zero-shot and ``vlparse finetune`` continues
it, head included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vlparse.config import PretrainConfig
from vlparse.data.grounding import collate_boxes, read_box_source
from vlparse.data.manifest import load_manifest
from vlparse.errors import ConfigError
from vlparse.models.fiber import FiberModel, FiberProcessor
from vlparse.models.fiber.grounding import FiberForGrounding
from vlparse.tasks.grounding import box_dataset, box_step
from vlparse.tasks.grounding_eval import (
    detection_metrics,
    grounding_metrics,
    predict_boxes,
    refexp_metrics,
)
from vlparse.tasks.loading import load_model
from vlparse.train.protocol import StepContext, StepOutput

__all__ = ["FLIP_PROB", "FineGrainedPretrainTask", "evaluate_box_source"]

FLIP_PROB = 0.5
"""Chance of a horizontal flip of a training image (never when its caption says left/right)."""


def evaluate_box_source(model: nn.Module, dataset: Any, cfg: Any, device: torch.device,
                        progress: bool = True) -> dict[str, Any]:
    """The metric of the dataset's kind of data (``dataset.source``): Recall@k, top-1
    accuracy or COCO AP, with the baselines."""
    src = dataset.source
    found = predict_boxes(model, dataset, cfg, device, progress, f"evaluate {src.kind}")
    if src.kind == "detection":
        return detection_metrics(dataset, found, src.instances, src.prompt.category_ids)
    if src.kind == "refexp":
        return refexp_metrics(dataset, found)
    return grounding_metrics(dataset, found)


class FineGrainedPretrainTask:
    """Fine-grained pre-training (see the module docstring).

    Args:
        cfg: a pre-training config of family ``fiber`` with ``objectives.stage: fine``.
        manifest_path: the data manifest.
        init: a coarse-grained run (or any saved FIBER model) to start from.
        evaluate: read the held-out split.
        init_weights: load the config's initialisation sources when there is no ``init`` (off
            on ``--resume``).
        log: where start-up lines go.
    """

    name = "pretrain"
    find_unused_parameters = True  # the coarse stage's heads get no gradient

    def __init__(self, cfg: PretrainConfig, manifest_path: str | Path, *,
                 init: str | Path | None = None, evaluate: bool = True,
                 init_weights: bool = True, log: Callable[[str], None] | None = print) -> None:
        if cfg.model.family != "fiber" or cfg.objectives.stage != "fine":
            raise ConfigError("fine-grained pre-training needs model.family=fiber and "
                              "objectives.stage=fine")
        self._log, self.init_weights, self.init = log, init_weights, init
        self._backbone: FiberModel | None = None
        if init is not None:
            loaded = load_model(init)
            if not isinstance(loaded.backbone, FiberModel):
                raise ConfigError(f"--init {init}: not a FIBER model")
            self._backbone, self.processor = loaded.backbone, loaded.processor
            model = dataclasses.replace(loaded.backbone.cfg, detection=cfg.model.detection)
            cfg = dataclasses.replace(cfg, model=model)  # the architecture it starts from
            self._backbone.cfg = model
        else:
            self.processor = FiberProcessor.from_config(cfg.model)
        self.cfg = cfg
        manifest = load_manifest(manifest_path)
        d = cfg.data
        sources = [read_box_source(manifest, n, s) for n in d.train_sets for s in d.train_splits]
        self.kinds = sorted({s.kind for s in sources})
        self._train = box_dataset(sources, cfg.model, self.processor.tokenizer, True, FLIP_PROB,
                                  d.on_error)
        self._val: Dataset | None = None
        if evaluate:
            src = read_box_source(manifest, d.val_set, d.val_split)
            self._val = box_dataset([src], cfg.model, self.processor.tokenizer, False,
                                    max_records=cfg.train.eval_images)
        self.log(f"fine-grained data: {len(self._train)} examples ({', '.join(self.kinds)})"
                 + (f", starting from {init}" if init is not None else ""))

    def log(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def build_model(self) -> FiberForGrounding:
        """The box model on the ``--init`` backbone, or on a new one initialised from the
        config's sources; saved as pre-trained (``task: pretrain``)."""
        backbone = self._backbone
        if backbone is None:
            backbone = FiberModel(self.cfg.model, objectives=self.cfg.objectives)
            m = self.cfg.model
            if self.init_weights and (m.visual.pretrained or m.text.pretrained):
                for name, report in backbone.load_pretrained().items():
                    self.log(f"pretrained {name}: {report}")
        return FiberForGrounding(backbone, task="pretrain")

    def train_dataset(self) -> Dataset:
        return self._train

    def eval_dataset(self) -> Dataset | None:
        return self._val

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate_boxes(items)

    def step(self, model: nn.Module, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        return box_step(model, batch, ctx.reduce_count)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if self._val is None:
            return {}
        result = evaluate_box_source(model, self._val, self.cfg, device, self.cfg.train.progress)
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}

    def curve_keys(self) -> list[str]:
        return ["loss", "alignment", "box", "centerness", "lr"]

    def summary(self, result: Any) -> dict[str, Any]:
        return {"stage": "fine", "init": str(self.init) if self.init is not None else None,
                "train_examples": len(self._train), "data": self.kinds,
                "model": self.cfg.model.name, "held_out": result.final_metrics}
