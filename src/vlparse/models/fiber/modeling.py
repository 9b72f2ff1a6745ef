"""The FIBER model: a timm Swin and a transformers BERT/RoBERTa with gated cross-attention in
their top ``F`` blocks/layers (fusion in the backbone), after Dou et al., NeurIPS 2022.

One set of weights serves two modes, chosen per call:

- fusion off (``forward(..., fusion=False)``, :meth:`FiberModel.encode_image`,
  :meth:`FiberModel.encode_text`): a dual encoder. Each backbone runs exactly as its library
  runs it, no cross-attention parameter is touched, and the ITC projections give L2-normalised
  embeddings for contrastive learning and fast retrieval;
- fusion on (the default): the backbones run side by side and exchange information in the fused
  pairs (:mod:`~vlparse.models.fiber.fusion`); the cross-modal poolers give the fused feature
  ``pooler_output`` for ITM and the task heads, and the MLM head reads the fused text states.

Every gate starts at 0, so a freshly built (or freshly initialised from ImageNet / RoBERTa) model
computes in fused mode exactly what it computes in dual mode, up to the cross-modal poolers.
The decisions the released code leaves open are config options (:mod:`vlparse.config.fiber`):
final LayerNorms on the fused path (kept by default), a LayerNorm on the image query (on by
default), hard-negative source (the gathered batch, never a caption of the same image),
parameter groups by module role with learning-rate multipliers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlparse.config.base import from_dict, to_dict
from vlparse.config.fiber import FiberModelConfig, FiberObjectiveConfig
from vlparse.config.training import OptimConfig
from vlparse.models.base import PretrainedMixin
from vlparse.models.fiber.cross_attention import GatedCrossAttention
from vlparse.models.fiber.fusion import run_fused
from vlparse.models.fiber.heads import CrossModalPooler, ITCProjection, ITMHead
from vlparse.models.fiber.image_tower import SwinTower
from vlparse.models.fiber.loading import load_text_weights
from vlparse.models.fiber.outputs import FiberImageOutput, FiberOutput, FiberTextOutput
from vlparse.models.fiber.pairing import fusion_pairs
from vlparse.models.fiber.params import role_param_groups
from vlparse.models.fiber.pretraining import PASS_FIELDS, forward_pretrain
from vlparse.models.fiber.text_tower import TextTower
from vlparse.models.outputs import PretrainOutput
from vlparse.models.weights import LoadReport
from vlparse.objectives.contrastive import FeatureQueue

__all__ = ["FAMILY", "FiberModel"]

FAMILY = "fiber"
SWIN_NORM_EPS = 1e-5  # timm's Swin LayerNorm epsilon, used by the image-side query norm
SAVED_TOKENIZER = "."
"""``text.tokenizer`` in a saved ``config.json`` when the tokenizer is saved beside the model
(``from_pretrained`` puts the folder's path back)."""


class FiberModel(PretrainedMixin, nn.Module):
    """FIBER: fusion in the backbone.

    Args:
        cfg: the model config. No weights are read here; call :meth:`load_pretrained`.
        objectives: the pre-training settings the model's passes use (kept as
            ``self.objectives``; default :class:`~vlparse.config.fiber.FiberObjectiveConfig`'s):
            the initial ITC temperature ``itc_temperature``, a learnable parameter of the
            ``head`` role (``itc.temperature``) saved with the weights, so a loaded model keeps
            its trained value whatever this says; its bounds, the queue size and the ITM
            negatives of :meth:`forward_pretrain`
            (:data:`~vlparse.models.fiber.pretraining.PASS_FIELDS`).

    Attributes:
        image: :class:`~vlparse.models.fiber.image_tower.SwinTower` (timm model in ``image.model``).
        text: :class:`~vlparse.models.fiber.text_tower.TextTower` (transformers model in
            ``text.model``).
        pairs: the fused pairs (:func:`~vlparse.models.fiber.fusion_pairs`), bottom up.
        i2t: image-to-text cross-attention of each pair (in the image block).
        t2i: text-to-image cross-attention of each pair (in the text layer).
        cross_modal: the transforms and poolers of the fused feature.
        itc: the dual encoder's projections and the ITC temperature. itm_head:
            ``Linear(2 D -> 2)``.
        mlm_head: transformers' MLM head, decoder tied to the word embeddings.
        itc_queue: earlier ITC embeddings (``objectives.itc_queue_size > 0``; not saved), or
            ``None``.
    """

    family = FAMILY
    static_shapes: bool = False
    """Set by :meth:`set_static_shapes`."""

    def __init__(self, cfg: FiberModelConfig,
                 objectives: FiberObjectiveConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.objectives = objectives if objectives is not None else FiberObjectiveConfig()
        t = cfg.text
        self.image = SwinTower(cfg.visual)
        self.text = TextTower(t)
        self.pairs = fusion_pairs(
            self.image.depths, self.image.widths, self.image.heads, t.num_layers,
            cfg.fusion.num_layers,
        )
        self.i2t = nn.ModuleList(
            GatedCrossAttention(
                p.image_width, t.hidden_size, p.image_heads,
                query_norm=cfg.fusion.image_query_norm, eps=SWIN_NORM_EPS,
            )
            for p in self.pairs
        )
        self.t2i = nn.ModuleList(
            GatedCrossAttention(
                t.hidden_size, p.image_width, t.num_heads, attn_drop=t.attention_dropout,
                proj_drop=t.dropout, init_std=t.initializer_range,
            )
            for p in self.pairs
        )
        for cross in (*self.i2t, *self.t2i):
            nn.init.constant_(cross.gate, cfg.fusion.gate_init)
        c = self.image.out_dim
        self.cross_modal = CrossModalPooler(t.hidden_size, c, cfg.hidden_size)
        self.itc = ITCProjection(t.hidden_size, c, cfg.itc_dim,
                                 temperature=self.objectives.itc_temperature)
        self.itm_head = ITMHead(cfg.hidden_size)
        self.mlm_head = self.text.build_mlm_head()
        size = self.objectives.itc_queue_size
        self.itc_queue = FeatureQueue(size, cfg.itc_dim) if size else None

    # ------------------------------------------------------------------ unimodal

    def encode_image(self, images: Tensor) -> FiberImageOutput:
        """Fusion off: ``(B, 3, S, S)`` -> tokens ``(B, N, C)`` (timm's ``forward_features``)
        and ITC embeddings ``(B, E)``."""
        tokens = self.image(images)
        return FiberImageOutput(last_hidden_state=tokens, embeds=self.itc.embed_image(tokens))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> FiberTextOutput:
        """Fusion off: ``(B, L)`` ids (special tokens included) and mask -> states
        ``(B, L, Dt)`` (the transformers model's forward) and ITC embeddings ``(B, E)``."""
        states = self.text(input_ids, attention_mask)
        return FiberTextOutput(last_hidden_state=states, embeds=self.itc.embed_text(states))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        fusion: bool = True,
        output_attentions: bool = False,
    ) -> FiberOutput:
        """Encode image-text pairs, one text per image.

        Args:
            images: ``(B, 3, S, S)`` normalised images, ``S = visual.image_size``.
            input_ids: ``(B, L)`` token ids with the tokenizer's special tokens (``[CLS]`` /
                ``<s>`` first: the text pooler reads the first token).
            attention_mask: ``(B, L)`` 1 for real tokens, 0 for padding.
            fusion: run the fused backbones (``False``: the dual encoder, whose ITC embeddings
                then come back in ``text_embeds`` / ``image_embeds``).
            output_attentions: return the cross-attention weights of each pair (fusion on).

        Returns:
            :class:`~vlparse.models.fiber.outputs.FiberOutput`.
        """
        if images.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"one text per image: {images.shape[0]} images but {input_ids.shape[0]} texts"
            )
        text_embeds = image_embeds = i2t = t2i = None
        if fusion:
            states = run_fused(
                self.image, self.text, self.pairs, self.i2t, self.t2i, images, input_ids,
                attention_mask, final_norms=self.cfg.fusion.final_norms == "keep",
                need_weights=output_attentions,
            )
            text, image = states.text, states.image
            i2t, t2i = states.i2t_weights, states.t2i_weights
        else:
            image_out = self.encode_image(images)
            text_out = self.encode_text(input_ids, attention_mask)
            text, image = text_out.last_hidden_state, image_out.last_hidden_state
            text_embeds, image_embeds = text_out.embeds, image_out.embeds
        text_features, image_features, pooled = self.cross_modal(text, image)
        return FiberOutput(
            text_features=text_features,
            image_features=image_features,
            pooler_output=pooled,
            text_hidden_state=text,
            image_hidden_state=image,
            attention_mask=attention_mask,
            fused=fusion,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            cross_attentions_i2t=i2t,
            cross_attentions_t2i=t2i,
        )

    def itm_logits(self, pooler_output: Tensor) -> Tensor:
        """``(B, 2 D)`` fused features -> ``(B, 2)`` matching logits."""
        return self.itm_head(pooler_output)

    def mlm_logits(self, text_states: Tensor) -> Tensor:
        """``(..., Dt)`` fused text states -> ``(..., V)`` vocabulary logits."""
        return self.mlm_head(text_states)

    def forward_pretrain(self, batch: dict[str, Tensor], *, run_masked: bool = True
                         ) -> PretrainOutput:
        """ITC (fusion off, over the batch gathered across processes), ITM with hard negatives
        drawn from the ITC similarities and MLM on the fused text
        (:func:`~vlparse.models.fiber.pretraining.forward_pretrain`, where the batch and the
        output are described). Collective under ``torch.distributed``: every process calls it.
        """
        return forward_pretrain(self, batch, run_masked)

    def set_static_shapes(self, enable: bool = True) -> None:
        """Make :meth:`forward_pretrain` free of data-dependent shapes: the MLM logits come at
        every text position of the ``B`` masked rows, ``(B * L, V)`` with labels ``(B * L,)``
        that are -100 where nothing was masked, instead of at the masked positions only. The
        loss, its gradients and the MLM accuracy counts are the same (-100 is ignored and the
        count of masked tokens stays on the device); the step then never reads a mask back to
        the host (the boolean gather was its only host synchronisation in one process), so
        ``torch.compile`` need not break its graph there.

        The price: the MLM head runs on every text position of the masked rows instead of the
        ~15 % masked ones, about 6-7 times its work. FIBER's vocabulary is large (RoBERTa:
        ``V`` = 50,265), so this is not free: for FIBER-B with ``L`` = 40 (counted with
        ``torch.utils.flop_counter``), 3.1 GFLOPs of head
        per image in the forward pass instead of about 0.5 (a step's forward is about 330:
        under 1 % more), and ``B * L * V`` logits, e.g. 64 images x 40 x
        50,265 = 129 M values (0.5 GB in float32, where the loss computes), and as much again
        for their gradient."""
        self.static_shapes = enable

    @property
    def gates(self) -> Tensor:
        """``(F, 2)``: the image-to-text and text-to-image gate of each pair, bottom up."""
        pairs = zip(self.i2t, self.t2i, strict=True)
        return torch.stack([torch.stack([a.gate, b.gate]) for a, b in pairs])

    # ------------------------------------------------------------------ optimisation

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """AdamW groups by module role (``image_backbone``, ``text_backbone``, ``cross_modal``,
        ``head``), each at ``optim.lr`` times the role's ``cfg.lr_mult`` and split into decay /
        no-decay (biases, norms, gates, relative-position and position / type tables:
        ``optim.weight_decay`` or 0). Every trainable parameter is in exactly one group; the
        MLM decoder weight is the word embedding table (text backbone)."""
        roles = [
            ("image_backbone", [self.image]),
            ("text_backbone", [self.text]),
            ("cross_modal", [self.i2t, self.t2i]),
            ("head", [self.cross_modal, self.itc, self.itm_head, self.mlm_head]),
        ]
        m = self.cfg.lr_mult
        mult = {"image_backbone": m.image_backbone, "text_backbone": m.text_backbone,
                "cross_modal": m.cross_modal, "head": m.head}
        no_decay = self.image.no_weight_decay() | self.text.no_weight_decay()
        return role_param_groups(roles, self, no_decay, optim.lr, optim.weight_decay, mult)

    # ------------------------------------------------------------------ weights

    def load_pretrained(self) -> dict[str, LoadReport]:
        """Initialise the backbones from the sources the config names (``visual.pretrained``:
        ``"timm"`` or a file; ``text.pretrained``: a folder, file, ``bundled:NAME`` or Hugging Face
        name, into the text backbone and, when the checkpoint has one, the MLM head).

        Returns:
            ``{"visual": report, "text": report}`` for the parts that have a source.

        Raises:
            ConfigError: weights named by the config cannot be had (offline and not cached, a
                missing file, a checkpoint that does not match the config); the message names
                the override.
        """
        reports: dict[str, LoadReport] = {}
        if self.cfg.visual.pretrained:
            rep = self.image.load_pretrained(self.cfg.visual.pretrained)
            reports["visual"] = rep.prefixed("image.model.")
        if self.cfg.text.pretrained:
            reports["text"] = load_text_weights(
                self.text.model, self.mlm_head, self.cfg.text, self.cfg.text.pretrained
            )
        return reports

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """``model`` (the config without initialisation sources: the weights are saved; the
        tokenizer, saved beside the model, as :data:`SAVED_TOKENIZER`), ``vocab_size``,
        ``special_ids`` and ``objectives`` (:data:`~vlparse.models.fiber.pretraining.
        PASS_FIELDS`).

        Raises:
            ValueError: the processor's tokenizer does not fit the model (larger vocabulary,
                another padding id).
        """
        t = self.cfg.text
        ids: dict[str, int] = {"pad": t.pad_token_id}
        if processor is not None:
            theirs = processor.special_ids
            if theirs["vocab_size"] > t.vocab_size or theirs["pad"] != t.pad_token_id:
                raise ValueError(
                    f"save_pretrained: the processor's tokenizer ({theirs}) does not fit the "
                    f"model (vocabulary {t.vocab_size}, padding id {t.pad_token_id})"
                )
            ids = {k: v for k, v in theirs.items() if k != "vocab_size"}
        model = to_dict(self.cfg)
        model["visual"]["pretrained"] = model["text"]["pretrained"] = None
        if processor is not None or Path(model["text"]["tokenizer"]).exists():
            model["text"]["tokenizer"] = SAVED_TOKENIZER
        passes = {k: getattr(self.objectives, k) for k in PASS_FIELDS}
        return {"model": model, "vocab_size": t.vocab_size, "special_ids": ids,
                "objectives": passes}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path) -> FiberModel:
        """A model of the architecture ``config.json`` describes (no weights read)."""
        model = dict(config["model"])
        if model.get("text", {}).get("tokenizer") == SAVED_TOKENIZER:
            model["text"] = {**model["text"], "tokenizer": str(Path(directory).resolve())}
        objectives = from_dict(FiberObjectiveConfig, config.get("objectives", {}), "objectives")
        return cls(from_dict(FiberModelConfig, model, "model"), objectives=objectives)
