"""Collation of pre-training items into batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from vlparse.data.pretrain import lend_batch_negatives

__all__ = ["collate_pretrain"]


def collate_pretrain(
    items: list[dict[str, Any]],
    negatives: str = "dataset",
    num_pos: int = 2,
    group: int = 8,
    may_describe: Callable[[int, str], bool] | None = None,
) -> dict[str, Any]:
    """Stack :class:`~vlparse.data.pretrain.PretrainDataset` items into a batch.

    With ``negatives="batch"`` the unmatched captions are first taken from other items of the
    batch, in groups of ``group`` (:func:`~vlparse.data.pretrain.lend_batch_negatives`, with
    ``num_pos`` matched captions per item, and ``may_describe`` to reject a lent caption that
    may be true of the receiving image); ``"dataset"`` keeps the data set's draws. Use
    ``functools.partial`` to fix these for a ``DataLoader``.

    Returns:
        ``image (B, 3, S, S)``, ``input_ids`` / ``attention_mask`` ``(B, P+N, L)``,
        ``mlm_input_ids`` / ``mlm_labels`` ``(B, P, L)``, ``mfr_noise (B, m)`` (every tensor
        field stacked along a new first dimension), ``index (B,)`` long, and ``skipped``: the
        items' lists of ``(path, reason)`` concatenated.
    """
    if not items:
        raise ValueError("collate_pretrain: got an empty list of items")
    if negatives == "batch":
        items = lend_batch_negatives(items, num_pos, group, may_describe)
    elif negatives != "dataset":
        raise ValueError(
            f"collate_pretrain: negatives must be 'dataset' or 'batch', got {negatives!r}"
        )
    batch: dict[str, Any] = {}
    for key, value in items[0].items():
        if key == "skipped":
            batch[key] = [entry for item in items for entry in item["skipped"]]
        elif key == "index":
            batch[key] = torch.tensor([int(item["index"]) for item in items], dtype=torch.long)
        elif isinstance(value, torch.Tensor):
            try:
                batch[key] = torch.stack([item[key] for item in items])
            except RuntimeError as e:
                shapes = sorted({tuple(item[key].shape) for item in items})
                raise ValueError(f"collate_pretrain: field '{key}' has shapes {shapes}") from e
        else:
            batch[key] = [item[key] for item in items]
    return batch
