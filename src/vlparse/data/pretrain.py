"""The pre-training data: records from the manifest, and the dataset of seeded items.

Every random choice of an item (matched captions, negative images and their captions, MLM masks,
MFR noise) comes from one generator seeded by ``(seed, epoch, index)``, so an item is the same
whatever the number of processes or workers, and after a resume.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.formats.records import ImageCaptions
from vlparse.data.formats.vg import read_vg
from vlparse.data.manifest import manifest_role
from vlparse.data.sampler import stable_seed
from vlparse.data.synthetic.truth import SceneTruth
from vlparse.errors import BadImageError, EmptyDatasetError
from vlparse.objectives.itm import batch_partners, sample_negatives
from vlparse.objectives.mlm import mask_tokens
from vlparse.processing.images import load_image
from vlparse.processing.tokenization import encode_texts, special_ids
from vlparse.processing.transforms import image_transform

__all__ = ["NEGATIVE_DRAWS", "PretrainDataset", "lend_batch_negatives", "read_pretrain_records"]

log = logging.getLogger(__name__)

#: Draws of an unmatched caption when the world's ground truth verifies them (the last draw is
#: kept even if it may describe the image; with 7 % of draws rejected that is never reached).
NEGATIVE_DRAWS = 20



def read_pretrain_records(
    manifest: dict, sets: list[str], splits: list[str]
) -> list[ImageCaptions]:
    """Image-caption records of the pre-training sets, in the order of ``sets`` and ``splits``.

    A split entry with a ``region_descriptions`` role (Visual Genome, which has only ``train``)
    is read with :func:`read_vg`; one with a ``karpathy`` role with :func:`read_karpathy` (a file
    shared by several splits is parsed once). Sets or splits the manifest lacks are skipped with
    a warning (``restval`` of VG silently); images without any caption are left out.

    Args:
        manifest: ``{dataset: {split: {role: path}}}`` (see ``vlparse.data.manifest``).
        sets: data set names, e.g. ``["coco", "vg"]``.
        splits: split names, e.g. ``["train", "restval"]``.

    Raises:
        ValueError: nothing at all was found; the message lists what the manifest has.
    """
    records: list[ImageCaptions] = []
    for name in sets:
        if name not in manifest:
            log.warning("manifest has no data set '%s'; skipping it", name)
            continue
        entry = manifest[name]
        karpathy_groups: dict[tuple[str, str], list[str]] = {}
        for split in splits:
            if split not in entry:
                if not (name == "vg" and split == "restval"):
                    log.warning("manifest has no split '%s' of '%s'; skipping it", split, name)
                continue
            roles, where = entry[split], f"{name}.{split}"
            if "region_descriptions" in roles:
                records += read_vg(
                    manifest_role(roles, "region_descriptions", where),
                    manifest_role(roles, "image_data", where),
                    manifest_role(roles, "image_root", where),
                )
            elif "karpathy" in roles:
                key = (str(roles["karpathy"]), str(manifest_role(roles, "image_root", where)))
                karpathy_groups.setdefault(key, []).append(split)
            else:
                log.warning(
                    "manifest %s has neither a 'karpathy' nor a 'region_descriptions' role "
                    "(roles: %s); skipping it", where, ", ".join(sorted(roles)),
                )
        for (path, root), group in karpathy_groups.items():
            records += read_karpathy(path, root, group, source=name)
    empty = sum(1 for r in records if not r.captions)
    if empty:
        log.warning("%d image(s) without captions left out of pre-training", empty)
        records = [r for r in records if r.captions]
    if not records:
        available = {k: sorted(v) for k, v in manifest.items() if isinstance(v, dict)}
        raise EmptyDatasetError(
            f"no pre-training images found for sets {list(sets)} and splits {list(splits)}; "
            f"the manifest has: {available}. Check data.train_sets and data.train_splits."
        )
    return records


class PretrainDataset(Dataset):
    """Per image: ``P`` matched and ``N`` unmatched captions, MLM masks and MFR noise.

    Args:
        records: images with their captions (each needs at least one caption; at least two
            records when ``num_neg > 0``).
        tokenizer: from :func:`~vlparse.processing.tokenization.build_tokenizer`.
        image_size: ``S``.
        max_text_len: ``L``, the length of the text part (words, ``[SEP]``, padding).
        num_visual_tokens: ``m``, the length of the MFR noise.
        num_pos, num_neg: ``P`` matched and ``N`` unmatched captions per image.
        mlm_prob: BERT masking probability.
        seed: base seed; items depend on ``(seed, epoch, index)`` only.
        on_error: ``"skip"`` replaces a bad image by the next good one (index+1, +2, ...,
            wrapping around) and names it in ``"skipped"``; ``"raise"`` raises
            :class:`~vlparse.processing.images.BadImageError`.
        mlm_all: mask all ``P + N`` captions for MLM, not only the matched ones (for a single
            shared ITM/MLM pass); ``mlm_*`` fields are then ``(P+N, L)``.
        transform: PIL -> ``(3, S, S)`` tensor; default :func:`image_transform` of ``S``.
        truth: the world's ground truth (:class:`~vlparse.data.synthetic.truth.SceneTruth`), to
            verify the unmatched captions: a drawn caption that is true of the image, or
            ambiguous (:meth:`may_describe`), is drawn again from another image, up to
            ``NEGATIVE_DRAWS`` draws (beyond the paper, which draws them at random; ``None``,
            for real data, draws at random and only leaves out the image's own captions).

    An item is a dict: ``image (3, S, S)`` float; ``input_ids``, ``attention_mask``
    ``(P+N, L)`` long (matched captions first); ``mlm_input_ids``, ``mlm_labels`` ``(P, L)`` long
    (labels -100 where not masked); ``mfr_noise (m,)`` float in ``[0, 1)``; ``index`` int (the
    index asked for); ``record``: the index of the record used (``index`` unless its image was
    bad); ``skipped``: ``(path, reason)`` of bad images met for this item;
    ``texts``: the ``P + N`` captions as strings; ``own_captions``: the normalised captions of the
    image (:func:`normalize_caption`); ``batch_key``: a float in ``[0, 1)`` that orders the item
    in its group for :func:`lend_batch_negatives`.
    """

    def __init__(
        self,
        records: list[ImageCaptions],
        tokenizer,
        image_size: int,
        max_text_len: int,
        num_visual_tokens: int,
        num_pos: int = 2,
        num_neg: int = 2,
        mlm_prob: float = 0.15,
        seed: int = 0,
        on_error: str = "skip",
        mlm_all: bool = False,
        transform=None,
        truth: SceneTruth | None = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if num_pos < 1 or num_neg < 0:
            raise ValueError(f"need num_pos >= 1 and num_neg >= 0, got {num_pos} and {num_neg}")
        if not records:
            raise ValueError("PretrainDataset: no records")
        if num_neg > 0 and len(records) < 2:
            raise ValueError("PretrainDataset: unmatched captions need at least 2 images")
        for i, r in enumerate(records):
            if not r.captions:
                raise ValueError(
                    f"PretrainDataset: record {i} ({r.image_path}) has no caption; drop it first"
                )
        self.records = records
        self.tokenizer = tokenizer
        self.ids = special_ids(tokenizer)
        self.image_size = image_size
        self.max_text_len = max_text_len
        self.num_visual_tokens = num_visual_tokens
        self.num_pos = num_pos
        self.num_neg = num_neg
        self.mlm_prob = mlm_prob
        self.seed = seed
        self.on_error = on_error
        self.mlm_all = mlm_all
        self.transform = transform if transform is not None else image_transform(image_size)
        self.truth = truth
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Draw captions, negatives and masks of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index`` in the current epoch."""
        return torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index))

    def _load(self, index: int) -> tuple[int, torch.Tensor, list[tuple[str, str]]]:
        """The first good image from ``index`` on: ``(its index, (3, S, S) tensor, skipped)``."""
        n, skipped = len(self.records), []
        for step in range(n):
            j = (index + step) % n
            path = self.records[j].image_path
            try:
                return j, self.transform(load_image(path)), skipped
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        raise BadImageError(
            self.records[index].image_path,
            f"all {n} images of the data set are bad (first: {skipped[0][1] if skipped else '?'})",
        )

    def may_describe(self, record: int, text: str) -> bool:
        """Whether ``text`` may be true of the image of ``record``: it is one of the image's own
        captions, or the world's ground truth (``truth``) says it is true or ambiguous."""
        rec = self.records[record]
        if normalize_caption(text) in {normalize_caption(c) for c in rec.captions}:
            return True
        if self.truth is None:
            return False
        return self.truth.holds(rec.source, rec.image_id, text) is not False

    def _unmatched(self, j: int, k: int, gen: torch.Generator, redraw: torch.Generator) -> str:
        """An unmatched caption for record ``j``, first drawn from record ``k`` with ``gen``;
        with ``truth``, drawn again with ``redraw`` (another record, another caption) while it
        may describe image ``j``. Redraws leave ``gen`` alone, so the item's later draws (MLM
        masks, MFR noise) are the same with and without ``truth``."""
        other = self.records[k].captions
        text = other[int(torch.randint(len(other), (1,), generator=gen))]
        for _ in range(NEGATIVE_DRAWS - 1 if self.truth is not None else 0):
            if not self.may_describe(j, text):
                break
            other = self.records[sample_negatives(j, len(self.records), 1, redraw)[0]].captions
            text = other[int(torch.randint(len(other), (1,), generator=redraw))]
        return text

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"PretrainDataset index {index} out of range for {n} images")
        index = index % n
        j, image, skipped = self._load(index)
        gen = self.generator(index)

        captions = self.records[j].captions
        p = self.num_pos
        order = torch.randperm(len(captions), generator=gen).tolist()
        texts = [captions[order[i % len(order)]] for i in range(p)]
        if self.num_neg:
            redraw = gen
            if self.truth is not None:  # redraws have their own generator
                redraw = torch.Generator().manual_seed(
                    stable_seed(self.seed, self.epoch, index, 1)
                )
            for k in sample_negatives(j, n, self.num_neg, gen):
                texts.append(self._unmatched(j, k, gen, redraw))

        input_ids, attention_mask = encode_texts(self.tokenizer, texts, self.max_text_len)
        n_mlm = len(texts) if self.mlm_all else p
        ids = input_ids[:n_mlm]
        maskable = attention_mask[:n_mlm].bool() & (ids != self.ids["sep"])
        maskable &= (ids != self.ids["pad"]) & (ids != self.ids["cls"])
        mlm_input_ids, mlm_labels = mask_tokens(
            ids, maskable, self.ids["mask"], self.ids["vocab_size"], self.mlm_prob, gen
        )
        mfr_noise = torch.rand(self.num_visual_tokens, generator=gen)
        batch_key = float(torch.rand((), generator=gen))  # drawn last: earlier draws unchanged
        return {
            "image": image,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
            "mfr_noise": mfr_noise,
            "index": index,
            "record": j,
            "skipped": skipped,
            "texts": texts,
            "own_captions": frozenset(normalize_caption(c) for c in captions),
            "batch_key": batch_key,
        }


