"""Evaluation of the box tasks: the model's boxes per phrase in original-image pixels, and the
field's metrics beside the simple baselines (:mod:`vlparse.eval.grounding`,
:mod:`vlparse.eval.detection`).

- grounding: Recall@1/5/10 over the phrases that have a ground-truth box (any-box protocol); a
  phrase cut away by truncation counts as a miss.
- referring expressions: top-1 accuracy of the expression's best box, at IoU and at generalised
  IoU.
- detection: ``COCOeval`` AP / AP50 / AP75 of the boxes found for each category of the prompt.

Baselines, scored by the same metric: ``largest_box`` (grounding and referring expressions:
the largest box that any caption or expression of the picture annotates in the data set;
detection: the largest box of the image for every category it contains) and ``random_box`` (a
box of the ground truth's size at a uniformly random place, seed 0; detection: one per
ground-truth box, with its category).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlparse.config import FinetuneConfig
from vlparse.data.grounding import BoxDataset, collate_boxes, record_boxes
from vlparse.eval.detection import coco_detection_ap, coco_results
from vlparse.eval.grounding import (
    largest_box_baseline,
    phrase_recall_at_k,
    random_box_baseline,
    refexp_accuracy,
)
from vlparse.models.detection.postprocess import Detections, phrase_rankings
from vlparse.utils import autocast as precision_autocast

__all__ = ["detection_metrics", "grounding_metrics", "predict_boxes", "refexp_metrics"]

KS = (1, 5, 10)


@torch.no_grad()
def predict_boxes(model: nn.Module, dataset: BoxDataset, cfg: FinetuneConfig,
                  device: torch.device, progress: bool = True, desc: str = "evaluate"
                  ) -> dict[int, Detections]:
    """``{record index: detections}`` with boxes in the record's original pixels and
    ``phrases`` indexing ``record.phrases``."""
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=collate_boxes)
    autocast = precision_autocast(cfg.train.precision, device)
    found: dict[int, Detections] = {}
    model.eval()
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not progress):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with autocast:
            out = model(batch["image"].to(device), ids, mask)
        dets = model.detect(out, batch["phrase_maps"], batch["sizes"])
        for det, rec, (sx, sy) in zip(dets, batch["records"], batch["scales"], strict=True):
            scale = torch.tensor([sx, sy, sx, sy], device=det.boxes.device)
            found[rec] = Detections(det.boxes.float().cpu() / scale.cpu(), det.scores.cpu(),
                                    det.phrases.cpu())
    return found


def _empty() -> Tensor:
    return torch.zeros(0, 4)


def _image_pools(dataset: BoxDataset) -> dict[Any, Tensor]:
    """Per picture, the distinct annotated boxes of all its captions or expressions in the
    data set ``(C, 4)``: the candidates of the largest-box baseline."""
    by_image: dict[Any, list[Tensor]] = defaultdict(list)
    for rec in dataset.records:
        by_image[rec.image_id].append(record_boxes(rec))
    return {k: torch.unique(torch.cat(v), dim=0) for k, v in by_image.items()}


def grounding_metrics(dataset: BoxDataset, found: dict[int, Detections],
                      iou_threshold: float = 0.5) -> dict[str, Any]:
    """Recall@k of the model and R@1 of the baselines over every phrase with a box."""
    pools = _image_pools(dataset)
    ranked, truth, largest, first_gt, sizes = [], [], [], [], []
    for r, det in found.items():
        rec = dataset.records[r]
        boxes = record_boxes(rec)
        rankings = phrase_rankings(det, len(rec.phrases), k=max(KS))
        for p, members in enumerate(rec.phrase_boxes()):
            if not members:
                continue
            ranked.append(rankings[p])
            truth.append(boxes[members])
            largest.append(pools[rec.image_id])
            first_gt.append(boxes[members[0]])
            sizes.append((rec.height, rec.width))
    if not truth:
        raise ValueError("grounding: no phrase with a ground-truth box to evaluate")
    recall = phrase_recall_at_k(ranked, truth, KS, iou_threshold)
    big = largest_box_baseline(largest)
    rand = random_box_baseline(torch.stack(first_gt), torch.tensor(sizes))
    return {
        **{f"recall@{k}": recall[k] for k in KS},
        "largest_box_recall@1": phrase_recall_at_k(list(big[:, None]), truth, (1,),
                                                   iou_threshold)[1],
        "random_box_recall@1": phrase_recall_at_k(list(rand[:, None]), truth, (1,),
                                                  iou_threshold)[1],
        "num_phrases": len(truth), "num_examples": len(found),
    }


def refexp_metrics(dataset: BoxDataset, found: dict[int, Detections],
                   iou_threshold: float = 0.5, generalized: bool = False) -> dict[str, Any]:
    """Top-1 accuracy (IoU and GIoU) of the model and of the baselines; ``accuracy`` is the
    GIoU one when ``generalized`` else the IoU one. The largest-box baseline picks among the
    referred boxes of every expression of the same image."""
    pools = _image_pools(dataset)
    pred, gt, pool, sizes = [], [], [], []
    for r, det in found.items():
        rec = dataset.records[r]
        top = phrase_rankings(det, max(1, len(rec.phrases)), k=1)[0]
        pred.append(top[0] if top.shape[0] else torch.zeros(4))
        gt.append(record_boxes(rec)[0])
        pool.append(pools[rec.image_id])
        sizes.append((rec.height, rec.width))
    pred_t, gt_t = torch.stack(pred), torch.stack(gt)
    big = largest_box_baseline(pool)
    rand = random_box_baseline(gt_t, torch.tensor(sizes))
    out: dict[str, Any] = {"num_examples": len(found)}
    for name, boxes in (("", pred_t), ("largest_box_", big), ("random_box_", rand)):
        out[f"{name}accuracy_iou"] = refexp_accuracy(boxes, gt_t, iou_threshold)
        out[f"{name}accuracy_giou"] = refexp_accuracy(boxes, gt_t, iou_threshold, True)
    out["accuracy"] = out["accuracy_giou" if generalized else "accuracy_iou"]
    return out


def _baseline_results(dataset: BoxDataset, record_indices: list[int], category_ids: list[int]
                      ) -> tuple[list[dict], list[dict]]:
    """COCO results of the largest-box and random-box baselines."""
    largest, rand_boxes, rand_cats, ids, sizes = [], [], [], [], []
    for r in record_indices:
        rec = dataset.records[r]
        boxes = record_boxes(rec)
        if not boxes.shape[0]:
            continue
        cats = torch.tensor([b.category_id for b in rec.boxes])
        big = boxes[int(((boxes[:, 2:] - boxes[:, :2]).prod(1)).argmax())]
        present = sorted(set(cats.tolist()) & set(category_ids))
        largest += coco_results([rec.image_id], [big.expand(len(present), 4)],
                                [torch.ones(len(present))], [torch.tensor(present)])
        rand_boxes.append(boxes)
        rand_cats.append(cats)
        ids.append(rec.image_id)
        sizes += [(rec.height, rec.width)] * boxes.shape[0]
    rand = random_box_baseline(torch.cat(rand_boxes), torch.tensor(sizes)).split(
        [b.shape[0] for b in rand_boxes])
    random_results = coco_results(ids, list(rand), [torch.ones(b.shape[0]) for b in rand],
                                  rand_cats)
    return largest, random_results


def detection_metrics(dataset: BoxDataset, found: dict[int, Detections], instances: str,
                      category_ids: list[int]) -> dict[str, Any]:
    """AP / AP50 / AP75 (and the rest of ``COCOeval``'s stats) of the model and AP of the
    baselines, over the evaluated images."""
    records = sorted(found)
    image_ids = [dataset.records[r].image_id for r in records]
    cats = torch.tensor(category_ids)
    results = coco_results(image_ids, [found[r].boxes for r in records],
                           [found[r].scores for r in records],
                           [cats[found[r].phrases] for r in records])
    stats = coco_detection_ap(instances, results, image_ids)
    largest, rand = _baseline_results(dataset, records, category_ids)
    return {
        **stats,
        "largest_box_AP": coco_detection_ap(instances, largest, image_ids)["AP"],
        "random_box_AP": coco_detection_ap(instances, rand, image_ids)["AP"],
        "num_examples": len(records),
    }
