"""What the classification tasks (SNLI-VE, NLVR2) share: the loss and step, reading their
records from the manifest, the evaluation loader, accuracy with the majority baseline, and a
:class:`ClassificationTask` base that a task completes with its data set class and ``logits``.
VQA reuses the record and loader helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlparse.config import FinetuneConfig
from vlparse.data.finetune import collate_finetune, finetune_records
from vlparse.errors import ConfigError, EmptyDatasetError
from vlparse.tasks.finetune import FinetuneModel, Task
from vlparse.train.protocol import StepOutput
from vlparse.utils import autocast as precision_autocast

__all__ = [
    "ClassificationTask",
    "classification_loss",
    "classification_step",
    "eval_loader",
    "evaluate_classifier",
    "manifest_records",
]


def classification_loss(logits: Tensor, labels: Tensor, normalizer: Tensor | float) -> Tensor:
    """Summed cross-entropy of ``logits (B, C)`` against ``labels (B,)`` divided by
    ``normalizer`` (the mean number of examples per process, so that DDP's gradient average
    gives the mean over the global batch). Labels ``< 0`` (unlabelled) are ignored."""
    return F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum") / normalizer


def classification_step(logits: Tensor, labels: Tensor, reduce_count) -> StepOutput:
    """Loss, its value and the ``accuracy_correct`` / ``accuracy_total`` counts of a batch."""
    valid = labels >= 0
    normalizer = reduce_count(valid.sum().float()).clamp_min(1.0)
    loss = classification_loss(logits, labels, normalizer)
    correct = int(((logits.argmax(-1) == labels) & valid).sum())
    return StepOutput(loss, {"loss": float(loss.detach())},
                      {"accuracy_correct": correct, "accuracy_total": int(valid.sum())})


def manifest_records(manifest: dict, sets: list[str], splits: list[str], kind: str,
                     require_labels: bool = True) -> list:
    """Records of every manifest data set in ``sets`` x ``splits``, read as ``kind``
    (``vqa``, ``nlvr2`` or ``snli_ve``, the official format of that task)."""
    records: list = []
    for name in sets:
        if name != kind:
            raise ConfigError(
                f"data set {name!r}: the {kind} task reads the manifest data set {kind!r}; set "
                f"data.train_sets=[{kind}] and data.val_set={kind}"
            )
        records += finetune_records(manifest, name, splits, require_labels=require_labels)
    if not records:
        raise EmptyDatasetError(f"no {kind} examples in {sets} x {splits} of the manifest")
    return records


def eval_loader(dataset: Dataset, cfg: FinetuneConfig, device: torch.device, progress: bool,
                desc: str):
    """A non-shuffling loader of ``dataset`` in batches of ``train.batch_size``."""
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=collate_finetune,
                        pin_memory=device.type == "cuda")
    return tqdm(loader, desc=desc, unit="batch", leave=False) if progress else loader


@torch.no_grad()
def evaluate_classifier(
    model: FinetuneModel,
    dataset: Dataset,
    cfg: FinetuneConfig,
    device: torch.device,
    logits_fn: Callable[[FinetuneModel, dict[str, Any]], Tensor],
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Accuracy of ``argmax logits_fn(model, batch)`` over the labelled examples.

    Returns:
        ``accuracy`` (``None`` when no example has a label), ``num_examples`` (all examples),
        ``num_labelled``, ``majority_baseline`` (accuracy of always predicting the most
        frequent label of the split) and ``predictions`` (class per example, in order).
    """
    autocast = precision_autocast(cfg.train.precision, device)
    preds, labels = [], []
    for batch in eval_loader(dataset, cfg, device, progress, desc):
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        with autocast:
            logits = logits_fn(model, batch)
        preds.append(logits.float().argmax(-1).cpu())
        labels.append(batch["label"].cpu())
    pred, label = torch.cat(preds), torch.cat(labels)
    valid = label >= 0
    n = int(valid.sum())
    majority = None
    if n:
        majority = float(torch.bincount(label[valid]).max()) / n
    return {
        "accuracy": float((pred[valid] == label[valid]).float().mean()) if n else None,
        "num_examples": int(label.numel()),
        "num_labelled": n,
        "majority_baseline": majority,
        "predictions": pred.tolist(),
    }


class ClassificationTask(Task):
    """A task scored by accuracy of ``argmax`` logits against ``batch["label"]``.

    A subclass sets ``name``, ``recipe``, ``default_split``, ``kind`` (the manifest data set and
    its format), ``dataset_class`` (called as ``(records, tokenizer, image_size, max_text_len,
    on_error)``), ``labels_required_in_eval`` and implements :meth:`logits` and ``build_head``.
    """

    metric_keys = ("accuracy",)
    kind: str = ""
    dataset_class: type
    labels_required_in_eval = True

    def logits(self, model: FinetuneModel, batch: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def dataset(self, manifest, sets, splits, cfg, tokenizer, state, train) -> Dataset:
        records = manifest_records(manifest, sets, splits, self.kind,
                                   require_labels=train or self.labels_required_in_eval)
        if not train and cfg.task.eval_max_images:
            records = records[: cfg.task.eval_max_images]
        on_error = cfg.data.on_error if train else "raise"  # a score needs every example
        return self.dataset_class(records, tokenizer, cfg.model.visual.image_size,
                                  cfg.model.text.max_text_len, on_error)

    def collate(self, items):
        return collate_finetune(items)

    def step_fn(self, model, batch, reduce_count, cfg) -> StepOutput:
        return classification_step(self.logits(model, batch), batch["label"], reduce_count)

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_classifier(model, dataset, cfg, device, self.logits, progress,
                                   f"evaluate {self.name}")

    def write_outputs(self, result, out_json):
        result = dict(result)
        result.pop("predictions", None)
        return result
