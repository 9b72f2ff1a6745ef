"""COCO detection AP through pycocotools ``COCOeval``, with results in the official format.

Results format (what the COCO server takes)::

    [{"image_id": 42, "category_id": 18, "bbox": [x, y, w, h], "score": 0.93}, ...]
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Mapping, Sequence

from torch import Tensor

__all__ = ["COCO_STAT_NAMES", "coco_detection_ap", "coco_results"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                   "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of ``COCOeval.stats`` in order (-1 where the ground truth has no box of that kind)."""


def coco_results(image_ids: Sequence[int], boxes: Sequence[Tensor], scores: Sequence[Tensor],
                 category_ids: Sequence[Tensor]) -> list[dict]:
    """Detections of several images in the official results format.

    Args:
        image_ids: the COCO image id of each image.
        boxes: per image ``(K, 4)`` xyxy boxes in original-image pixels.
        scores: per image ``(K,)``.
        category_ids: per image ``(K,)`` COCO category ids.
    """
    out = []
    for image_id, b, s, c in zip(image_ids, boxes, scores, category_ids, strict=True):
        xywh = b.detach().float().cpu().clone()
        xywh[:, 2:] -= xywh[:, :2]
        for box, score, cat in zip(xywh.tolist(), s.tolist(), c.tolist(), strict=True):
            out.append({"image_id": int(image_id), "category_id": int(cat),
                        "bbox": [round(v, 2) for v in box], "score": float(score)})
    return out


def _coco(ground_truth: str | os.PathLike | Mapping):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ground_truth, Mapping):
            gt = COCO()
            gt.dataset = copy.deepcopy(dict(ground_truth))
            gt.createIndex()
            return gt
        return COCO(os.fspath(ground_truth))


def coco_detection_ap(ground_truth: str | os.PathLike | Mapping, results: list[dict],
                      image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """Box AP of ``results`` against a COCO instances file (path or parsed dict).

    Args:
        ground_truth: the instances file or its content.
        results: detections in the official format (:func:`coco_results`).
        image_ids: evaluate these images only (default: every image of the ground truth).

    Returns:
        ``{name: value}`` for :data:`COCO_STAT_NAMES` (AP = mean over IoU 0.50:0.95). With no
        detection at all every value is 0.
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return dict.fromkeys(COCO_STAT_NAMES, 0.0)
    gt = _coco(ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))  # loadRes writes ids and areas into its input
        evaluator = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats, strict=True)}
