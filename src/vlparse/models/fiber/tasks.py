"""FIBER's task models, named as transformers names BridgeTower's, and :data:`TASK_MODELS` (what
:func:`~vlparse.models.task_registry.task_model_class` reads for the family ``fiber``).

=================================================  ======================  ===================
class                                              reads                   logits
=================================================  ======================  ===================
:class:`FiberForImageAndTextRetrieval`             fused feature (ITM)     ``(B, 2)`` matched
:class:`FiberForQuestionAnswering`                 fused feature           ``(B, A)`` answers
:class:`FiberForNLVR2`                             fused feature per image ``(B, 2)`` True
:class:`FiberForVisualEntailment`                  fused feature           ``(B, 3)``
:class:`FiberForContrastiveLearning`               dual encoder (ITC)      ``(B, B)``
:class:`FiberForMaskedLM`                          fused text states       ``(B, L, V)``
=================================================  ======================  ===================

The fused feature is FIBER's ``pooler_output`` (``2 D``: the pooled text and image features
concatenated). Retrieval scores a pair with the fused model's ITM head and offers the dual
encoder's ITC embeddings as a cheap first stage (:meth:`FiberForImageAndTextRetrieval.
shortlist_embeddings`): ITC ranks everything, ITM re-ranks each query's top ``k``
(``task.rerank_k``, 128 in the FIBER recipes). The last two classes are for the API (they are
not fine-tuning tasks). Each is created from a pre-training run's model (``from_backbone``) and
saves and loads itself (``save_pretrained`` / ``from_pretrained``). The box tasks (grounding,
referring expressions, detection) are registered here too; their models live in
:mod:`vlparse.models.fiber.grounding`.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vlparse.models.fiber.captioning import FiberForCaptioning
from vlparse.models.fiber.fusion import fused_top, text_bottom, unfused_top
from vlparse.models.fiber.grounding import (
    FiberForDetection,
    FiberForGrounding,
    FiberForReferringExpressions,
)
from vlparse.models.fiber.heads import ITMHead
from vlparse.models.fiber.modeling import FiberModel
from vlparse.models.fiber.task_base import FiberTaskModel, fiber_mlp_head
from vlparse.models.outputs import TaskOutput
from vlparse.objectives.contrastive import itc_loss
from vlparse.objectives.itm import itm_loss
from vlparse.objectives.mlm import mlm_loss
from vlparse.objectives.tasks import classification_loss, soft_target_bce
from vlparse.processing.tokenization import IGNORE_INDEX

__all__ = [
    "ENTAILMENT_LABELS",
    "TASK_MODELS",
    "ContrastiveOutput",
    "FiberForContrastiveLearning",
    "FiberForImageAndTextRetrieval",
    "FiberForMaskedLM",
    "FiberForNLVR2",
    "FiberForQuestionAnswering",
    "FiberForVisualEntailment",
]

ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")
"""SNLI-VE's classes in the order of their label ids (those of the data reader)."""


