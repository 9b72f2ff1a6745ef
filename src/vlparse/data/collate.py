"""Collation: items into batches, and the pre-training collator that prepares what a
pre-training step needs (like transformers' ``DataCollatorForLanguageModeling``).

The data set yields an image and its record; :class:`PretrainCollator` transforms the image,
draws the matched and unmatched captions, tokenises them, masks them for MLM and draws the MFR
noise. Items of a manifest name their record in the collator's list of records; items streamed
from tar shards carry their captions and a caption reservoir instead
(:mod:`vlparse.data.shards.reader`), and the same code draws from either.

Every random choice of an item comes from one generator seeded by
``stable_seed(seed, epoch, index)``, in a fixed order (matched captions, negative images, their
captions, MLM masks, MFR noise, the item's key in its group), so an item is the same whatever
the number of processes or workers, and after a resume (a streamed item's unmatched captions
also depend on its reservoir, which is the same for the same layout of ranks and workers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vlparse.data.formats.records import ImageCaptions
from vlparse.data.masking import mask_tokens
from vlparse.data.negatives import (
    draw_unmatched,
    lend_batch_negatives,
    normalize_caption,
    sample_negatives,
)
from vlparse.data.sampler import stable_seed

__all__ = ["NegativeFilter", "PretrainCollator", "stack_items"]

NegativeFilter = Callable[[int, str], bool]
"""``(record index, text) -> bool``: whether ``text`` may be true of the record's image, so that
it must not serve as its unmatched caption (built by :mod:`vlparse.data.synthetic.truth`)."""


def stack_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch: tensor fields along a new first dimension, ``index`` as a
    ``(B,)`` long tensor, the ``skipped`` lists concatenated, other fields as lists.

    Raises:
        ValueError: no items, or a tensor field whose shapes differ between items.
    """
    if not items:
        raise ValueError("stack_items: got an empty list of items")
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
                raise ValueError(f"stack_items: field '{key}' has shapes {shapes}") from e
        else:
            batch[key] = [item[key] for item in items]
    return batch