def normalize_caption(text: str) -> str:
    """Lower-cased words of ``text`` joined by single spaces (punctuation dropped), to compare
    captions: ``"There is one star."`` and ``"there is one  star"`` are the same caption."""
    return " ".join(re.findall(r"\w+", text.lower()))


_TEXT_FIELDS = ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels")


def lend_batch_negatives(
    items: list[dict[str, Any]],
    num_pos: int,
    group: int,
    may_describe: Callable[[int, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Replace the unmatched captions of items by matched captions of other items of their group.

    The items are cut into groups of ``group`` consecutive items (the last group may be smaller;
    a group of one keeps its own unmatched captions). In a group of ``G``, item ``a``'s ``n``-th
    unmatched caption becomes matched caption ``n % P`` of item ``partners[a, n]``
    (:func:`~vlparse.objectives.itm.batch_partners`, ordered by the items' ``batch_key``): every
    lent caption is also a matched caption in the same batch, so a text appears with the label
    1 beside its own image and 0 beside another. A lent caption that is one of the receiving
    image's own captions (``own_captions``) is not used: that slot keeps the caption the data set
    drew. With ``may_describe`` (:meth:`PretrainDataset.may_describe`, called with the receiving
    item's ``record``; it covers the own captions), neither is a lent caption that may be true of
    the receiving image. All the text fields of the slot (``input_ids``, ``attention_mask`` and,
    when present for that row, ``mlm_input_ids`` / ``mlm_labels``) and ``texts`` are copied
    together.

    The result depends only on the items and their order, so groups that do not straddle two
    processes' shares of a batch give the same batch whatever the number of processes.

    Args:
        items: :class:`PretrainDataset` items, in batch order.
        num_pos: ``P``, matched captions per item (the first ``P`` rows).
        group: ``G``, images per group (at least 2).
        may_describe: ``(record, text) -> bool``, or ``None`` to compare with
            ``own_captions`` only.

    Returns:
        new item dicts (the given ones are not modified).
    """
    if group < 2:
        raise ValueError(f"lend_batch_negatives: group must be >= 2, got {group}")
    out = [dict(item) for item in items]
    num_neg = items[0]["input_ids"].shape[0] - num_pos if items else 0
    for start in range(0, len(items) if num_neg > 0 else 0, group):
        members = list(range(start, min(start + group, len(items))))
        if len(members) < 2:
            continue
        keys = torch.tensor([items[i]["batch_key"] for i in members], dtype=torch.float64)
        partners = batch_partners(keys, num_neg)
        for local, a in enumerate(members):
            item = out[a]
            fields = {k: item[k].clone() for k in _TEXT_FIELDS}
            texts = list(item["texts"])
            for n in range(num_neg):
                src, slot, row = items[members[int(partners[local, n])]], n % num_pos, num_pos + n
                text = src["texts"][slot]
                if (
                    may_describe(item["record"], text)
                    if may_describe is not None
                    else normalize_caption(text) in item["own_captions"]
                ):
                    continue
                for k in _TEXT_FIELDS:
                    if fields[k].shape[0] > row:
                        fields[k][row] = src[k][slot]
                texts[row] = src["texts"][slot]
            item.update(fields)
            item["texts"] = texts
    return out
