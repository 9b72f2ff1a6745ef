"""The pre-training data: records from the manifest, and the data set of images.

The data set yields each image with its record; the collator
(:class:`~vlparse.data.collate.PretrainCollator`) draws the captions, masks and noise.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from vlparse.data.formats.karpathy import read_karpathy
from vlparse.data.formats.records import ImageCaptions
from vlparse.data.formats.vg import read_vg
from vlparse.data.manifest import manifest_role
from vlparse.errors import BadImageError, EmptyDatasetError
from vlparse.processing.images import load_image

__all__ = ["PretrainDataset", "read_pretrain_records"]

log = logging.getLogger(__name__)


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
    """The images of pre-training records, each with its record.

    Args:
        records: images with their captions.
        on_error: ``"skip"`` replaces a bad image by the next good one (index+1, +2, ...,
            wrapping around) and names it in ``"skipped"``; ``"raise"`` raises
            :class:`~vlparse.errors.BadImageError`.
        epoch_unit: ``"images"``: an epoch is every image once (``len`` = the number of
            records). ``"pairs"``: every matched image-caption pair once: record ``j`` with
            ``n_j`` captions comes ``ceil(n_j / num_pos)`` times (its visits, consecutive
            indices), and ``len`` is the sum of the visits (``data.epoch_unit``).
        num_pos: matched captions an item draws (``objectives.num_pos``); used by ``"pairs"``.

    An item is a dict: ``image`` (an RGB PIL image, fully decoded); ``index`` (the index asked
    for); ``record`` (the index of the record used: the index's record unless its image was
    bad); ``epoch`` (set by :meth:`set_epoch`: the collator's draws depend on it); ``skipped``:
    ``(path, reason)`` of the bad images met for this item; with ``"pairs"`` also ``visit``
    (which visit of its record the index is, from 0), with which the collator shares out the
    record's captions among its visits.
    """

    def __init__(self, records: Sequence[ImageCaptions], on_error: str = "skip",
                 epoch_unit: str = "images", num_pos: int = 2) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if epoch_unit not in ("images", "pairs"):
            raise ValueError(f"epoch_unit must be 'images' or 'pairs', got {epoch_unit!r}")
        if num_pos < 1:
            raise ValueError(f"num_pos must be >= 1, got {num_pos}")
        if not records:
            raise ValueError("PretrainDataset: no records")
        self.records = list(records)
        self.on_error = on_error
        self.epoch = 0
        self._starts: list[int] | None = None  # first index of each record's visits
        if epoch_unit == "pairs":
            visits = (max(1, math.ceil(len(r.captions) / num_pos)) for r in self.records)
            self._starts = [0, *itertools.accumulate(visits)]

    def __len__(self) -> int:
        return len(self.records) if self._starts is None else self._starts[-1]

    def _record_of(self, index: int) -> tuple[int, int | None]:
        """``(record, visit)`` of an index in ``[0, len)`` (visit ``None`` by images)."""
        if self._starts is None:
            return index, None
        record = bisect.bisect_right(self._starts, index) - 1
        return record, index - self._starts[record]

    def set_epoch(self, epoch: int) -> None:
        """Items carry ``epoch`` from now on."""
        self.epoch = int(epoch)

    def _load(self, index: int) -> tuple[int, Image.Image, list[tuple[str, str]]]:
        """The first good image from ``index`` on: ``(its index, image, skipped)``."""
        n, skipped = len(self.records), []
        for step in range(n):
            j = (index + step) % n
            try:
                return j, load_image(self.records[j].image_path), skipped
            except BadImageError as e:
                if self.on_error == "raise":
                    raise
                skipped.append((e.path, e.reason))
        raise BadImageError(
            self.records[index].image_path,
            f"all {n} images of the data set are bad (first: {skipped[0][1] if skipped else '?'})",
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"PretrainDataset index {index} out of range for {n} items")
        index = index % n
        record, visit = self._record_of(index)
        j, image, skipped = self._load(record)
        item = {"image": image, "index": index, "record": j, "epoch": self.epoch,
                "skipped": skipped}
        if visit is not None:
            item["visit"] = visit
        return item
