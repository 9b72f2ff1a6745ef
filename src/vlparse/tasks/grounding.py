"""The box tasks of FIBER's fine-grained stage: phrase grounding (Flickr30K Entities), referring
expressions (RefCOCO/+/g, :mod:`vlparse.tasks.refexp`) and detection from a category prompt
(COCO, :mod:`vlparse.tasks.detection`).

One model serves the three (the family's box model, e.g.
:class:`~vlparse.models.fiber.grounding.FiberForGrounding`): it scores every anchor's box
against every token of the caption or prompt. Training (``step``): ATSS assigns anchors to the
ground-truth boxes, whose phrases' tokens are the alignment targets; focal, GIoU and centerness
losses (the model's ``loss``). Evaluation: the boxes of each phrase in original-image pixels and
the task's metric beside the baselines (:mod:`vlparse.tasks.grounding_eval`).

Data (:mod:`vlparse.data.grounding`): the manifest data sets of the task (``flickr_entities``,
``refcoco``, ``coco_detection`` in the scene world), images resized with the shorter side drawn
from ``model.detection.train_sizes`` (evaluation: ``test_size``), the longer capped at
``max_size``, padded to the backbone's stride; captions cut at ``model.detection.max_text_len``
tokens (boxes whose phrase was cut are dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from vlparse.config import FinetuneConfig
from vlparse.data.grounding import BoxDataset, BoxSource, collate_boxes, read_box_source
from vlparse.errors import ConfigError, EmptyDatasetError
from vlparse.tasks.base import Task
from vlparse.tasks.grounding_eval import grounding_metrics, predict_boxes
from vlparse.train.protocol import StepOutput

__all__ = ["BoxTask", "GroundingTask", "box_dataset", "box_step", "build_task"]


def box_step(model: nn.Module, batch: dict[str, Any],
             reduce_count: Callable[[Tensor], Tensor]) -> StepOutput:
    """The box model's losses on a batch; scalars ``loss``, ``alignment``, ``box``,
    ``centerness`` and ``positive_anchors``."""
    image = batch["image"]
    dev = image.device
    mask = batch["attention_mask"].to(dev)
    out = model(image, batch["input_ids"].to(dev), mask)
    losses = model.loss(out, [b.to(dev) for b in batch["boxes"]],
                        [t.to(dev) for t in batch["box_tokens"]], mask, reduce_count)
    scalars: dict[str, Any] = {"loss": losses.total.detach()}
    scalars.update({k: v.detach() for k, v in losses.parts.items()})
    scalars["positive_anchors"] = float(losses.num_positive)
    return StepOutput(losses.total, scalars)


def box_dataset(sources: list[BoxSource], model_cfg: Any, tokenizer: Any, train: bool,
                flip_prob: float = 0.0, on_error: str = "skip", max_records: int = 0
                ) -> BoxDataset:
    """A :class:`~vlparse.data.grounding.BoxDataset` of the sources' records with the sizes
    of ``model_cfg.detection`` (``max_records > 0`` keeps the first ones); its ``source`` is
    the first source."""
    d = model_cfg.detection
    records = [r for s in sources for r in s.records]
    if max_records:
        records = records[:max_records]
    if not records:
        raise EmptyDatasetError("no box examples in the chosen data sets and splits")
    sizes = d.train_sizes if train else [d.test_size]
    stride = model_cfg.visual.patch_size * 2 ** (len(model_cfg.visual.depths) - 1)
    return BoxDataset(records, tokenizer, d.max_text_len, sizes, d.max_size, stride,
                      train=train, flip_prob=flip_prob if train else 0.0, on_error=on_error,
                      source=sources[0])


class BoxTask(Task):
    """What the three box tasks share: data, collate and step. A subclass names its kind of
    data (``kind``) and its metric (``evaluate``)."""

    kind = ""
    zero_shot = True  # a fine-grained pre-trained model grounds, refers and detects as it is

    def sources(self, manifest: dict, sets: list[str], splits: list[str]) -> list[BoxSource]:
        """The box records of ``sets`` x ``splits``, all of this task's kind."""
        out = []
        for name in sets:
            for split in splits:
                src = read_box_source(manifest, name, split)
                if src.kind != self.kind:
                    raise ConfigError(f"data set {name!r} holds {src.kind} data; the {self.name} "
                                      f"task reads {self.kind} data")
                out.append(src)
        return out

    def dataset(self, manifest, sets, splits, cfg: FinetuneConfig, processor, labels, train
                ) -> Dataset:
        sources = self.sources(manifest, sets, splits)
        cap = 0 if train else cfg.task.eval_max_images
        return box_dataset(sources, cfg.model, processor.tokenizer, train, cfg.task.flip_prob,
                           cfg.data.on_error if train else "raise", cap)

    def texts(self, dataset) -> list[str]:
        return [r.caption for r in dataset.records]

    def collate(self, items):
        return collate_boxes(items)

    def step(self, model, batch, reduce_count, cfg) -> StepOutput:
        return box_step(model, batch, reduce_count)


class GroundingTask(BoxTask):
    """Phrase grounding; Recall@1/5/10 (any-box, IoU >= ``task.iou_threshold``)."""

    name = "grounding"
    recipe = "grounding"
    kind = "grounding"
    default_split = "test"
    metric_keys = ("recall@1", "recall@5", "recall@10")

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        found = predict_boxes(model, dataset, cfg, device, progress, "evaluate grounding")
        return grounding_metrics(dataset, found, cfg.task.iou_threshold)


def build_task() -> GroundingTask:
    """The grounding task (registered in :data:`vlparse.tasks.base.TASK_MODULES`)."""
    return GroundingTask()
