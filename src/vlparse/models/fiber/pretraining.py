"""FIBER's coarse-grained pre-training passes (:meth:`FiberModel.forward_pretrain
<vlparse.models.fiber.FiberModel.forward_pretrain>`): ITC in dual-encoder mode, then ITM with
hard negatives and MLM in one fused pass.

One step over ``B`` local image-caption pairs:

1. The temperature parameter is clamped in place to ``[itc_temperature_min,
   itc_temperature_max]`` (so that an optimizer step past a bound cannot freeze it there).
2. ITC, fusion off: the image and text towers run alone; their L2-normalised embeddings are
   gathered across processes *with* gradient and every local image is contrasted with the ``N``
   texts of the global batch (and the queued ones, with ``itc_queue_size > 0``), every local
   text with the ``N`` images; other captions of a pair's image leave its softmax
   (:func:`~vlparse.objectives.contrastive.contrastive_logits` with ``image_id``).
3. ITM negatives: for each local image one text and for each local text one image, drawn from
   the softmax of the ITC similarities over the gathered batch (``hard_negative_pool``), never
   a caption of the same image (``hard_negative_exclude``); each pair's two draws come from its
   own uniforms ``item_noise`` (drawn by the collator from the pair's ``(seed, epoch, index)``),
   so a batch split over processes draws exactly what one process holding it draws. The drawn
   images and texts are fetched from the processes that hold them (no gradient).
4. One fused pass over ``4 B`` rows: the ``3 B`` ITM rows (images ``[img, img, img_neg]`` with
   texts ``[txt, txt_neg, txt]``, labels ``1, 0, 0``) and the ``B`` MLM rows (each image with
   its masked caption). ITM reads the fused feature, MLM the fused text states at the masked
   positions.

The collectives (the ITC gather, the negatives' fetch) run in every process at every step, in
the same order. ``B x N`` similarities and ``4 B`` fused rows per process; the towers run on
``5 B`` images and ``5 B`` texts, as in the released code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlparse.models.fiber.negatives import Negatives, draw_negatives, itm_inputs
from vlparse.models.outputs import PretrainOutput
from vlparse.objectives.contrastive import clamp_temperature, contrastive_logits
from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = ["PASS_FIELDS", "NOISE_PER_ITEM", "first_text", "forward_pretrain"]

PASS_FIELDS = ("itc_temperature", "itc_temperature_min", "itc_temperature_max",
               "itc_queue_size", "itm_negatives", "hard_negative_pool", "hard_negative_exclude")
"""The objectives settings that shape the pre-training passes (saved in ``config.json``); loss
weights and the MLM masking rate belong to the task and the collator."""

NOISE_PER_ITEM = 2
"""Uniforms per pair the passes read from ``item_noise``: its text draw and its image draw."""


def first_text(x: Tensor) -> Tensor:
    """``(B, T, L)`` -> ``(B, L)``, the first (matched) text of each image; ``(B, L)`` as is."""
    if x.dim() == 3:
        return x[:, 0]
    if x.dim() == 2:
        return x
    raise ValueError(f"expected texts of shape (B, L) or (B, T, L), got {tuple(x.shape)}")


def _pad_to(x: Tensor, length: int, value: int) -> Tensor:
    return F.pad(x, (0, length - x.shape[1]), value=value)


def _itc(model: nn.Module, images: Tensor, ids: Tensor, mask: Tensor, image_ids: Tensor | None):
    """Step 1-2: the clamped temperature and the ITC logits of the local pairs."""
    o = model.objectives
    param = model.itc.temperature
    with torch.no_grad():
        param.clamp_(o.itc_temperature_min, o.itc_temperature_max)
    tau = clamp_temperature(param, o.itc_temperature_min, o.itc_temperature_max)
    image_emb = model.encode_image(images).embeds
    text_emb = model.encode_text(ids, mask).embeds
    return contrastive_logits(image_emb, text_emb, tau, image_ids, queue=model.itc_queue)


def _negatives(model: nn.Module, logits, batch: dict[str, Tensor]) -> Negatives:
    """Step 3: the drawn indices (from ``item_noise`` when the batch has it, else the global
    RNG)."""
    o = model.objectives
    noise = batch.get("item_noise")
    if noise is not None:
        if noise.dim() != 2 or noise.shape[1] < NOISE_PER_ITEM:
            raise ValueError(f"item_noise must be (B, >= {NOISE_PER_ITEM}), got "
                             f"{tuple(noise.shape)}")
        noise = noise[:, :NOISE_PER_ITEM]
    if sum(logits.gathered.sizes) < 2:
        raise ValueError("FIBER's ITM needs at least two pairs in the batch (over all "
                         "processes) to draw negatives from")
    return draw_negatives(logits, o.itm_negatives, o.hard_negative_pool,
                          o.hard_negative_exclude, noise=noise)


def forward_pretrain(model: nn.Module, batch: dict[str, Tensor], run_masked: bool = True
                     ) -> PretrainOutput:
    """The pre-training passes of one batch (see the module docstring).

    Args:
        model: a :class:`~vlparse.models.fiber.FiberModel`.
        batch: ``image (B, 3, S, S)``; ``input_ids`` / ``attention_mask`` ``(B, L)`` or
            ``(B, T, L)`` (the first text of each image is its matched caption, with its
            special tokens); ``mlm_input_ids`` / ``mlm_labels`` likewise (labels -100 where not
            masked; needed with ``run_masked``); optional ``image_id (B,)`` (equal ids: the same
            image) and ``item_noise (B, >= 2)`` uniforms.
        run_masked: run the MLM rows (``False``: ITC and ITM only).

    Returns:
        :class:`~vlparse.models.outputs.PretrainOutput`: ``itc_logits_i2t`` / ``_t2i`` ``(B, N +
        Q)`` and ``itc_targets (B,)``; ``itm_logits (3 B, 2)``, ``itm_labels`` ``1`` for the
        first ``B`` rows, ``0`` for the ``2 B`` others; ``mlm_logits (K, V)`` and ``mlm_labels
        (K,)``; ``diagnostics``: ``temperature``, ``negative_fallbacks`` (rows whose pool held
        only pairs of their image), ``gate_i2t_k`` / ``gate_t2i_k`` of each fused pair ``k``.
    """
    images = batch["image"]
    ids, mask = first_text(batch["input_ids"]), first_text(batch["attention_mask"])
    b = images.shape[0]
    logits = _itc(model, images, ids, mask, batch.get("image_id"))
    negatives = _negatives(model, logits, batch)
    itm = itm_inputs(images, ids, mask, negatives, model.cfg.text.pad_token_id)
    rows = [itm.images], [itm.input_ids], [itm.attention_mask]
    if run_masked:
        length = itm.input_ids.shape[1]
        labels = _pad_to(first_text(batch["mlm_labels"]), length, IGNORE_INDEX)
        rows[0].append(images)
        rows[1].append(_pad_to(first_text(batch["mlm_input_ids"]), length,
                               model.cfg.text.pad_token_id))
        rows[2].append(_pad_to(mask, length, 0))
    fused = model(*(torch.cat(r) for r in rows))
    out = PretrainOutput(itc_logits_i2t=logits.i2t, itc_logits_t2i=logits.t2i,
                         itc_targets=logits.targets,
                         itm_logits=model.itm_head(fused.pooler_output[: 3 * b]),
                         itm_labels=itm.labels)
    if run_masked:
        selected = labels != IGNORE_INDEX
        out.mlm_logits = model.mlm_head(fused.text_hidden_state[3 * b:][selected])
        out.mlm_labels = labels[selected]
    if model.itc_queue is not None and model.training:
        g = logits.gathered
        model.itc_queue.enqueue(g.image, g.text, g.image_ids)
    out.diagnostics = _diagnostics(model, logits.temperature, negatives)
    return out


def _diagnostics(model: nn.Module, temperature: Tensor, negatives: Negatives) -> dict[str, Tensor]:
    d = {"temperature": temperature.detach(),
         "negative_fallbacks": torch.tensor(float(negatives.fallbacks))}
    for k, (i2t, t2i) in enumerate(model.gates.detach().unbind(0)):
        d[f"gate_i2t_{k}"], d[f"gate_t2i_{k}"] = i2t, t2i
    return d
