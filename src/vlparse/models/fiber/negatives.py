"""Negatives for FIBER's image-text matching (ITM): drawn from the ITC similarities, fetched as
raw inputs for the fused pass.

For each local image one text, and for each local text one image, is drawn from a *pool*: the
batch gathered across processes (``pool="gathered"``, default) or the process's own pairs
(``"local"``). ``mode="hard"`` draws once per row from ``softmax(ITC logits)`` over the allowed
entries (the released rule: zero the excluded entries, renormalise); ``"random"`` uniformly
among them. ``exclude="same_image"`` (default) never draws a pair of the same image, so another
caption of the image is never scored as a mismatch; ``"pair"`` excludes only the pair itself,
as released. A row whose pool holds nothing allowed (every pair shows its image) falls back to
the ``"pair"`` rule; :attr:`Negatives.fallbacks` counts such rows.

The fused pass needs the negatives' *inputs*: an image drawn for a local text may live on
another process. :func:`itm_inputs` fetches exactly the drawn images, token ids and masks
(:func:`~vlparse.objectives.distributed.fetch_rows`, one ``all_to_all`` per tensor, no
gradient): each process receives ``B`` images, ``B x 3 x S x S`` numbers (14 MB for ``B = 8`` at
384 px in float32), and sends what the others drew from it (``B`` on average, the global batch
at worst). Gathering every image instead would hold the global batch on each process
(``N x 3 x S x S``: 0.9 GB for ``N = 512`` at 384 px) and the released queue of raw images 7.25
GB. The pool ``"local"`` moves nothing.

Shapes: ``B`` local pairs, ``P`` pool size (``N`` gathered or ``B`` local), ``L`` text length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vlparse.objectives.contrastive import ContrastiveLogits
from vlparse.objectives.distributed import fetch_rows, gather_sizes, rank_and_world

__all__ = ["Negatives", "ItmInputs", "allowed_negatives", "sample_rows", "draw_negatives",
           "itm_inputs"]

Pool = Literal["gathered", "local"]


@dataclass
class Negatives:
    """Drawn negatives, as indices into the pool.

    Attributes:
        text_for_image: ``(B,)`` long, the text drawn for each local image.
        image_for_text: ``(B,)`` long, the image drawn for each local text.
        pool: ``"gathered"`` (indices into the gathered batch) or ``"local"``.
        sizes: pairs per process (``[B]`` for the local pool).
        fallbacks: ``()`` long tensor (kept on the device: no read-back in the step), the rows
            that had no allowed entry under ``same_image`` and used ``pair``.
    """

    text_for_image: Tensor
    image_for_text: Tensor
    pool: Pool
    sizes: list[int]
    fallbacks: Tensor | int = 0


@dataclass
class ItmInputs:
    """The fused ITM pass's inputs: images ``[img, img, img_neg]`` with texts
    ``[txt, txt_neg, txt]``.

    Attributes:
        images: ``(3B, 3, S, S)``. input_ids, attention_mask: ``(3B, L')`` (``L'``: the longest
            text of the pool). labels: ``(3B,)`` long, 1 for the ``B`` pairs, 0 for the ``2B``
            negatives.
    """

    images: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor


def allowed_negatives(
    own: Tensor,
    pool_size: int,
    row_ids: Tensor | None = None,
    pool_ids: Tensor | None = None,
    exclude: Literal["same_image", "pair"] = "same_image",
) -> Tensor:
    """``(B, P)`` bool: which pool entries may be drawn as a row's negative.

    Args:
        own: ``(B,)`` long, each row's own pair in the pool (always excluded).
        pool_size: ``P``.
        row_ids: ``(B,)`` image ids of the rows; pool_ids: ``(P,)`` of the pool. Needed by
            ``"same_image"`` (without them every pair is its own image).
        exclude: ``"same_image"`` or ``"pair"``.
    """
    allowed = torch.ones(len(own), pool_size, dtype=torch.bool, device=own.device)
    if exclude == "same_image" and row_ids is not None and pool_ids is not None:
        allowed &= row_ids[:, None] != pool_ids[None, :]
    elif exclude not in ("same_image", "pair"):
        raise ValueError(f"exclude must be 'same_image' or 'pair', got {exclude!r}")
    return allowed.scatter_(1, own[:, None], False)  # a scalar fill: no value from the host


def _inverse_cdf(probs: Tensor, noise: Tensor) -> Tensor:
    """``(B, P)`` non-negative weights and ``(B,)`` uniforms in ``[0, 1)`` -> ``(B,)`` long: the
    entry whose share of the cumulative weight holds each uniform (never a 0-weight entry)."""
    probs = probs.double()
    cdf = probs.cumsum(1)
    target = noise.to(cdf) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None].contiguous(), right=True).squeeze(1)
    last = (probs > 0).long().cumsum(1).argmax(1)  # the last entry of positive weight
    return torch.minimum(index, last)


def sample_rows(
    logits: Tensor,
    allowed: Tensor,
    mode: Literal["hard", "random"] = "hard",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    check: bool = True,
) -> Tensor:
    """One draw per row among the allowed entries: ``(B, P)`` logits and mask -> ``(B,)`` long.

    ``"hard"``: with probability ``softmax(logits)`` renormalised over the allowed entries
    (computed over them, so a small temperature cannot underflow every allowed entry to 0);
    ``"random"``: uniformly.

    Args:
        generator: on the logits' device; ``None`` uses the global RNG.
        noise: ``(B,)`` uniforms in ``[0, 1)``, one per row: the draw is then the inverse of the
            row's cumulative distribution at its uniform, a function of the row alone (whatever
            the other rows, the process or the generator); ``generator`` is not used.
        check: refuse a row with no allowed entry (a read-back to the host; callers that
            guarantee one, as :func:`draw_negatives` does, turn it off).

    Raises:
        ValueError: a row with no allowed entry.
    """
    if check and not bool(allowed.any(1).all()):
        raise ValueError("sample_rows: a row has no allowed entry (a pool of one pair?)")
    if mode == "hard":
        probs = logits.detach().float().masked_fill(~allowed, float("-inf")).softmax(1)
    elif mode == "random":
        probs = allowed.float()
    else:
        raise ValueError(f"mode must be 'hard' or 'random', got {mode!r}")
    if noise is not None:
        if noise.shape != probs.shape[:1]:
            raise ValueError(f"sample_rows: noise must be ({probs.shape[0]},), got "
                             f"{tuple(noise.shape)}")
        return _inverse_cdf(probs, noise)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def draw_negatives(
    logits: ContrastiveLogits,
    mode: Literal["hard", "random"] = "hard",
    pool: Pool = "gathered",
    exclude: Literal["same_image", "pair"] = "same_image",
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Negatives:
    """For each local image a text, for each local text an image, from the ITC logits.

    Args:
        logits: the ITC pass (:func:`~vlparse.objectives.contrastive.contrastive_logits`):
            its gathered embeddings and temperature give the similarities drawn from (before
            ITC's masking of other captions of an image); queued entries are never drawn (no
            inputs are kept for them).
        mode, pool, exclude: see the module docstring (``FiberObjectiveConfig``'s
            ``itm_negatives``, ``hard_negative_pool``, ``hard_negative_exclude``).
        generator: one per process, seeded differently per process and step.
        noise: ``(B, 2)`` uniforms in ``[0, 1)`` per local pair (the text draw of its image,
            the image draw of its text), e.g. drawn with the pair's data: the draws then
            depend on each pair's row of similarities and its uniforms only, so that a batch
            split over processes draws what one process holding it draws. Replaces
            ``generator``.
    """
    g = logits.gathered
    rank, _ = rank_and_world()
    ids = g.image_ids
    if pool == "gathered":
        cols, own, sizes = slice(0, sum(g.sizes)), logits.targets, list(g.sizes)
    elif pool == "local":
        n = g.sizes[rank]
        cols, own, sizes = slice(g.offset, g.offset + n), logits.targets - g.offset, [n]
    else:
        raise ValueError(f"pool must be 'gathered' or 'local', got {pool!r}")
    pool_ids = ids[cols] if ids is not None else None
    row_ids = ids[g.own()] if ids is not None else None
    size = cols.stop - cols.start
    if size < 2:
        raise ValueError("draw_negatives: a pool of one pair has no negative")
    allowed = allowed_negatives(own, size, row_ids, pool_ids, exclude)
    empty = ~allowed.any(1)  # such rows fall back to "pair" (decided on the device)
    allowed = torch.where(empty[:, None], allowed_negatives(own, size, exclude="pair"), allowed)
    with torch.no_grad():  # the similarities before ITC masked other pairs of an image
        rows = g.own()
        i2t = g.image[rows] @ g.text[cols].t() / logits.temperature
        t2i = g.text[rows] @ g.image[cols].t() / logits.temperature
    if noise is not None and noise.shape != (len(own), 2):
        raise ValueError(f"draw_negatives: noise must be ({len(own)}, 2), got "
                         f"{tuple(noise.shape)}")
    u = (None, None) if noise is None else (noise[:, 0], noise[:, 1])
    return Negatives(sample_rows(i2t, allowed, mode, generator, u[0], check=False),
                     sample_rows(t2i, allowed, mode, generator, u[1], check=False), pool, sizes,
                     empty.sum())


def _pad_text(ids: Tensor, mask: Tensor, length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    extra = length - ids.shape[1]
    return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=0)


def itm_inputs(
    images: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    negatives: Negatives,
    pad_id: int,
) -> ItmInputs:
    """Assemble the fused ITM pass: the ``B`` pairs, each image with its drawn text, each text
    with its drawn image (FIBER's ``[img, img, img_neg] x [txt, txt_neg, txt]``).

    Args:
        images: ``(B, 3, S, S)`` local images. input_ids, attention_mask: ``(B, L)`` local texts.
        negatives: from :func:`draw_negatives` over the same pairs.
        pad_id: the tokenizer's padding id (texts of other processes may be longer: every text
            is padded to the pool's longest).

    Returns:
        :class:`ItmInputs`, detached from the inputs' graph for the fetched rows. With the
        gathered pool this is collective (every process must call it).
    """
    if negatives.pool == "local":
        ids_neg = input_ids[negatives.text_for_image]
        mask_neg = attention_mask[negatives.text_for_image]
        img_neg = images[negatives.image_for_text]
    else:
        length = max(gather_sizes(input_ids.shape[1], input_ids.device))
        input_ids, attention_mask = _pad_text(input_ids, attention_mask, length, pad_id)
        sizes = negatives.sizes
        text = torch.stack([input_ids, attention_mask.to(input_ids.dtype)], 1)  # one fetch
        text_neg = fetch_rows(text, negatives.text_for_image, sizes)
        ids_neg, mask_neg = text_neg[:, 0], text_neg[:, 1].to(attention_mask.dtype)
        img_neg = fetch_rows(images, negatives.image_for_text, sizes)
    b = images.shape[0]
    labels = torch.cat([torch.ones(b, dtype=torch.long, device=images.device),
                        torch.zeros(2 * b, dtype=torch.long, device=images.device)])
    return ItmInputs(
        images=torch.cat([images, images, img_neg]),
        input_ids=torch.cat([input_ids, ids_neg, input_ids]),
        attention_mask=torch.cat([attention_mask, mask_neg, attention_mask]),
        labels=labels,
    )
