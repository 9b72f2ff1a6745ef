"""Fine-tuning data: VQA v2, NLVR2 and SNLI-VE datasets and their collation.

Images go through the pre-training path (:func:`~vlparse.processing.images.load_image`, then
:func:`~vlparse.processing.transforms.image_transform`), texts through
:func:`~vlparse.processing.tokenization.encode_texts` (the text part ``W``: word pieces, ``[SEP]``,
padding; the model adds ``[CLS]`` and the visual tokens). Bad images follow the pre-training
policy: ``on_error="skip"`` replaces the whole example by the next one whose image(s) load
(index+1, +2, ..., wrapping) and names the bad files in ``"skipped"``; ``on_error="raise"``
raises :class:`~vlparse.processing.images.BadImageError`. For evaluation use ``"raise"`` (or drop
repeated ids), since a skipped example is replaced, not removed.

Typical use::

    records = finetune_records(manifest, "vqa", ["train", "val"])
    vocab = build_answer_vocab(records)                      # vlparse.eval.vqa
    ds = VQADataset(records, tokenizer, vocab, image_size=384, max_text_len=40)
    loader = DataLoader(ds, batch_size=32, collate_fn=collate_finetune)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vlparse.data.collate import stack_items
from vlparse.data.formats.nlvr2 import NLVR2Example, read_nlvr2
from vlparse.data.formats.snli_ve import SNLIVEExample, read_snli_ve
from vlparse.data.formats.vqa import VQAQuestion, read_vqa
from vlparse.data.manifest import manifest_entry, manifest_role
from vlparse.errors import BadImageError, ManifestError
from vlparse.processing.answers import soft_scores
from vlparse.processing.images import load_image
from vlparse.processing.tokenization import encode_texts
from vlparse.processing.transforms import image_transform

__all__ = [
    "FINETUNE_TASKS",
    "NLVR2Dataset",
    "SNLIVEDataset",
    "VQADataset",
    "collate_finetune",
    "finetune_records",
]

FINETUNE_TASKS = ("vqa", "nlvr2", "snli_ve")
"""Task names, equal to their manifest dataset names."""


def finetune_records(
    manifest: dict, task: str, splits: str | Sequence[str], require_labels: bool = True
) -> list:
    """Records of ``manifest[task][split]`` for each split, concatenated in order.

    Args:
        manifest: from :func:`~vlparse.data.manifest.load_manifest`.
        task: ``"vqa"`` (splits train/val/test), ``"nlvr2"`` (train/dev/test1) or ``"snli_ve"``
            (train/dev/test).
        splits: one split or several (e.g. ``["train", "val"]`` for VQA).
        require_labels: NLVR2 only: if false, lines without a label are read with ``None``.

    Returns:
        :class:`VQAQuestion` (test questions have no answers), :class:`NLVR2Example` or
        :class:`SNLIVEExample` records.

    Raises:
        ManifestError: unknown task, split or missing role (the message lists what exists).
        DataFormatError: an annotation file breaks its format.
    """
    if task not in FINETUNE_TASKS:
        raise ManifestError(f"unknown fine-tuning task {task!r}; use one of {FINETUNE_TASKS}")
    records: list = []
    for split in [splits] if isinstance(splits, str) else list(splits):
        entry, where = manifest_entry(manifest, task, split), f"{task}.{split}"
        root = manifest_role(entry, "image_root", where)
        if task == "vqa":
            records += read_vqa(manifest_role(entry, "questions", where), root,
                                entry.get("annotations"), entry.get("subtype"))
        elif task == "nlvr2":
            records += read_nlvr2(manifest_role(entry, "annotations", where), root, require_labels)
        else:
            records += read_snli_ve(manifest_role(entry, "annotations", where), root)
    return records


class _ImageTextDataset(Dataset):
    """Shared part: records, bad-image policy, image loading and text encoding."""

    name = "dataset"

    def __init__(
        self,
        records: Sequence[Any],
        tokenizer,
        image_size: int,
        max_text_len: int,
        on_error: str = "skip",
        transform: Callable | None = None,
        encode: Callable[[list[str]], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if not records:
            raise ValueError(f"{type(self).__name__}: no records")
        self.records = list(records)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.max_text_len = max_text_len
        self.on_error = on_error
        self.transform = transform if transform is not None else image_transform(image_size)
        self.encode = encode

    def __len__(self) -> int:
        return len(self.records)

    def _paths(self, record: Any) -> list[str]:
        raise NotImplementedError

    def _load(self, index: int) -> tuple[int, list[Tensor], list[tuple[str, str]]]:
        """The first example from ``index`` on whose images all load: ``(its index, images
        (each (3, S, S)), skipped (path, reason) pairs)``."""
        n, skipped = len(self.records), []
        for step in range(n):
            j = (index + step) % n
            try:
                images = [self.transform(load_image(p)) for p in self._paths(self.records[j])]
                return j, images, skipped
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        raise BadImageError(
            self._paths(self.records[index])[0],
            f"the images of all {n} examples are bad (first: {skipped[0][1]})",
        )

    def _start(self, index: int) -> tuple[Any, list[Tensor], dict[str, Any]]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range for {n} examples")
        index = index % n
        j, images, skipped = self._load(index)
        return self.records[j], images, {"index": index, "skipped": skipped}

    def _encode(self, text: str) -> dict[str, Tensor]:
        if self.encode is not None:
            ids, mask = self.encode([text])
        else:
            ids, mask = encode_texts(self.tokenizer, [text], self.max_text_len)
        return {"input_ids": ids[0], "attention_mask": mask[0]}


class VQADataset(_ImageTextDataset):
    """VQA v2 questions with soft-score targets over an answer vocabulary.

    Args:
        records: :class:`VQAQuestion` records (test questions, without answers, get all-zero
            targets).
        tokenizer: from :func:`~vlparse.processing.tokenization.build_tokenizer`.
        answer_vocab: normalised answers, from :func:`vlparse.eval.vqa.build_answer_vocab`
            (``V`` of them).
        image_size: ``S``.
        max_text_len: ``L``.
        on_error: ``"skip"`` or ``"raise"`` (see the module docstring).
        transform: PIL -> ``(3, S, S)``; default :func:`image_transform` of ``S``.
        encode: texts -> ``input_ids``, ``attention_mask`` ``(T, L)``, e.g. a processor's
            ``encode_text`` (a model family's text convention); default
            :func:`~vlparse.processing.tokenization.encode_texts` of ``tokenizer`` and ``L``.
        score_variant: ``"count"`` (``min(1, count / 3)``, default) or ``"leave_one_out"``; see
            :func:`vlparse.processing.answers.soft_scores`.

    An item: ``image (3, S, S)`` float; ``input_ids``, ``attention_mask`` ``(L,)`` long;
    ``targets (V,)`` float in ``[0, 1]``; ``question_id ()`` long; ``answer_type`` str (``""``
    when unknown); ``index`` int; ``skipped`` list of ``(path, reason)``.
    """

    def __init__(
        self,
        records: Sequence[VQAQuestion],
        tokenizer,
        answer_vocab: Sequence[str],
        image_size: int,
        max_text_len: int,
        on_error: str = "skip",
        transform: Callable | None = None,
        score_variant: str = "count",
        encode: Callable[[list[str]], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__(records, tokenizer, image_size, max_text_len, on_error, transform,
                         encode)
        if not answer_vocab:
            raise ValueError("VQADataset: empty answer vocabulary")
        self.answer_vocab = list(answer_vocab)
        self.answer_index = {a: i for i, a in enumerate(self.answer_vocab)}
        if len(self.answer_index) != len(self.answer_vocab):
            raise ValueError("VQADataset: the answer vocabulary has repeated answers")
        if score_variant not in ("count", "leave_one_out"):
            raise ValueError(
                f"score_variant must be 'count' or 'leave_one_out', got {score_variant!r}"
            )
        self.score_variant = score_variant

    def _paths(self, record: VQAQuestion) -> list[str]:
        return [record.image_path]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec, images, extra = self._start(index)
        return {
            "image": images[0],
            **self._encode(rec.question),
            "targets": soft_scores(rec.answers, self.answer_index, self.score_variant),
            "question_id": torch.tensor(rec.question_id, dtype=torch.long),
            "answer_type": rec.answer_type or "",
            **extra,
        }


class NLVR2Dataset(_ImageTextDataset):
    """NLVR2 statements about an image pair.

    Args: as :class:`VQADataset` without the vocabulary; ``records`` are
    :class:`NLVR2Example`.

    An item: ``images (2, 3, S, S)`` float (left = ``img0``, right = ``img1``); ``input_ids``,
    ``attention_mask`` ``(L,)`` long; ``label ()`` long, 1 = True, 0 = False, -1 = unlabelled;
    ``identifier`` str; ``index`` int; ``skipped``.
    """

    def _paths(self, record: NLVR2Example) -> list[str]:
        return [record.left_image, record.right_image]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec, images, extra = self._start(index)
        label = -1 if rec.label is None else int(rec.label)
        return {
            "images": torch.stack(images),
            **self._encode(rec.sentence),
            "label": torch.tensor(label, dtype=torch.long),
            "identifier": rec.identifier,
            **extra,
        }


class SNLIVEDataset(_ImageTextDataset):
    """SNLI-VE (image premise, hypothesis) pairs.

    Args: as :class:`VQADataset` without the vocabulary; ``records`` are
    :class:`SNLIVEExample`.

    An item: ``image (3, S, S)`` float; ``input_ids``, ``attention_mask`` ``(L,)`` long (the
    hypothesis); ``label ()`` long: entailment 0, neutral 1, contradiction 2 (the order of
    :data:`~vlparse.data.formats.snli_ve.SNLI_VE_LABELS`); ``pair_id`` str; ``index`` int;
    ``skipped``.
    """

    def _paths(self, record: SNLIVEExample) -> list[str]:
        return [record.image_path]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec, images, extra = self._start(index)
        return {
            "image": images[0],
            **self._encode(rec.hypothesis),
            "label": torch.tensor(rec.label_id, dtype=torch.long),
            "pair_id": rec.pair_id,
            **extra,
        }


def collate_finetune(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of any of the three fine-tuning datasets.

    Tensor fields are stacked along a new first dimension: ``image (B, 3, S, S)`` or
    ``images (B, 2, 3, S, S)``, ``input_ids`` / ``attention_mask (B, L)``, ``targets (B, V)``,
    ``question_id (B,)``, ``label (B,)``; ``index (B,)`` long; ``skipped`` concatenated; string
    fields (``answer_type``, ``identifier``, ``pair_id``) become lists of length ``B``.
    """
    return stack_items(items)
