"""Box data: grounding, referring-expression and detection files of a manifest as examples of the
box model, and the collator that turns them into batches.

**Sources** (:func:`read_box_source`): a manifest data set split with an ``instances`` role is
COCO detection (each image becomes a grounding record whose caption is the category prompt
``"circle. square. triangle"``, :func:`~vlparse.data.formats.coco_instances.
detection_as_grounding`); one with ``annotations`` is an MDETR-style grounding file (Flickr30K
Entities for ``flickr_entities``, RefCOCO/+/g for data sets named ``refcoco*``).

**Images** (:class:`BoxDataset`): the shorter side resized to one of ``sizes`` (drawn per example
in training, the first otherwise) with the longer side capped at ``max_size``, boxes scaled with
it, ImageNet normalisation. A training flip (``flip_prob``) mirrors image and boxes, except for
captions that say "left" or "right" (the words would then lie); referring expressions turn it off.

Each image is padded right and bottom to a multiple of the backbone's stride; its caption is
tokenised with character offsets (fast tokenizer, at most ``max_text_len`` tokens); each box
gets its positive map (the tokens its character spans cover,
:func:`~vlparse.processing.grounding.positive_map`); a box whose spans were all cut off by
truncation is dropped (counted in ``dropped_boxes``), a phrase so cut is marked
(``phrase_found`` false). :func:`collate_boxes` pads images and token maps to the batch's
largest.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlparse.data.formats.coco_instances import (
    CategoryPrompt,
    category_prompt,
    detection_as_grounding,
    read_coco_instances,
)
from vlparse.data.formats.mdetr import (
    GroundingRecord,
    read_flickr_entities,
    read_mdetr,
    read_refexp,
)
from vlparse.data.manifest import manifest_entry, manifest_role
from vlparse.errors import BadImageError, EmptyDatasetError
from vlparse.processing.grounding import positive_map, tokenize_with_offsets
from vlparse.processing.images import load_image
from vlparse.processing.resize import pad_to_multiple, resize_with_boxes
from vlparse.processing.transforms import normalized_tensor

__all__ = ["BoxDataset", "BoxSource", "collate_boxes", "read_box_source", "record_boxes"]

_SIDE_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


@dataclass
class BoxSource:
    """The records of one manifest data set split.

    Attributes:
        records: the grounding records (for detection, one per image with the prompt).
        kind: ``"grounding"``, ``"refexp"`` or ``"detection"``.
        instances: the COCO instances file (detection), for ``COCOeval``.
        prompt: the category prompt (detection).
    """

    records: list[GroundingRecord]
    kind: str
    instances: str | None = None
    prompt: CategoryPrompt | None = None


def read_box_source(manifest: dict, name: str, split: str) -> BoxSource:
    """The box records of ``manifest[name][split]`` (see the module docstring).

    Raises:
        ManifestError: the data set or split is missing, or has neither role.
        DataFormatError: a malformed file.
    """
    entry = manifest_entry(manifest, name, split)
    where = f"{name}.{split}"
    if "instances" in entry:
        coco = read_coco_instances(manifest_role(entry, "instances", where),
                                   manifest_role(entry, "image_root", where))
        prompt = category_prompt(coco.categories)
        records = [detection_as_grounding(r, prompt) for r in coco.records]
        return BoxSource(records, "detection", manifest_role(entry, "instances", where), prompt)
    path = manifest_role(entry, "annotations", where)
    root = manifest_role(entry, "image_root", where)
    if name.startswith("refcoco"):
        return BoxSource(read_refexp(path, root), "refexp")
    if name == "flickr_entities":
        return BoxSource(read_flickr_entities(path, root), "grounding")
    return BoxSource(read_mdetr(path, root), "grounding")


def record_boxes(record: GroundingRecord) -> Tensor:
    """``(G, 4)`` xyxy boxes of a record in original-image pixels."""
    return torch.tensor([b.xyxy for b in record.boxes], dtype=torch.float32).reshape(-1, 4)


class BoxDataset(Dataset):
    """Box records as examples of the box model (see the module docstring).

    Args:
        records: grounding records (boxes in original pixels).
        tokenizer: a fast Hugging Face tokenizer.
        max_text_len: tokens per caption, special tokens included.
        sizes: shorter-side sizes; training draws one per example, evaluation uses the first.
        max_size: cap on the longer side.
        multiple: each image is padded right and bottom to a multiple of this.
        train: draw sizes and flips.
        flip_prob: chance of a horizontal flip in training.
        on_error: ``"skip"`` replaces a bad image by the next example, ``"raise"`` raises.
        source: the :class:`BoxSource` the records come from (its kind, categories and images
            tell evaluation which metric applies), or ``None``.

    Items: ``index``, ``skipped``, ``record`` (the index of the record used), ``image``
    ``(3, H, W)`` padded, ``size`` ``(h, w)`` before padding, ``scale`` ``(sx, sy)`` (resized /
    original), ``input_ids`` / ``attention_mask`` ``(L,)``, ``boxes`` ``(G, 4)`` xyxy in resized
    pixels with ``box_tokens`` ``(G, L)`` (boxes whose tokens were all cut are left out and
    counted in ``dropped_boxes``), ``phrase_maps`` ``(P, L)`` and ``phrase_found`` ``(P,)``.
    """

    def __init__(self, records: Sequence[GroundingRecord], tokenizer: Any, max_text_len: int,
                 sizes: Sequence[int], max_size: int, multiple: int, train: bool = False,
                 flip_prob: float = 0.0, on_error: str = "skip",
                 source: BoxSource | None = None) -> None:
        if not records:
            raise EmptyDatasetError("BoxDataset: no records")
        self.source = source
        self.records, self.tokenizer, self.max_text_len = list(records), tokenizer, max_text_len
        self.sizes, self.max_size, self.multiple = list(sizes), max_size, multiple
        self.train, self.flip_prob, self.on_error = train, flip_prob, on_error

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> tuple[int, Any, list[tuple[str, str]]]:
        skipped, n = [], len(self.records)
        for step in range(n):
            j = (index + step) % n
            try:
                return j, load_image(self.records[j].image_path), skipped
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        raise BadImageError(self.records[index].image_path, f"all {n} images are bad")

    def _pixels(self, rec: GroundingRecord, image: Any) -> tuple[Tensor, Tensor, tuple]:
        shorter = random.choice(self.sizes) if self.train else self.sizes[0]
        width, height = image.size
        resized, boxes = resize_with_boxes(image, record_boxes(rec), shorter, self.max_size)
        new_w, new_h = resized.size
        x = normalized_tensor(resized)
        if (self.train and self.flip_prob > 0 and random.random() < self.flip_prob
                and not _SIDE_WORDS.search(rec.caption)):
            x = x.flip(-1)
            boxes = torch.stack([new_w - boxes[:, 2], boxes[:, 1], new_w - boxes[:, 0],
                                 boxes[:, 3]], dim=1)
        padded, _ = pad_to_multiple([x], self.multiple)
        return padded[0], boxes, ((new_h, new_w), (new_w / width, new_h / height))

    def __getitem__(self, index: int) -> dict[str, Any]:
        j, image, skipped = self._image(index)
        rec = self.records[j]
        x, boxes, (size, scale) = self._pixels(rec, image)
        tok = tokenize_with_offsets(self.tokenizer, [rec.caption], max_length=self.max_text_len)
        box_map, found = positive_map([b.spans for b in rec.boxes], tok.offsets[0])
        phrase_maps, phrase_found = positive_map(rec.phrases, tok.offsets[0])
        return {"index": index, "skipped": skipped, "record": j, "image": x, "size": size,
                "scale": scale, "input_ids": tok.input_ids[0],
                "attention_mask": tok.attention_mask[0], "boxes": boxes[found],
                "box_tokens": box_map[found], "dropped_boxes": int((~found).sum()),
                "phrase_maps": phrase_maps, "phrase_found": phrase_found}


def _pad_columns(maps: Sequence[Tensor], length: int) -> list[Tensor]:
    return [torch.nn.functional.pad(m, (0, length - m.shape[-1])) for m in maps]


def collate_boxes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items of :class:`BoxDataset` -> a batch: ``image (B, 3, H, W)`` (padded to the largest,
    still a multiple of the stride), ``input_ids`` / ``attention_mask (B, L)`` (padded with 0),
    per image lists ``boxes (G_b, 4)``, ``box_tokens (G_b, L)``, ``phrase_maps (P_b, L)``,
    ``phrase_found (P_b,)``, ``sizes``, ``scales``, ``records``; ``index``, ``skipped`` and
    ``dropped_boxes`` (the batch's total)."""
    images, _ = pad_to_multiple([it["image"] for it in items], 1)
    length = max(it["input_ids"].shape[0] for it in items)
    ids = torch.stack(_pad_columns([it["input_ids"] for it in items], length))
    mask = torch.stack(_pad_columns([it["attention_mask"] for it in items], length))
    return {
        "image": images, "input_ids": ids, "attention_mask": mask,
        "boxes": [it["boxes"] for it in items],
        "box_tokens": _pad_columns([it["box_tokens"] for it in items], length),
        "phrase_maps": _pad_columns([it["phrase_maps"] for it in items], length),
        "phrase_found": [it["phrase_found"] for it in items],
        "sizes": [it["size"] for it in items], "scales": [it["scale"] for it in items],
        "records": [it["record"] for it in items], "index": [it["index"] for it in items],
        "skipped": [s for it in items for s in it["skipped"]],
        "dropped_boxes": sum(it["dropped_boxes"] for it in items),
    }
