"""Where the unmatched (ITM label 0) captions of pre-training come from.

Two strategies, both deterministic given the items:

- ``dataset`` (:func:`draw_unmatched`): a caption of a random other image of the whole data set,
  drawn with the item's generator (keyed by ``(seed, epoch, index)``);
- ``batch`` (:func:`lend_batch_negatives`): matched captions of the other images of the item's
  group in the batch (:func:`batch_partners`), so every lent caption also appears beside its own
  image.

A caption is never used as an unmatched one when it may describe the image: when it is one of
the image's own captions, or when the injected ``negative_filter(record, text)`` says so (the
scene world's ground truth, :mod:`vlparse.data.synthetic.truth`; real data has none).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NEGATIVE_DRAWS",
    "batch_partners",
    "draw_unmatched",
    "lend_batch_negatives",
    "normalize_caption",
    "sample_negatives",
]

#: Draws of an unmatched caption when a negative filter verifies them (the last draw is kept
#: even if it may describe the image; with 7 % of draws rejected that is never reached).
NEGATIVE_DRAWS = 20


def normalize_caption(text: str) -> str:
    """Lower-cased words of ``text`` joined by single spaces (punctuation dropped), to compare
    captions: ``"There is one star."`` and ``"there is one  star"`` are the same caption."""
    return " ".join(re.findall(r"\w+", text.lower()))


def sample_negatives(index: int, n: int, num_neg: int, generator: torch.Generator) -> list[int]:
    """Indices of ``num_neg`` other images to take unmatched captions from.

    Never returns ``index``. The indices are distinct when ``n - 1 >= num_neg``; otherwise they
    are drawn with replacement among the ``n - 1`` other images.

    Args:
        index: the image whose negatives are drawn, in ``[0, n)``.
        n: the number of images to draw from (at least 2).
        generator: a CPU generator; the same state gives the same indices.
    """
    if n < 2:
        raise ValueError(
            f"sample_negatives: need at least 2 images to draw an unmatched one, got n={n}"
        )
    if not 0 <= index < n:
        raise ValueError(f"sample_negatives: index {index} is outside [0, {n})")
    if num_neg < 0:
        raise ValueError(f"sample_negatives: num_neg must be >= 0, got {num_neg}")
    if n - 1 >= num_neg:
        others = torch.randperm(n - 1, generator=generator)[:num_neg]
    else:
        others = torch.randint(0, n - 1, (num_neg,), generator=generator)
    # Skip over ``index``: draws in [0, n-1) map to [0, n) minus {index}.
    return [int(j) + int(j >= index) for j in others.tolist()]


def batch_partners(keys: Tensor, num_neg: int) -> Tensor:
    """Which image of a group lends each image its unmatched captions (``itm_negatives="batch"``).

    The ``G`` images are put in the cyclic order of their random ``keys``; image ``a`` takes its
    ``n``-th unmatched caption from the image ``n + 1`` places after it in that order. For every
    ``n`` the partners are a permutation without fixed points (``G >= 2``), so each image lends
    exactly one caption per slot: over the group, every lent caption is a matched caption of its
    own image as well, and the texts alone say nothing about the label.

    Args:
        keys: ``(G,)`` distinct random numbers (ties are broken by position).
        num_neg: ``N``, unmatched captions per image.

    Returns:
        ``(G, N)`` long tensor of partner positions in ``[0, G)``; with ``G >= 2``,
        ``partners[a, n] != a`` whenever ``(n + 1) % G != 0``.

    Example: keys ``[0.3, 0.1, 0.2]`` give the order ``1, 2, 0``, so with ``N = 1`` image 1 takes
    from 2, 2 from 0 and 0 from 1: ``[[1], [2], [0]]``.
    """
    if keys.dim() != 1 or keys.numel() < 2:
        raise ValueError(
            f"batch_partners: need (G,) keys with G >= 2, got shape {tuple(keys.shape)}"
        )
    if num_neg < 0:
        raise ValueError(f"batch_partners: num_neg must be >= 0, got {num_neg}")
    g = keys.numel()
    order = torch.sort(keys, stable=True).indices  # position in the cycle -> image
    rank = torch.empty_like(order)
    rank[order] = torch.arange(g)  # image -> position in the cycle
    shift = torch.arange(1, num_neg + 1)
    return order[(rank[:, None] + shift[None, :]) % g]


def draw_unmatched(
    captions: Sequence[Sequence[str]],
    j: int,
    k: int,
    gen: torch.Generator,
    redraw: torch.Generator,
    rejects: Callable[[int, str], bool] | None,
) -> str:
    """An unmatched caption for record ``j``: one of record ``k``'s, drawn with ``gen``; with
    ``rejects``, drawn again with ``redraw`` (another record, another caption) while
    ``rejects(j, text)``, up to :data:`NEGATIVE_DRAWS` draws. Redraws leave ``gen`` alone, so
    the item's later draws (MLM masks, MFR noise) are the same with and without a filter.

    Args:
        captions: the captions of every record of the data set.
    """
    other = captions[k]
    text = other[int(torch.randint(len(other), (1,), generator=gen))]
    for _ in range(NEGATIVE_DRAWS - 1 if rejects is not None else 0):
        if not rejects(j, text):
            break
        other = captions[sample_negatives(j, len(captions), 1, redraw)[0]]
        text = other[int(torch.randint(len(other), (1,), generator=redraw))]
    return text


def lend_batch_negatives(
    items: list[dict[str, Any]],
    num_pos: int,
    group: int,
    rejects: Callable[[int, str], bool],
) -> list[dict[str, Any]]:
    """Replace the unmatched captions of items by matched captions of other items of their group.

    The items are cut into groups of ``group`` consecutive items (the last group may be smaller;
    a group of one keeps its own unmatched captions). In a group of ``G``, item ``a``'s ``n``-th
    unmatched caption becomes matched caption ``n % P`` of item ``partners[a, n]``
    (:func:`batch_partners`, ordered by the items' ``batch_key``): every lent caption is also a
    matched caption in the same batch, so a text appears with the label 1 beside its own image
    and 0 beside another. A lent caption that ``rejects(receiving record, text)`` (one of the
    image's own captions, or one the negative filter says may describe it) is not used: that
    slot keeps the caption drawn from the data set. The slot's ``input_ids`` and
    ``attention_mask`` rows and its text are copied together.

    The result depends only on the items and their order, so groups that do not straddle two
    processes' shares of a batch give the same batch whatever the number of processes.

    Args:
        items: drawn items (:meth:`~vlparse.data.collate.PretrainCollator.draw`): ``texts``,
            ``input_ids`` / ``attention_mask`` ``(P + N, L)``, ``record``, ``batch_key``.
        num_pos: ``P``, matched captions per item (the first ``P`` rows).
        group: ``G``, images per group (at least 2).
        rejects: ``(record, text) -> bool``.

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
            _lend(out[a], [items[members[int(partners[local, n])]] for n in range(num_neg)],
                  num_pos, rejects)
    return out


def _lend(item: dict[str, Any], lenders: list[dict[str, Any]], num_pos: int,
          rejects: Callable[[int, str], bool]) -> None:
    """Give ``item`` the matched caption ``n % P`` of ``lenders[n]`` in unmatched slot ``n``."""
    ids, mask = item["input_ids"].clone(), item["attention_mask"].clone()
    texts = list(item["texts"])
    for n, src in enumerate(lenders):
        slot, row = n % num_pos, num_pos + n
        text = src["texts"][slot]
        if rejects(item["record"], text):
            continue
        ids[row], mask[row] = src["input_ids"][slot], src["attention_mask"][slot]
        texts[row] = text
    item.update(input_ids=ids, attention_mask=mask, texts=texts)