class FiberForImageAndTextRetrieval(FiberTaskModel):
    """Image-text matching: an ITM head ``Linear(2 D -> 2)`` on the fused feature, trained with
    the two-class ITM loss; a pair's score is the margin ``z_1 - z_0``.

    Args:
        init_from_itm: start the head from the backbone's pre-trained ITM head.
    """

    task = "retrieval"
    default_rerank_k = 128
    """Texts :meth:`vlparse.api.VLModel.rank` re-scores with ITM after the ITC shortlist."""

    def __init__(self, backbone: FiberModel, head_lr_mult: float = 1.0,
                 init_from_itm: bool = False) -> None:
        super().__init__(backbone, ITMHead(backbone.cfg.hidden_size), ("unmatched", "matched"),
                         head_lr_mult)
        if init_from_itm:
            self.head.load_state_dict(backbone.itm_head.state_dict())

    @classmethod
    def from_backbone(cls, backbone, task_cfg, labels=None, pretrained=False):
        """The head starts from the pre-trained ITM head when ``pretrained`` and
        ``task_cfg.itm_head_init``."""
        init = pretrained and bool(getattr(task_cfg, "itm_head_init", False))
        return cls(backbone, task_cfg.head_lr_mult, init_from_itm=init)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, head_lr_mult)

    def forward(self, images: Tensor | None = None, input_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, labels: Tensor | None = None,
                image_features: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Logits ``(B, 2)`` of aligned pairs: ``images (B, 3, S, S)`` or their
        :meth:`encode_images` states ``(B, H, W, C)``, texts ``(B, L)``; ``labels (B,)`` 1
        matched / 0 not."""
        logits = self.head(self.pooled(images, input_ids, attention_mask, image_features))
        loss = None if labels is None else itm_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)

    def match_scores(self, image_features: Tensor, input_ids: Tensor,
                     attention_mask: Tensor) -> Tensor:
        """``(P,)`` float margins ``z_1 - z_0`` of ``P`` pairs through the fused model:
        :meth:`encode_images` states ``(P, H, W, C)``, texts ``(P, L)``."""
        logits = self(image_features=image_features, input_ids=input_ids,
                      attention_mask=attention_mask).logits.float()
        return logits[:, 1] - logits[:, 0]

    def shortlist_embeddings(self, image_features: Tensor, input_ids: Tensor,
                             attention_mask: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
        """The dual encoder's L2-normalised ITC embeddings (fusion off): images ``(I, E)`` from
        their :meth:`encode_images` states through the unfused top blocks, texts ``(T, E)``
        through the text backbone alone. Their dot product is the ITC score; ``I + T`` passes
        instead of ``I x T``."""
        bb = self.backbone
        img = []
        for s in range(0, image_features.shape[0], batch):
            tokens, _ = unfused_top(bb.image, bb.text, bb.pairs, x=image_features[s : s + batch])
            img.append(bb.itc.embed_image(tokens).float())
        txt = []
        device = image_features.device
        for s in range(0, input_ids.shape[0], batch):
            ids = input_ids[s : s + batch].to(device)
            mask = attention_mask[s : s + batch].to(device)
            txt.append(bb.encode_text(ids, mask).embeds.float())
        return torch.cat(img), torch.cat(txt)


class FiberForQuestionAnswering(FiberTaskModel):
    """VQA as answer classification: :func:`~vlparse.models.fiber.task_base.fiber_mlp_head`
    ``2D -> 2D -> A`` on the fused feature, trained with binary cross-entropy against soft
    scores.

    Args:
        answers: the answer vocabulary (``A`` normalised answers, the head's outputs).
    """

    task = "vqa"

    def __init__(self, backbone: FiberModel, answers: Sequence[str],
                 head_lr_mult: float = 1.0) -> None:
        if not answers:
            raise ValueError("FiberForQuestionAnswering: empty answer vocabulary")
        d = 2 * backbone.cfg.hidden_size
        super().__init__(backbone, fiber_mlp_head(d, len(answers)), answers, head_lr_mult)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, labels, head_lr_mult)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Answer logits ``(B, A)``; ``labels (B, A)`` soft scores in ``[0, 1]``."""
        logits = self.head(self.pooled(images, input_ids, attention_mask))
        loss = None if labels is None else soft_target_bce(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


class FiberForNLVR2(FiberTaskModel):
    """NLVR2 as FIBER does it: one fused pass of the sentence with each image, the two fused
    features concatenated ``[left; right]`` (``4 D``) into an MLP ``4D -> 4D -> 2`` (class 1 =
    the statement is True); cross-entropy."""

    task = "nlvr2"

    def __init__(self, backbone: FiberModel, head_lr_mult: float = 1.0) -> None:
        d = 4 * backbone.cfg.hidden_size
        super().__init__(backbone, fiber_mlp_head(d, 2), ("False", "True"), head_lr_mult)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, head_lr_mult)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Logits ``(B, 2)`` of ``images (B, 2, 3, S, S)`` (left, right) and sentences
        ``(B, L)``; ``labels (B,)`` 1 True, 0 False, -1 unlabelled (ignored)."""
        if images.dim() != 5 or images.shape[1] != 2:
            raise ValueError(f"NLVR2 images must be (B, 2, 3, S, S), got {tuple(images.shape)}")
        b = images.shape[0]
        pooled = self.pooled(images.flatten(0, 1), input_ids.repeat_interleave(2, dim=0),
                             attention_mask.repeat_interleave(2, dim=0))  # (2B, 2D): l0, r0, ..
        logits = self.head(pooled.reshape(b, -1))
        loss = None if labels is None else classification_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


class FiberForVisualEntailment(FiberTaskModel):
    """SNLI-VE: an MLP ``2D -> 2D -> 3`` on the fused feature of the image premise and the
    hypothesis (:data:`ENTAILMENT_LABELS`); cross-entropy."""

    task = "snli-ve"

    def __init__(self, backbone: FiberModel, head_lr_mult: float = 1.0) -> None:
        d = 2 * backbone.cfg.hidden_size
        super().__init__(backbone, fiber_mlp_head(d, len(ENTAILMENT_LABELS)), ENTAILMENT_LABELS,
                         head_lr_mult)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, head_lr_mult)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Logits ``(B, 3)``; ``labels (B,)`` class ids, -1 unlabelled (ignored)."""
        logits = self.head(self.pooled(images, input_ids, attention_mask))
        loss = None if labels is None else classification_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


@dataclass
class ContrastiveOutput:
    """What :class:`FiberForContrastiveLearning` returns.

    Attributes:
        logits_per_image: ``(B, B)`` image ``i`` against text ``j``, divided by the temperature.
        logits_per_text: ``(B, B)``, its transpose.
        image_embeds: ``(B, E)`` and text_embeds: ``(B, E)``, L2-normalised.
        loss: symmetric InfoNCE with the pairs ``(i, i)`` as targets, with ``return_loss``.
    """

    logits_per_image: Tensor
    logits_per_text: Tensor
    image_embeds: Tensor
    text_embeds: Tensor
    loss: Tensor | None = None


class FiberForContrastiveLearning(FiberTaskModel):
    """The dual encoder (fusion off): ITC embeddings and the ``B x B`` contrastive logits at the
    model's learnt temperature (BridgeTower's ``...ForContrastiveLearning``). No new head."""

    task = "contrastive"

    def __init__(self, backbone: FiberModel) -> None:
        super().__init__(backbone, None, ())

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                return_loss: bool = False) -> ContrastiveOutput:
        """``images (B, 3, S, S)`` and texts ``(B, L)``, pair ``i`` matched."""
        bb = self.backbone
        image = bb.encode_image(images).embeds
        text = bb.encode_text(input_ids, attention_mask).embeds
        o = bb.objectives
        tau = bb.itc.temperature.clamp(o.itc_temperature_min, o.itc_temperature_max)
        logits = image @ text.t() / tau
        loss = None
        if return_loss:
            targets = torch.arange(logits.shape[0], device=logits.device)
            loss = itc_loss(logits, logits.t(), targets)
        return ContrastiveOutput(logits, logits.t(), image, text, loss)


class FiberForMaskedLM(FiberTaskModel):
    """Masked language modelling on the fused text (the backbone's MLM head, decoder tied to the
    word embeddings; BridgeTower's ``...ForMaskedLM``). No new head."""

    task = "mlm"

    def __init__(self, backbone: FiberModel) -> None:
        super().__init__(backbone, None, ())

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None) -> TaskOutput:
        """Vocabulary logits ``(B, L, V)`` of texts ``(B, L)`` (masked where to predict) fused
        with ``images (B, 3, S, S)``; ``labels (B, L)`` the original ids, -100 elsewhere."""
        bb = self.backbone
        x = self.encode_images(images)
        h = text_bottom(bb.text, bb.pairs, input_ids, attention_mask)
        states = fused_top(bb.image, bb.text, bb.pairs, bb.i2t, bb.t2i, x, h, attention_mask,
                           final_norms=bb.cfg.fusion.final_norms == "keep")
        logits = bb.mlm_logits(states.text)
        loss = None
        if labels is not None:
            keep = labels != IGNORE_INDEX
            loss = mlm_loss(logits[keep], labels[keep])
        return TaskOutput(logits, loss)


TASK_MODELS: types.MappingProxyType[str, type] = types.MappingProxyType({
    **{cls.task: cls
       for cls in (FiberForImageAndTextRetrieval, FiberForQuestionAnswering, FiberForNLVR2,
                   FiberForVisualEntailment)},
    "caption": FiberForCaptioning,
    "grounding": FiberForGrounding,
    "refexp": FiberForReferringExpressions,
    "detection": FiberForDetection,
})
"""Task name (as ``vlparse finetune`` spells it) -> FIBER task model; read-only."""
