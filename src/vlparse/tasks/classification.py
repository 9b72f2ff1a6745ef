"""What the classification tasks (SNLI-VE, NLVR2) share: the step (the task model's loss and the
accuracy counts), reading their records from the manifest, the evaluation loader, accuracy with
the majority baseline, and a :class:`ClassificationTask` base that a task completes with its
data set class and the batch key of its images. VQA reuses the record and loader helpers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vlparse.config import FinetuneConfig
from vlparse.data.finetune import collate_finetune, finetune_records
from vlparse.errors import ConfigError, EmptyDatasetError
from vlparse.tasks.base import Task
from vlparse.train.protocol import StepOutput
from vlparse.utils import autocast as precision_autocast

__all__ = [
    "ClassificationTask",
    "classification_step",
    "eval_loader",
    "evaluate_classifier",
    "manifest_records",
    "to_device",
]


def classification_step(model: nn.Module, images: Tensor, batch: dict[str, Any],
                        reduce_count) -> StepOutput:
    """The task model's loss on ``images`` and the batch's texts and ``label (B,)`` (``-1``
    unlabelled, ignored), normalised by the mean count of labelled examples per process (so
    that DDP's gradient average gives the mean over the global batch); its value and the
    ``accuracy_correct`` / ``accuracy_total`` counts."""
    labels = batch["label"]
    valid = labels >= 0
    normalizer = reduce_count(valid.sum().float()).clamp_min(1.0)
    out = model(images, batch["input_ids"], batch["attention_mask"], labels=labels,
                loss_normalizer=normalizer)
    correct = int(((out.logits.argmax(-1) == labels) & valid).sum())
    return StepOutput(out.loss, {"loss": float(out.loss.detach())},
                      {"accuracy_correct": correct, "accuracy_total": int(valid.sum())})


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on ``device``."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


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
    model: nn.Module,
    dataset: Dataset,
    cfg: FinetuneConfig,
    device: torch.device,
    image_key: str = "image",
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Accuracy of the ``argmax`` of the task model's logits (on ``batch[image_key]`` and the
    texts) over the labelled examples.

    Returns:
        ``accuracy`` (``None`` when no example has a label), ``num_examples`` (all examples),
        ``num_labelled``, ``majority_baseline`` (accuracy of always predicting the most
        frequent label of the split) and ``predictions`` (class per example, in order).
    """
    autocast = precision_autocast(cfg.train.precision, device)
    preds, labels = [], []
    for batch in eval_loader(dataset, cfg, device, progress, desc):
        batch = to_device(batch, device)
        with autocast:
            logits = model(batch[image_key], batch["input_ids"], batch["attention_mask"]).logits
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
    on_error, transform, encode=)``), ``image_key`` (the batch's images, given to the task model),
    ``text_field`` (the records' text) and ``labels_required_in_eval``.
    """

    metric_keys = ("accuracy",)
    kind: str = ""
    dataset_class: type
    image_key = "image"
    text_field = ""
    labels_required_in_eval = True

    def dataset(self, manifest, sets, splits, cfg, processor, labels, train) -> Dataset:
        records = manifest_records(manifest, sets, splits, self.kind,
                                   require_labels=train or self.labels_required_in_eval)
        if not train and cfg.task.eval_max_images:
            records = records[: cfg.task.eval_max_images]
        on_error = cfg.data.on_error if train else "raise"  # a score needs every example
        return self.dataset_class(records, processor.tokenizer, processor.image_size,
                                  processor.max_text_len, on_error, processor.image_transform,
                                  encode=processor.encode_text)

    def texts(self, dataset) -> list[str]:
        return [getattr(r, self.text_field) for r in dataset.records]

    def collate(self, items):
        return collate_finetune(items)

    def step(self, model, batch, reduce_count, cfg) -> StepOutput:
        return classification_step(model, batch[self.image_key], batch, reduce_count)

    def evaluate(self, model, dataset, cfg, device, progress=True) -> dict[str, Any]:
        return evaluate_classifier(model, dataset, cfg, device, self.image_key, progress,
                                   f"evaluate {self.name}")

    def write_outputs(self, result, out_json):
        result = dict(result)
        result.pop("predictions", None)
        return result
