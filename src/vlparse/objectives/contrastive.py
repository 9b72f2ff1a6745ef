"""Image-text contrastive learning (ITC) over the batch gathered across processes, as in FIBER's
coarse-grained pre-training, with an optional queue of earlier features.

Each process holds ``B`` image-text pairs (row ``i``: image ``i`` and its caption ``i``). Their
L2-normalised embeddings are gathered across processes *with* gradient
(:func:`~vlparse.objectives.distributed.all_gather_rows`), so every local image is contrasted
with all ``N`` texts of the global batch and every local text with all ``N`` images, and a loss
averaged over processes has the gradients of one process holding the global batch. (The
released code contrasts each process's own detached micro-batch plus a queue.)

Several captions of one image in a batch: with ``image_ids``, a row's target is its own pair,
and the *other* pairs of the same image are masked out of its softmax (neither positive nor
negative). This keeps the target one column per row (the ``(B,)`` long targets of
:func:`itc_loss` and of the pre-training combiner) and a loss that reaches 0; ALBEF-style soft
targets spread over every caption of the image instead, which puts a floor of ``log k`` into
the loss of a row with ``k`` captions in the batch, a floor that depends on how the batch was
drawn.

The temperature is learnable (FIBER: from 0.07, clamped to [0.001, 1]): the model owns the
parameter, :func:`clamp_temperature` bounds what the logits divide by.

Shapes: ``B`` local pairs, ``N`` pairs over all processes, ``Q`` queued entries, ``E``
embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlparse.objectives.distributed import all_gather_rows, gather_sizes, rank_and_world

__all__ = [
    "GatheredPairs",
    "ContrastiveLogits",
    "FeatureQueue",
    "clamp_temperature",
    "contrastive_logits",
    "itc_loss",
]


@dataclass
class GatheredPairs:
    """The pairs of every process, in rank order.

    Attributes:
        image: ``(N, E)`` normalised image embeddings (with gradient).
        text: ``(N, E)`` normalised text embeddings (with gradient).
        image_ids: ``(N,)`` long image ids, or ``None`` (every pair its own image).
        sizes: the number of pairs of each process.
        offset: where this process's pairs start.
    """

    image: Tensor
    text: Tensor
    image_ids: Tensor | None
    sizes: list[int]
    offset: int

    def own(self) -> Tensor:
        """``(B,)`` long: the gathered index of each local pair."""
        rank, _ = rank_and_world()
        return torch.arange(self.sizes[rank], device=self.image.device) + self.offset


@dataclass
class ContrastiveLogits:
    """The ITC logits of the local rows and what they were computed from.

    Attributes:
        i2t: ``(B, N + Q)`` each local image against the gathered texts, then the queued texts.
        t2i: ``(B, N + Q)`` each local text against the gathered images, then the queued images.
        targets: ``(B,)`` long, each row's own pair among the gathered columns.
        gathered: the gathered pairs (for the hard-negative draw and the queue).
        temperature: the temperature the logits were divided by (detached).
    """

    i2t: Tensor
    t2i: Tensor
    targets: Tensor
    gathered: GatheredPairs
    temperature: Tensor


class FeatureQueue(nn.Module):
    """Detached image and text embeddings of earlier steps: extra negatives for ITC.

    First in, first out; starts empty and holds at most ``size`` entries (the released code
    starts from ``size`` random vectors that count as negatives from the first step). The
    entries are non-persistent buffers: they follow the model's device but are not saved with
    it (after a resume the queue refills within ``size / N`` steps). Enqueue the *gathered*
    embeddings after each step so that every process holds the same queue.

    Args:
        size: ``Q``, the most entries kept. dim: ``E``.
    """

    image: Tensor
    text: Tensor
    image_ids: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue: size and dim must be >= 1, got {size} and {dim}")
        self.size = size
        self.register_buffer("image", torch.empty(0, dim), persistent=False)
        self.register_buffer("text", torch.empty(0, dim), persistent=False)
        self.register_buffer("image_ids", torch.empty(0, dtype=torch.long), persistent=False)

    def __len__(self) -> int:
        return self.image.shape[0]

    @torch.no_grad()
    def enqueue(self, image: Tensor, text: Tensor, image_ids: Tensor | None = None) -> None:
        """Append ``(n, E)`` image and text embeddings (stored L2-normalised) and their
        ``(n,)`` image ids (``-1``, matching no image, when ``None``); the oldest entries beyond
        ``size`` are dropped."""
        if image.shape != text.shape or image.shape[1:] != self.image.shape[1:]:
            raise ValueError(f"FeatureQueue.enqueue: expected two (n, {self.image.shape[1]}) "
                             f"tensors, got {tuple(image.shape)} and {tuple(text.shape)}")
        if image_ids is None:
            image_ids = torch.full((image.shape[0],), -1, dtype=torch.long)
        dev, dtype = self.image.device, self.image.dtype
        image, text = (F.normalize(x.detach().to(dev, dtype), dim=-1) for x in (image, text))
        self.image = torch.cat([self.image, image])[-self.size:]
        self.text = torch.cat([self.text, text])[-self.size:]
        self.image_ids = torch.cat([self.image_ids, image_ids.to(dev)])[-self.size:]


def clamp_temperature(temperature: Tensor, low: float, high: float) -> Tensor:
    """The temperature the logits divide by: ``temperature`` clamped to ``[low, high]``.

    The gradient is that of :func:`torch.clamp` (0 outside the range): keep the parameter itself
    in range too (``with torch.no_grad(): p.clamp_(low, high)`` before the pass, as ALBEF and
    FIBER do), or an optimizer step past a bound would freeze it there."""
    if not 0 < low <= high:
        raise ValueError(f"clamp_temperature: need 0 < low <= high, got [{low}, {high}]")
    return temperature.clamp(low, high)


def _gather(image: Tensor, text: Tensor, image_ids: Tensor | None) -> GatheredPairs:
    rank, _ = rank_and_world()
    sizes = gather_sizes(image.shape[0], image.device)
    ids = all_gather_rows(image_ids, sizes) if image_ids is not None else None
    return GatheredPairs(all_gather_rows(image, sizes), all_gather_rows(text, sizes), ids, sizes,
                         sum(sizes[:rank]))


def contrastive_logits(
    image_emb: Tensor,
    text_emb: Tensor,
    temperature: Tensor | float,
    image_ids: Tensor | None = None,
    queue: FeatureQueue | None = None,
) -> ContrastiveLogits:
    """ITC logits of the local pairs against the gathered batch and the queue.

    Args:
        image_emb: ``(B, E)`` image embeddings (normalised here, in float32).
        text_emb: ``(B, E)`` text embeddings of the same pairs.
        temperature: the (clamped) temperature, a scalar tensor (learnable) or a float.
        image_ids: ``(B,)`` long, non-negative: pairs with equal ids show the same image; their
            columns leave each other's softmax (masked to ``-inf``), in the batch and in the
            queue. ``None``: every pair is its own image.
        queue: earlier embeddings, appended as extra negative columns (never targets).

    Returns:
        :class:`ContrastiveLogits`; collective across processes (every process must call it).
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"contrastive_logits: expected image_emb and text_emb (B, E), got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    if image_ids is not None and image_ids.shape != image_emb.shape[:1]:
        raise ValueError(f"contrastive_logits: image_ids must be (B,) = "
                         f"({image_emb.shape[0]},), got {tuple(image_ids.shape)}")
    image = F.normalize(image_emb.float(), dim=-1)
    text = F.normalize(text_emb.float(), dim=-1)
    pairs = _gather(image, text, image_ids)
    text_cols, image_cols, col_ids = pairs.text, pairs.image, pairs.image_ids
    if queue is not None and len(queue):
        text_cols = torch.cat([text_cols, queue.text.float()])
        image_cols = torch.cat([image_cols, queue.image.float()])
        if col_ids is not None:
            col_ids = torch.cat([col_ids, queue.image_ids])
    i2t = image @ text_cols.t() / temperature
    t2i = text @ image_cols.t() / temperature
    targets = pairs.own()
    if image_ids is not None:
        same = image_ids[:, None] == col_ids[None, :]
        same.scatter_(1, targets[:, None], False)  # a scalar fill: no value from the host
        i2t, t2i = i2t.masked_fill(same, float("-inf")), t2i.masked_fill(same, float("-inf"))
    # a float is filled on the device (torch.as_tensor would copy it from the host)
    used = (temperature.detach().float() if isinstance(temperature, Tensor)
            else image.new_full((), float(temperature), dtype=torch.float32))
    return ContrastiveLogits(i2t, t2i, targets, pairs, used)


def itc_loss(i2t: Tensor, t2i: Tensor, targets: Tensor) -> Tensor:
    """Symmetric InfoNCE: the mean of the image-to-text and text-to-image cross-entropies.

    Args:
        i2t: ``(B, C)`` image-to-text logits. t2i: ``(B, C)`` text-to-image logits.
        targets: ``(B,)`` long, the target column of each row (the same both ways).

    Returns:
        scalar float32, the mean over the ``B`` local rows. Averaged over processes (DDP) it is
        the loss of one process holding the global batch, and so are its gradients.
    """
    return 0.5 * (F.cross_entropy(i2t.float(), targets) + F.cross_entropy(t2i.float(), targets))
