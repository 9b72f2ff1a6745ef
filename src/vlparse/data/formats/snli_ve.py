"""Reader of SNLI-VE (``snli_ve_{train,dev,test}.jsonl``: one JSON object per line).

Each line (see ``DATA_FORMATS.md``)::

    {"Flickr30K_ID": "3416050480", "sentence2": "A man is outdoors.", "gold_label": "entailment",
     "pairID": "3416050480.jpg#4r1e", "sentence1": "...", ...}

The premise is the image ``<image_root>/<Flickr30K_ID>.jpg`` (``sentence1``, the caption the
hypothesis was written for, is not used); the hypothesis is ``sentence2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vlparse.data.formats.jsonio import load_jsonl, require_typed
from vlparse.errors import DataFormatError

__all__ = ["SNLI_VE_LABELS", "SNLIVEExample", "read_snli_ve"]

SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")
"""The gold labels; a label's class index is its position here (entailment 0, neutral 1,
contradiction 2)."""


@dataclass
class SNLIVEExample:
    """One (image premise, hypothesis) pair.

    Attributes:
        pair_id: the line's ``pairID`` (``"record <i>"`` when the line has none).
        image_id: the ``Flickr30K_ID`` as a string (e.g. ``"3416050480"``).
        image_path: ``<image_root>/<Flickr30K_ID>.jpg``.
        hypothesis: ``sentence2``.
        label: ``gold_label``: one of :data:`SNLI_VE_LABELS`.
        label_id: the label's index in :data:`SNLI_VE_LABELS` (0, 1 or 2).
    """

    pair_id: str
    image_id: str
    image_path: str
    hypothesis: str
    label: str
    label_id: int


def read_snli_ve(path: str | os.PathLike, image_root: str | os.PathLike) -> list[SNLIVEExample]:
    """SNLI-VE examples of one JSON-lines file, in file order.

    Args:
        path: ``snli_ve_<split>.jsonl``.
        image_root: the Flickr30K image folder (holding ``<Flickr30K_ID>.jpg``).

    Raises:
        DataFormatError: malformed JSON (file, line, column), a missing or mistyped field, or a
            ``gold_label`` outside :data:`SNLI_VE_LABELS`; the message names the file, the record
            and the field.
    """
    root = os.fspath(image_root)
    records = []
    for i, row in enumerate(load_jsonl(path)):
        where = f"record {i}"
        pair_id = f"record {i}"
        if isinstance(row, dict) and isinstance(row.get("pairID"), str):
            pair_id = row["pairID"]
            where += f" (pairID {pair_id})"
        image_id = str(require_typed(row, "Flickr30K_ID", (str, int), path, where))
        if not image_id.strip():
            raise DataFormatError(f"{os.fspath(path)}: {where}: field 'Flickr30K_ID' is empty")
        hypothesis = require_typed(row, "sentence2", str, path, where)
        label = require_typed(row, "gold_label", str, path, where)
        if label not in SNLI_VE_LABELS:
            raise DataFormatError(
                f"{os.fspath(path)}: {where}: field 'gold_label' must be one of "
                f"{', '.join(SNLI_VE_LABELS)}, got {label!r}"
            )
        records.append(
            SNLIVEExample(
                pair_id=pair_id,
                image_id=image_id,
                image_path=os.path.join(root, f"{image_id}.jpg"),
                hypothesis=hypothesis,
                label=label,
                label_id=SNLI_VE_LABELS.index(label),
            )
        )
    return records
