"""Adapters that turn a forward pass of a vision-language model into probe inputs.

Each adapter runs one batch through a model with attentions and hidden states switched on and
returns a :class:`ProbeInputs`: the per-layer attentions for
:func:`vlparse.probing.imf.inter_modality_flow`, the hidden states for
:func:`vlparse.probing.nmi.modality_nmi`, and the ``(B, N)`` modality labels both need
(``1`` vision, ``0`` language, ``-1`` excluded padding).

Supported models:

* vlparse's :class:`~vlparse.models.single_stream.VisualParsingModel` (:func:`probe_vlparse`),
  sequence ``[CLS] V [SEP] W``; labels from :attr:`FusionOutput.modality` (``[CLS]`` and
  ``[SEP]`` are language).
* Hugging Face ``ViltModel`` (:func:`probe_vilt`), sequence ``text tokens, image [CLS], image
  patches``. Text ``[CLS]``/``[SEP]`` are language (``0``); ViLT's image ``[CLS]`` is vision
  (``1``). Image patches that ViLT pads in (sampled from outside the ``pixel_mask``) and text
  padding are ``-1``.
* Hugging Face ``VisualBertModel`` (:func:`probe_visualbert`), sequence ``text tokens, visual
  embeds``. Text ``[CLS]``/``[SEP]`` are language; every visual embed is vision; padding (from
  ``attention_mask`` and ``visual_attention_mask``) is ``-1``.

Wrapper heads (``ViltForQuestionAnswering``, ``VisualBertForPreTraining``, ...) are accepted too:
the inner ``.vilt`` / ``.visual_bert`` backbone is probed. The adapters run under
``torch.no_grad()`` and do not change the model's train/eval mode: call ``model.eval()`` first,
or dropout will perturb the attentions. Hugging Face models must use eager attention to return
attention weights (``attn_implementation="eager"`` when building or loading them).

Hidden states are the models' own: embeddings first, then one per layer (``L + 1`` tensors),
before any final layer norm that sits outside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ProbeInputs", "probe_vilt", "probe_vlparse", "probe_visualbert"]


@dataclass
class ProbeInputs:
    """What the IMF and NMI probes need from one batch.

    Attributes:
        attentions: ``L`` tensors ``(B, H, N, N)`` (row = query), one per layer, in order.
        hidden_states: ``L + 1`` tensors ``(B, N, D)``, the embeddings first.
        modality: ``(B, N)`` long: ``1`` vision, ``0`` language, ``-1`` excluded (padding).
    """

    attentions: tuple[Tensor, ...]
    hidden_states: tuple[Tensor, ...]
    modality: Tensor

    @property
    def num_layers(self) -> int:
        """``L``, the number of attention layers."""
        return len(self.attentions)


def _checked(attentions: Any, hidden_states: Any, modality: Tensor, where: str) -> ProbeInputs:
    """Check that attentions, hidden states and modality agree on ``B`` and ``N``."""
    if not attentions:
        raise RuntimeError(
            f"{where}: the model returned no attention weights. Hugging Face models only return "
            "them with eager attention; build or load the model with attn_implementation='eager'."
        )
    if not hidden_states:
        raise RuntimeError(f"{where}: the model returned no hidden states.")
    batch, tokens = modality.shape
    for layer, att in enumerate(attentions):
        if att.dim() != 4 or att.shape[0] != batch or tuple(att.shape[-2:]) != (tokens, tokens):
            raise RuntimeError(
                f"{where}: layer {layer} attention has shape {tuple(att.shape)}, expected "
                f"({batch}, H, {tokens}, {tokens}) to match the modality labels; the model's "
                "sequence layout is not the one this adapter assumes."
            )
    for idx, hs in enumerate(hidden_states):
        if hs.dim() != 3 or tuple(hs.shape[:2]) != (batch, tokens):
            raise RuntimeError(
                f"{where}: hidden state {idx} has shape {tuple(hs.shape)}, expected "
                f"({batch}, {tokens}, D)."
            )
    return ProbeInputs(tuple(attentions), tuple(hidden_states), modality.long())


_FORCED = ("output_attentions", "output_hidden_states", "return_dict")


def _unwrap(model: nn.Module, cls: type, attr: str, where: str) -> nn.Module:
    """The ``cls`` backbone of ``model``: the model itself or its ``.attr`` submodule."""
    if isinstance(model, cls):
        return model
    inner = getattr(model, attr, None)
    if isinstance(inner, cls):
        return inner
    raise TypeError(
        f"{where}: expected a transformers.{cls.__name__} or a head model with a .{attr} "
        f"backbone, got {type(model).__name__}."
    )


def probe_vlparse(
    model: nn.Module, images: Tensor, input_ids: Tensor, attention_mask: Tensor
) -> ProbeInputs:
    """Probe inputs from vlparse's ``VisualParsingModel``.

    Args:
        model: a :class:`~vlparse.models.single_stream.VisualParsingModel` (anything whose
            ``forward(images, input_ids, attention_mask, output_attentions=...,
            output_hidden_states=...)`` returns a :class:`FusionOutput`).
        images: ``(B, 3, H, W)``.
        input_ids: ``(B, L)`` text part ``W`` (tokenizer output without the leading ``[CLS]``
            as the model expects it).
        attention_mask: ``(B, L)`` 1 for real text tokens, 0 for padding.

    Returns:
        :class:`ProbeInputs` with ``N = 2 + m + L``; ``modality`` is :attr:`FusionOutput.modality`.
    """
    with torch.no_grad():
        out = model(
            images, input_ids, attention_mask, output_attentions=True, output_hidden_states=True
        )
    return _checked(out.attentions, out.hidden_states, out.modality, "probe_vlparse")


def probe_vilt(model: nn.Module, **inputs: Any) -> ProbeInputs:
    """Probe inputs from a Hugging Face ``ViltModel`` (or a ViLT head model).

    Args:
        model: ``transformers.ViltModel`` or a model with a ``.vilt`` ``ViltModel``.
        **inputs: the model's inputs (``input_ids`` or ``inputs_embeds``, ``attention_mask``,
            ``pixel_values`` or ``image_embeds``, ``pixel_mask``, ...), e.g. a ``ViltProcessor``
            output. ``output_attentions`` / ``output_hidden_states`` are set here.

    Returns:
        :class:`ProbeInputs` with ``N = T + I``: ``T`` text positions (``input_ids.shape[1]``)
        labelled ``0``, then ``I`` image positions (ViLT's image ``[CLS]`` and patches) labelled
        ``1``; text padding and padded-in image patches are ``-1``.

    The image layout is read from the embedding module's own returned mask (captured with a
    forward hook), because ViLT samples which patches to keep and which padding to add at
    random, so it cannot be recomputed reliably from ``pixel_mask``.
    """
    from transformers import ViltModel

    where = "probe_vilt"
    vilt = _unwrap(model, ViltModel, "vilt", where)
    inputs = {k: v for k, v in inputs.items() if k not in _FORCED}
    text = inputs.get("input_ids")
    if text is None:
        text = inputs.get("inputs_embeds")
    if text is None:
        raise ValueError(f"{where}: pass input_ids (B, T) or inputs_embeds (B, T, D).")
    text_len = int(text.shape[1])

    captured: list[Tensor] = []

    def _grab(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output[1])

    handle = vilt.embeddings.register_forward_hook(_grab)
    try:
        with torch.no_grad():
            out = vilt(
                **inputs, output_attentions=True, output_hidden_states=True, return_dict=True
            )
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"{where}: expected one call of the embedding module, saw {len(captured)}; pass a "
            "single-image ViltModel batch."
        )
    mask = captured[0]
    if mask.dim() != 2 or mask.shape[1] <= text_len:
        raise RuntimeError(
            f"{where}: embedding mask has shape {tuple(mask.shape)}, expected (B, T + I) with "
            f"T = {text_len} text tokens and at least one image token."
        )
    modality = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    modality[:, text_len:] = 1
    modality = modality.masked_fill(mask == 0, -1)
    return _checked(out.attentions, out.hidden_states, modality, where)


def probe_visualbert(model: nn.Module, **inputs: Any) -> ProbeInputs:
    """Probe inputs from a Hugging Face ``VisualBertModel`` (or a VisualBERT head model).

    Args:
        model: ``transformers.VisualBertModel`` or a model with a ``.visual_bert`` backbone;
            ``config.bypass_transformer`` must be off (otherwise the visual embeds never enter
            the attention layers).
        **inputs: the model's inputs: ``input_ids`` ``(B, T)`` (or ``inputs_embeds``),
            ``attention_mask`` ``(B, T)``, ``visual_embeds`` ``(B, V, d_v)`` (required),
            ``visual_attention_mask`` ``(B, V)``, ... ``output_attentions`` /
            ``output_hidden_states`` are set here.

    Returns:
        :class:`ProbeInputs` with ``N = T + V``: text positions labelled ``0``, visual embeds
        ``1``, padding in either mask ``-1``.
    """
    from transformers import VisualBertModel

    where = "probe_visualbert"
    vb = _unwrap(model, VisualBertModel, "visual_bert", where)
    inputs = {k: v for k, v in inputs.items() if k not in _FORCED}
    if getattr(vb.config, "bypass_transformer", False):
        raise ValueError(
            f"{where}: config.bypass_transformer=True runs the encoder on text only, so its "
            "attentions have no visual tokens; probe a model with bypass_transformer=False."
        )
    text = inputs.get("input_ids")
    if text is None:
        text = inputs.get("inputs_embeds")
    visual = inputs.get("visual_embeds")
    if text is None or visual is None:
        raise ValueError(
            f"{where}: pass input_ids (B, T) (or inputs_embeds) and visual_embeds (B, V, d_v)."
        )
    batch, text_len = int(text.shape[0]), int(text.shape[1])
    num_visual = int(visual.shape[1])
    device = visual.device
    text_mask = inputs.get("attention_mask")
    vis_mask = inputs.get("visual_attention_mask")
    if text_mask is None:
        text_mask = torch.ones(batch, text_len, device=device)
    if vis_mask is None:
        vis_mask = torch.ones(batch, num_visual, device=device)
    if tuple(text_mask.shape) != (batch, text_len) or tuple(vis_mask.shape) != (batch, num_visual):
        raise ValueError(
            f"{where}: attention_mask {tuple(text_mask.shape)} must be ({batch}, {text_len}) and "
            f"visual_attention_mask {tuple(vis_mask.shape)} must be ({batch}, {num_visual})."
        )
    mask = torch.cat([text_mask.to(device), vis_mask.to(device)], dim=1)
    modality = torch.zeros(mask.shape, dtype=torch.long, device=device)
    modality[:, text_len:] = 1
    modality = modality.masked_fill(mask == 0, -1)

    with torch.no_grad():
        out = vb(**inputs, output_attentions=True, output_hidden_states=True, return_dict=True)
    return _checked(out.attentions, out.hidden_states, modality, where)
