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
   positions (with :meth:`FiberModel.set_static_shapes
   <vlparse.models.fiber.FiberModel.set_static_shapes>`: at every text position of the masked
   rows, labelled -100 where not masked, so that no size depends on the data).

The blocks and layers below the first fused pair do not see the other modality
(:mod:`~vlparse.models.fiber.fusion`), so each image's and each text's *bottom* runs once and
serves the dual encoder and every fused row it takes part in: bottoms of ``2 B`` images (the
local ones, the drawn ones) and ``3 B`` texts (local, drawn, masked) where the released code runs
whole towers on ``5 B`` images and ``5 B`` texts. (For FIBER-B, 14 of Swin's 24 blocks and most
of its cost lie below the first fused block; rows that share a bottom share its dropout.)

The collectives (the text lengths, the ITC gather, the negatives' fetch) run in every process at
every step, in the same order. ``B x N`` similarities and ``4 B`` fused rows per process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlparse.models.fiber.fusion import fused_top, image_bottom, text_bottom, unfused_top
from vlparse.models.fiber.negatives import Negatives, draw_negatives, itm_inputs
from vlparse.models.outputs import PretrainOutput
from vlparse.objectives.contrastive import clamp_temperature, contrastive_logits
from vlparse.objectives.distributed import gather_sizes
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


def _itc(model: nn.Module, x: Tensor, h: Tensor, mask: Tensor, image_ids: Tensor | None):
    """Step 1-2: the clamped temperature and the ITC logits of the local pairs, from the
    bottoms ``x`` and ``h`` through the unfused top (the dual encoder)."""
    o = model.objectives
    param = model.itc.temperature
    with torch.no_grad():
        param.clamp_(o.itc_temperature_min, o.itc_temperature_max)
    tau = clamp_temperature(param, o.itc_temperature_min, o.itc_temperature_max)
    tokens, states = unfused_top(model.image, model.text, model.pairs, x, h, mask)
    return contrastive_logits(model.itc.embed_image(tokens), model.itc.embed_text(states), tau,
                              image_ids, queue=model.itc_queue)


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


def _texts(model: nn.Module, batch: dict[str, Tensor], run_masked: bool
           ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The matched texts ``(B, L')`` and their mask, the masked texts and their labels, padded
    to the longest text of the negatives' pool (a collective with the gathered pool)."""
    ids, mask = first_text(batch["input_ids"]), first_text(batch["attention_mask"])
    mlm_ids = labels = None
    if run_masked:
        mlm_ids, labels = first_text(batch["mlm_input_ids"]), first_text(batch["mlm_labels"])
    if model.objectives.hard_negative_pool == "gathered":
        length, pad = max(gather_sizes(ids.shape[1], ids.device)), model.cfg.text.pad_token_id
        ids, mask = _pad_to(ids, length, pad), _pad_to(mask, length, 0)
        if run_masked:
            mlm_ids, labels = _pad_to(mlm_ids, length, pad), _pad_to(labels, length, IGNORE_INDEX)
    return ids, mask, mlm_ids, labels


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
        (K,)`` at the ``K`` masked positions (with ``model.static_shapes``: ``(B * L, V)`` and
        ``(B * L,)`` at every text position of the ``B`` masked rows, -100 where not masked);
        ``diagnostics``: ``temperature``, ``negative_fallbacks`` (rows whose pool held
        only pairs of their image), ``gate_i2t_k`` / ``gate_t2i_k`` of each fused pair ``k``.
    """
    images = batch["image"]
    b = images.shape[0]
    ids, mask, mlm_ids, labels = _texts(model, batch, run_masked)
    x = image_bottom(model.image, model.pairs, images)
    h = text_bottom(model.text, model.pairs, ids, mask)
    logits = _itc(model, x, h, mask, batch.get("image_id"))
    negatives = _negatives(model, logits, batch)
    itm = itm_inputs(images, ids, mask, negatives, model.cfg.text.pad_token_id)
    more_ids, more_mask = [itm.input_ids[b:2 * b]], [itm.attention_mask[b:2 * b]]
    if run_masked:
        more_ids.append(mlm_ids)
        more_mask.append(mask)
    more = text_bottom(model.text, model.pairs, torch.cat(more_ids), torch.cat(more_mask))
    xs = [x, x, image_bottom(model.image, model.pairs, itm.images[2 * b:])]
    hs, masks = [h, more[:b], h], [mask, more_mask[0], mask]
    if run_masked:
        xs, hs, masks = [*xs, x], [*hs, more[b:]], [*masks, mask]
    fused = fused_top(model.image, model.text, model.pairs, model.i2t, model.t2i, torch.cat(xs),
                      torch.cat(hs), torch.cat(masks), model.cfg.fusion.final_norms == "keep")
    pooled = model.cross_modal(fused.text, fused.image)[2]
    out = PretrainOutput(itc_logits_i2t=logits.i2t, itc_logits_t2i=logits.t2i,
                         itc_targets=logits.targets, itm_logits=model.itm_head(pooled[: 3 * b]),
                         itm_labels=itm.labels)
    if run_masked:
        out.mlm_logits, out.mlm_labels = _mlm(model, fused.text[3 * b:], labels)
    if model.itc_queue is not None and model.training:
        g = logits.gathered
        model.itc_queue.enqueue(g.image, g.text, g.image_ids)
    out.diagnostics = _diagnostics(model, logits.temperature, negatives)
    return out


def _mlm(model: nn.Module, states: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The MLM logits and labels of the masked rows: fused text states ``(B, L, Dt)`` and labels
    ``(B, L)`` (-100 where not masked) -> ``(K, V)`` and ``(K,)`` at the ``K`` masked positions,
    or, with ``model.static_shapes``, ``(B * L, V)`` and ``(B * L,)`` at every position, -100
    where not masked (no size that depends on the data: nothing is read back to the host)."""
    if model.static_shapes:
        return model.mlm_head(states.flatten(0, 1)), labels.flatten()
    selected = labels != IGNORE_INDEX
    return model.mlm_head(states[selected]), labels[selected]


def _diagnostics(model: nn.Module, temperature: Tensor, negatives: Negatives) -> dict[str, Tensor]:
    d = {"temperature": temperature.detach(),
         "negative_fallbacks": torch.as_tensor(negatives.fallbacks).float()}
    for k, (i2t, t2i) in enumerate(model.gates.detach().unbind(0)):
        d[f"gate_i2t_{k}"], d[f"gate_t2i_{k}"] = i2t, t2i
    return d