class PretrainCollator:
    """Items of :class:`~vlparse.data.pretrain.PretrainDataset` or of a shard stream
    (:class:`~vlparse.data.shards.ShardDataset`) -> a pre-training batch.

    Args:
        records: the data set's records (each with at least one caption; at least two records
            when ``num_neg > 0``): matched captions come from the item's record, unmatched ones
            from the others. ``None`` for a stream, whose items carry ``captions`` (matched
            ones) and ``reservoir`` (``(record, captions)`` pairs: unmatched ones are drawn from
            those of other records, as from the global list).
        processor: a :class:`~vlparse.models.processor.VisualParsingProcessor` (image transform,
            tokenizer, ``L``).
        num_visual_tokens: ``m``, the length of the MFR noise.
        num_pos, num_neg: ``P`` matched and ``N`` unmatched captions per image.
        mlm_prob: BERT masking probability (80 % ``[MASK]``, 10 % random, 10 % kept).
        mlm_min_masked: word pieces masked at least per caption (0: BERT's masking, no floor;
            :func:`~vlparse.data.masking.mask_tokens`).
        seed: base seed; an item depends on ``(seed, epoch, index)`` only.
        negatives: ``"dataset"`` draws each unmatched caption from a random other image of the
            data set (of the item's reservoir, for a stream); ``"batch"`` then lends matched
            captions of the other images of the item's group of ``group`` consecutive items
            (:func:`~vlparse.data.negatives.lend_batch_negatives`).
        negative_filter: :data:`NegativeFilter`, or ``None`` (real data: the dataset strategy
            draws at random as the paper does, the batch strategy only leaves out the image's
            own captions).
        item_noise: ``k`` uniform numbers per item for the draws a model makes itself (e.g.
            negatives drawn from its own similarities), drawn from the item's generator after
            every other draw, so that they too depend on ``(seed, epoch, index)`` only; 0 (the
            default) adds no field.

    An item with a ``visit`` (a data set whose epoch counts pairs,
    :class:`~vlparse.data.pretrain.PretrainDataset`) takes matched captions ``visit * P`` to
    ``visit * P + P - 1`` of one order of the record's captions drawn per ``(seed, epoch,
    record)``, so that the visits of an epoch share out the captions; an item without one draws
    its ``P`` captions on its own.

    A batch: ``image (B, 3, S, S)``; ``input_ids``, ``attention_mask`` ``(B, P+N, L)`` (matched
    captions first); ``mlm_input_ids``, ``mlm_labels`` ``(B, P, L)`` (labels -100 where not
    masked); ``mfr_noise (B, m)`` in ``[0, 1)``; ``index (B,)``; ``record`` (the records used,
    ``index`` unless an image was bad); ``image_id (B,)`` long (the first record with the same
    image file: rows with equal ids show the same image); ``texts`` (the ``P + N`` captions of
    each item); ``skipped`` (``(path, reason)`` of bad images met); with ``item_noise = k``,
    ``item_noise (B, k)`` in ``[0, 1)``.

    The texts are what ``processor.encode_text`` makes (the text part of the Visual Parsing
    sequence, or whole sequences with their special tokens); MLM never masks the processor's
    ``[CLS]``, ``[SEP]`` and padding.
    """

    def __init__(
        self,
        records: Sequence[ImageCaptions] | None,
        processor: Any,
        num_visual_tokens: int,
        num_pos: int = 2,
        num_neg: int = 2,
        mlm_prob: float = 0.15,
        mlm_min_masked: int = 0,
        seed: int = 0,
        negatives: str = "dataset",
        group: int = 8,
        negative_filter: NegativeFilter | None = None,
        item_noise: int = 0,
    ) -> None:
        if num_pos < 1 or num_neg < 0:
            raise ValueError(f"need num_pos >= 1 and num_neg >= 0, got {num_pos} and {num_neg}")
        if negatives not in ("dataset", "batch"):
            raise ValueError(f"PretrainCollator: negatives must be 'dataset' or 'batch', "
                             f"got {negatives!r}")
        if negatives == "batch" and group < 2:
            raise ValueError(f"PretrainCollator: group must be >= 2, got {group}")
        if item_noise < 0:
            raise ValueError(f"PretrainCollator: item_noise must be >= 0, got {item_noise}")
        if records is not None and num_neg > 0 and len(records) < 2:
            raise ValueError("PretrainCollator: unmatched captions need at least 2 images")
        for i, r in enumerate(records or ()):
            if not r.captions:
                raise ValueError(f"PretrainCollator: record {i} ({r.image_path}) has no caption; "
                                 "drop it first")
        self.captions = None if records is None else [list(r.captions) for r in records]
        self.processor = processor
        self.num_visual_tokens = num_visual_tokens
        self.num_pos, self.num_neg, self.mlm_prob = num_pos, num_neg, mlm_prob
        self.mlm_min_masked = mlm_min_masked
        self.seed, self.negatives, self.group = seed, negatives, group
        self.negative_filter = negative_filter
        self.item_noise = item_noise
        first: dict[str, int] = {}  # an image's id: its first record (a stream: its record)
        self.image_ids = (None if records is None else
                          [first.setdefault(r.image_path, i) for i, r in enumerate(records)])

    def rejects(self, record: int, text: str) -> bool:
        """Whether ``text`` may describe the image of ``record`` (of the collator's records):
        one of its own captions, or the negative filter says so."""
        return self._rejects(self.captions[record], record, text)

    def _rejects(self, own: Sequence[str], record: int, text: str) -> bool:
        if normalize_caption(text) in {normalize_caption(c) for c in own}:
            return True
        return self.negative_filter is not None and self.negative_filter(record, text)

    def _own(self, item: dict[str, Any]) -> list[str]:
        """The captions of the item's image: carried by a streamed item, else its record's."""
        if "captions" in item:
            return list(item["captions"])
        return self.captions[int(item["record"])]

    def _sources(self, item: dict[str, Any]) -> tuple[list[str], list[list[str]], int]:
        """The item's own captions, the caption lists its unmatched ones are drawn from, and
        the position of its own among them: the collator's records, or the item's reservoir
        (other records only, then its own)."""
        j, own = int(item["record"]), self._own(item)
        if "captions" not in item:
            return own, self.captions, j
        others = [list(c) for r, c in item.get("reservoir", ()) if int(r) != j]
        if self.num_neg and not others:
            raise ValueError(f"PretrainCollator: item {item['index']} (record {j}) carries no "
                             "caption of another image to draw unmatched ones from")
        return own, [*others, own], len(others)

    def _texts(self, item: dict[str, Any], gen: torch.Generator) -> list[str]:
        """``P`` matched captions of the item's record (those of its ``visit``, when an epoch
        passes over pairs), then ``N`` drawn from other records."""
        j, index, epoch = int(item["record"]), int(item["index"]), int(item["epoch"])
        visit = item.get("visit")
        captions, pool, own = self._sources(item)
        order = torch.randperm(len(captions), generator=gen).tolist()
        start = 0
        if visit is not None:  # one order per record and epoch, shared by its visits
            shared = torch.Generator().manual_seed(stable_seed(self.seed, epoch, j, 2))
            order = torch.randperm(len(captions), generator=shared).tolist()
            start = visit * self.num_pos
        texts = [captions[order[(start + i) % len(order)]] for i in range(self.num_pos)]
        if self.num_neg:
            redraw, rejects = gen, None
            if self.negative_filter is not None:  # redraws have their own generator
                redraw = torch.Generator().manual_seed(stable_seed(self.seed, epoch, index, 1))
                rejects = lambda _, text: self._rejects(captions, j, text)
            for k in sample_negatives(own, len(pool), self.num_neg, gen):
                texts.append(draw_unmatched(pool, own, k, gen, redraw, rejects))
        return texts

    def draw(self, item: dict[str, Any]) -> dict[str, Any]:
        """One item's tensors: every draw from the generator of ``(seed, epoch, index)``."""
        index, j, epoch = int(item["index"]), int(item["record"]), int(item["epoch"])
        gen = torch.Generator().manual_seed(stable_seed(self.seed, epoch, index))
        texts = self._texts(item, gen)
        input_ids, attention_mask = self.processor.encode_text(texts)
        ids, sid, p = input_ids[: self.num_pos], self.processor.special_ids, self.num_pos
        maskable = attention_mask[:p].bool() & (ids != sid["sep"])
        maskable &= (ids != sid["pad"]) & (ids != sid["cls"])
        mlm_input_ids, mlm_labels = mask_tokens(
            ids, maskable, sid["mask"], sid["vocab_size"], self.mlm_prob, gen,
            min_masked=self.mlm_min_masked,
        )
        mfr_noise = torch.rand(self.num_visual_tokens, generator=gen)
        batch_key = float(torch.rand((), generator=gen))  # drawn last: earlier draws unchanged
        extra = {}
        if self.item_noise:
            extra["item_noise"] = torch.rand(self.item_noise, generator=gen)
        return {
            "image": self.processor.image_transform(item["image"]),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
            "mfr_noise": mfr_noise,
            "index": index,
            "record": j,
            "image_id": torch.tensor(j if self.image_ids is None else self.image_ids[j]),
            "skipped": item["skipped"],
            "texts": texts,
            "batch_key": batch_key,
            **extra,
        }

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("PretrainCollator: got an empty list of items")
        drawn = [self.draw(item) for item in items]
        if self.negatives == "batch":
            own = {int(item["record"]): self._own(item) for item in items}
            rejects = lambda record, text: self._rejects(own[record], record, text)
            drawn = lend_batch_negatives(drawn, self.num_pos, self.group, rejects)
        for item in drawn:
            del item["batch_key"]
        return stack_items(drawn)
