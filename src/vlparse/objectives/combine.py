"""One pure function that turns a model's pre-training pass into the weighted loss.

The model owns its passes and returns logits, targets and masks
(:class:`~vlparse.models.outputs.PretrainOutput`); :func:`pretrain_loss` computes each term
the output carries, weights it and sums. Nothing here reaches into a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from vlparse.objectives.contrastive import itc_loss
from vlparse.objectives.itm import itm_loss
from vlparse.objectives.mfr import mfr_loss
from vlparse.objectives.mlm import IGNORE_INDEX, mlm_loss
from vlparse.objectives.ot import vla_loss

__all__ = ["LossOutput", "PretrainTargets", "TERMS", "pretrain_loss"]

TERMS = ("itm", "vla", "mlm", "mfr", "itc")
"""The terms of :func:`pretrain_loss`, in the order they are summed."""


class PretrainTargets(Protocol):
    """What :func:`pretrain_loss` reads: the fields of
    :class:`~vlparse.models.outputs.PretrainOutput` (``None`` where a family or a step has no
    such term). ``T`` pairs, ``K`` masked text positions, ``M`` masked visual tokens, ``B``
    local ITC pairs whose rows are scored against ``C`` columns (e.g. the pairs gathered over
    all processes and a queue; a column that is neither target nor negative holds ``-inf``)."""

    itm_logits: Tensor | None  # (T, 2)
    itm_labels: Tensor | None  # (T,)
    vla_distance: Tensor | None  # (T,)
    mlm_logits: Tensor | None  # (K, V)
    mlm_labels: Tensor | None  # (K,)
    mfr_pred: Tensor | None  # (M, c)
    mfr_target: Tensor | None  # (M, c)
    mfr_num_samples: int | None
    itc_logits_i2t: Tensor | None  # (B, C): each local image against the texts
    itc_logits_t2i: Tensor | None  # (B, C): each local text against the images
    itc_targets: Tensor | None  # (B,) the target column of each row, the same both ways


@dataclass
class LossOutput:
    """The weighted total, every computed term (also those weighted 0) and the accuracy counts
    (``itm_correct`` / ``itm_total``, ``mlm_correct`` / ``mlm_total``, ``itc_correct`` /
    ``itc_total``: rows of both ITC directions whose highest logit is their target): integers,
    or 0-dim integer tensors on the device where the count depends on the data (read back by
    whoever logs them, so that the step itself never waits for the device)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int | Tensor] = field(default_factory=dict)


def _identity(x: Tensor) -> Tensor:
    return x


def _itc_accuracy(i2t: Tensor, t2i: Tensor, targets: Tensor) -> tuple[Tensor, int]:
    """Rows of both directions whose highest logit is their target (on the device), and the
    rows counted."""
    with torch.no_grad():
        hits = (i2t.argmax(1) == targets).sum() + (t2i.argmax(1) == targets).sum()
    return hits, 2 * int(targets.numel())


def _terms(
    out: PretrainTargets, reduce_count: Callable[[Tensor], Tensor]
) -> tuple[dict[str, Tensor], dict[str, int | Tensor]]:
    """Each term the output has fields for, and the accuracy counts."""
    parts: dict[str, Tensor] = {}
    counts: dict[str, int | Tensor] = {}
    if out.itm_logits is not None:
        parts["itm"] = itm_loss(out.itm_logits.float(), out.itm_labels)
        counts["itm_correct"] = (out.itm_logits.argmax(-1) == out.itm_labels).sum()
        counts["itm_total"] = out.itm_labels.numel()
    if out.vla_distance is not None:
        parts["vla"] = vla_loss(out.vla_distance, out.itm_labels)
    if out.mlm_logits is not None:
        # token-level: normalised by the masked tokens of all processes (DDP = one big batch);
        # rows labelled -100 (a model's fixed-size gather) are not counted
        valid = out.mlm_labels != IGNORE_INDEX
        count = valid.sum().float()
        normalizer = reduce_count(count).clamp(min=1.0)
        parts["mlm"] = mlm_loss(out.mlm_logits.float(), out.mlm_labels, normalizer=normalizer)
        counts["mlm_correct"] = ((out.mlm_logits.argmax(-1) == out.mlm_labels) & valid).sum()
        counts["mlm_total"] = valid.sum()
    if out.mfr_pred is not None:
        parts["mfr"] = mfr_loss(out.mfr_pred.float(), out.mfr_target.float(),
                                num_samples=out.mfr_num_samples)
    if out.itc_logits_i2t is not None:
        i2t, t2i, targets = out.itc_logits_i2t, out.itc_logits_t2i, out.itc_targets
        parts["itc"] = itc_loss(i2t, t2i, targets)
        counts["itc_correct"], counts["itc_total"] = _itc_accuracy(i2t, t2i, targets)
    return parts, counts


def pretrain_loss(
    output: PretrainTargets,
    weights: Mapping[str, float],
    reduce_count: Callable[[Tensor], Tensor] = _identity,
) -> LossOutput:
    """The weighted pre-training loss of one pass.

    Terms: ITM (cross-entropy of ``itm_logits`` against ``itm_labels``), VLA (matched minus
    unmatched OT distances, :func:`~vlparse.objectives.ot.vla_loss`), MLM (cross-entropy of the
    masked positions divided by their count over all processes), MFR (squared error over
    ``mfr_num_samples``), ITC (symmetric InfoNCE over the local rows,
    :func:`~vlparse.objectives.contrastive.itc_loss`: averaged over processes it is the loss of
    one process holding the global batch when every process holds as many rows). A term whose
    fields are ``None`` is not computed; a computed term whose weight is 0 (or absent from
    ``weights``) is reported in ``parts`` but not added. The terms are summed in the order of
    :data:`TERMS`.

    Args:
        output: a :class:`~vlparse.models.outputs.PretrainOutput`.
        weights: ``{term: weight}``, e.g. ``{"itm": 1, "vla": 0.1, "mlm": 1, "mfr": 0.01}``.
        reduce_count: turns a local count into the mean over processes (the identity in one
            process), so that a DDP step equals a one-process step over the global batch.

    Raises:
        ValueError: the output has no term with a non-zero weight.
    """
    unknown = set(weights) - set(TERMS)
    if unknown:
        raise ValueError(f"pretrain_loss: unknown terms {sorted(unknown)}; known: {TERMS}")
    parts, counts = _terms(output, reduce_count)
    weighted = [weights[k] * parts[k] for k in TERMS if k in parts and weights.get(k, 0.0) != 0]
    if not weighted:
        raise ValueError(
            f"pretrain_loss: no term with a non-zero weight; computed {sorted(parts)}, "
            f"weights {dict(weights)}"
        )
    total = weighted[0]
    for term in weighted[1:]:
        total = total + term
    return LossOutput(total, parts, counts)
