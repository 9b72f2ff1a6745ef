"""Task models of the Visual Parsing family: the pre-trained backbone plus a task head.

Each ``VisualParsingForX`` holds ``backbone`` (a :class:`~vlparse.models.single_stream.
VisualParsingModel`) and ``head``; its ``forward`` returns a :class:`~vlparse.models.outputs.
TaskOutput` with ``logits`` and, when labels are given, ``loss`` (a pure function of
:mod:`vlparse.objectives`). ``save_pretrained`` / ``from_pretrained`` keep the head's labels as
``id2label`` in ``config.json``; ``param_groups`` gives the head ``optim.lr * head_lr_mult``.
They implement the interface the fine-tuning tasks call, documented in
:mod:`vlparse.models.task_registry`.

============================================  ============================  =================
class                                         head on                       logits
============================================  ============================  =================
:class:`VisualParsingForRetrieval`            ``[CLS]``                     ``(B, 2)`` matched
:class:`VisualParsingForQuestionAnswering`    ``[CLS]``                     ``(B, A)`` answers
:class:`VisualParsingForNLVR2`                ``[CLS]`` of left and right   ``(B, 2)`` True
:class:`VisualParsingForVisualEntailment`     ``[CLS]``                     ``(B, 3)``
============================================  ============================  =================
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vlparse.config import ModelConfig, OptimConfig
from vlparse.config.finetune import BaseTaskConfig
from vlparse.models.base import PretrainedMixin, role_param_groups
from vlparse.models.heads import MatchHead, MLPHead
from vlparse.models.outputs import FusionOutput, TaskOutput, VisualOutput
from vlparse.models.single_stream import FAMILY, VisualParsingModel
from vlparse.objectives.itm import itm_loss
from vlparse.objectives.tasks import classification_loss, soft_target_bce

__all__ = [
    "ENTAILMENT_LABELS",
    "TASK_MODELS",
    "VisualParsingForNLVR2",
    "VisualParsingForQuestionAnswering",
    "VisualParsingForRetrieval",
    "VisualParsingForVisualEntailment",
    "build_backbone",
]

ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")
"""SNLI-VE's classes in the order of their label ids (those of the data reader)."""


def build_backbone(model_cfg: ModelConfig, processor: Any) -> VisualParsingModel:
    """A freshly initialised :class:`VisualParsingModel` of ``model_cfg`` sized for the
    processor's tokenizer (``text.vocab_size`` when the config sets it); no I/O."""
    ids = processor.special_ids
    vocab = model_cfg.text.vocab_size or ids["vocab_size"]
    return VisualParsingModel(model_cfg, vocab, cls_token_id=ids["cls"], sep_token_id=ids["sep"])


class _TaskModel(PretrainedMixin, nn.Module):
    """Backbone + head; a subclass builds the head and defines ``forward``.

    Args:
        backbone: the (pre-trained) Visual Parsing model.
        head: the task head.
        labels: the head's classes in output order (``id2label``).
        head_lr_mult: the head's learning rate is ``optim.lr`` times this.
    """

    family = FAMILY
    task: ClassVar[str] = ""

    def __init__(self, backbone: VisualParsingModel, head: nn.Module, labels: Sequence[str],
                 head_lr_mult: float = 1.0) -> None:
        super().__init__()
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        self.backbone = backbone
        self.head = head
        self.labels = list(labels)
        self.head_lr_mult = float(head_lr_mult)

    @classmethod
    def from_backbone(cls, backbone: VisualParsingModel, task_cfg: BaseTaskConfig,
                      labels: Sequence[str] | None = None, pretrained: bool = False) -> Any:
        """``backbone`` with a new head; ``labels`` for heads sized by the data (VQA),
        ``pretrained``: the backbone holds trained weights."""
        return cls._build(backbone, list(labels or []), task_cfg.head_lr_mult)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, processor: Any, task_cfg: BaseTaskConfig,
                    labels: Sequence[str] | None = None) -> Any:
        """:meth:`from_backbone` on a fresh backbone (:func:`build_backbone`)."""
        return cls.from_backbone(build_backbone(model_cfg, processor), task_cfg, labels)

    def compile_backbone(self) -> None:
        """``torch.compile`` the visual parser and the multi-modal Transformer in place."""
        self.backbone.visual.compile()
        self.backbone.encoder.compile()

    def encode_image(self, images: Tensor, output_attentions: bool = False) -> VisualOutput:
        """The backbone's visual parser: ``(B, 3, H, W)`` -> tokens ``(B, m, c)``."""
        return self.backbone.encode_image(images, output_attentions=output_attentions)

    def fuse(self, visual_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor,
             **kwargs: Any) -> FusionOutput:
        """The backbone's multi-modal pass (:meth:`VisualParsingModel.fuse`)."""
        return self.backbone.fuse(visual_tokens, input_ids, attention_mask, **kwargs)

    def _cls(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
             visual_tokens: Tensor | None = None) -> Tensor:
        """``(B, D)`` ``[CLS]`` states of images ``(B, 3, S, S)`` (or their cached tokens
        ``(B, m, c)``) with texts ``(B, L)``."""
        if (images is None) == (visual_tokens is None):
            raise ValueError(f"{type(self).__name__}: give images or image_features (one of "
                             "them)")
        tokens = visual_tokens if visual_tokens is not None else self.encode_image(images).tokens
        return self.fuse(tokens, input_ids, attention_mask).cls

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """The backbone's ``visual`` and ``fusion`` groups, then ``head`` at
        ``optim.lr * head_lr_mult``, each split into decay and no-decay."""
        roles = [("visual", ["backbone.visual"], optim.visual_lr),
                 ("fusion", ["backbone"], optim.lr),
                 ("head", ["head"], optim.lr * self.head_lr_mult)]
        return role_param_groups(self, roles, optim.weight_decay)

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """The backbone's entries plus ``task``, ``id2label`` and ``head_lr_mult``."""
        return {**self.backbone.pretrained_config(processor), "task": self.task,
                "id2label": {str(i): label for i, label in enumerate(self.labels)},
                "head_lr_mult": self.head_lr_mult}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path) -> _TaskModel:
        backbone = VisualParsingModel.from_pretrained_config(config, directory)
        id2label = config.get("id2label") or {}
        labels = [id2label[str(i)] for i in range(len(id2label))]
        return cls._build(backbone, labels, float(config.get("head_lr_mult", 1.0)))

    @classmethod
    def _build(cls, backbone: VisualParsingModel, labels: list[str],
               head_lr_mult: float) -> _TaskModel:
        raise NotImplementedError


class VisualParsingForRetrieval(_TaskModel):
    """Image-text matching for retrieval: :class:`~vlparse.models.heads.MatchHead` on
    ``[CLS]``, trained with the two-class ITM loss; a pair's score is the margin
    ``z_1 - z_0``.

    Args:
        init_from_itm: start the head from the backbone's pre-trained ITM head.
    """

    task = "retrieval"

    def __init__(self, backbone: VisualParsingModel, head_lr_mult: float = 1.0,
                 init_from_itm: bool = False) -> None:
        super().__init__(backbone, MatchHead(backbone.cfg.text.hidden_size),
                         ("unmatched", "matched"), head_lr_mult)
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
        :meth:`encode_images` features ``(B, m, c)``, texts ``(B, L)``; ``labels (B,)`` 1
        matched / 0 not."""
        logits = self.head(self._cls(images, input_ids, attention_mask, image_features))
        loss = None if labels is None else itm_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)

    def encode_images(self, images: Tensor) -> Tensor:
        """The visual parser's tokens ``(B, m, c)`` of ``images (B, 3, S, S)``: what every
        pair of an image reuses."""
        return self.encode_image(images).tokens

    def match_scores(self, image_features: Tensor, input_ids: Tensor,
                     attention_mask: Tensor) -> Tensor:
        """``(P,)`` float margins ``z_1 - z_0`` of ``P`` pairs (higher: a better match):
        features ``(P, m, c)``, texts ``(P, L)``."""
        logits = self(image_features=image_features, input_ids=input_ids,
                      attention_mask=attention_mask).logits.float()
        return logits[:, 1] - logits[:, 0]

    def shortlist_embeddings(self, image_features: Tensor, input_ids: Tensor,
                             attention_mask: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
        """A cheap first-stage score's embeddings: L2-normalised mean-pooled last-layer states
        of an image-only pass ``(I, D)`` (the visual embeddings alone) and of a text-only pass
        ``(T, D)`` (``[CLS] [SEP] W``) through the same multi-modal Transformer: ``I + T``
        sequences instead of ``I x T``. Nothing trains the two passes to agree (there is no
        contrastive objective), so a shortlist from them must be generous."""
        bb = self.backbone
        img = []
        vis_type = bb.text_embed.type_embedding(1)
        for s in range(0, image_features.shape[0], batch):
            x = bb.visual_embed(image_features[s : s + batch], vis_type)
            ones = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
            img.append(bb.encoder(x, ones)[0].float().mean(1))
        device = image_features.device
        special = torch.tensor([bb.cls_token_id, bb.sep_token_id], device=device)
        txt = []
        for s in range(0, input_ids.shape[0], batch):
            ids = input_ids[s : s + batch].to(device)
            mask = attention_mask[s : s + batch].to(device)
            ids = torch.cat([special.expand(ids.shape[0], 2), ids], 1)
            mask = torch.cat([mask.new_ones(mask.shape[0], 2), mask], 1)
            x = bb.text_embed(ids, position_ids=torch.arange(ids.shape[1], device=device))
            h = bb.encoder(x, mask)[0].float()
            w = mask.unsqueeze(-1).float()
            txt.append((h * w).sum(1) / w.sum(1))
        norm = torch.nn.functional.normalize
        return norm(torch.cat(img), dim=-1), norm(torch.cat(txt), dim=-1)


class VisualParsingForQuestionAnswering(_TaskModel):
    """VQA as answer classification: :class:`~vlparse.models.heads.MLPHead` ``D -> 2D -> A`` on
    ``[CLS]``, trained with binary cross-entropy against soft scores.

    Args:
        answers: the answer vocabulary (``A`` normalised answers, the head's outputs).
    """

    task = "vqa"

    def __init__(self, backbone: VisualParsingModel, answers: Sequence[str],
                 head_lr_mult: float = 1.0) -> None:
        if not answers:
            raise ValueError("VisualParsingForQuestionAnswering: empty answer vocabulary")
        d = backbone.cfg.text.hidden_size
        super().__init__(backbone, MLPHead(d, 2 * d, len(answers)), answers, head_lr_mult)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, labels, head_lr_mult)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Answer logits ``(B, A)``; ``labels (B, A)`` soft scores in ``[0, 1]``."""
        logits = self.head(self._cls(images, input_ids, attention_mask))
        loss = None if labels is None else soft_target_bce(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


class VisualParsingForNLVR2(_TaskModel):
    """NLVR2 by the pair method: the sentence fused with the left and with the right image, the
    two ``[CLS]`` states concatenated ``[left; right]`` into :class:`~vlparse.models.heads.
    MLPHead` ``2D -> 2D -> 2`` (class 1 = the statement is True); cross-entropy."""

    task = "nlvr2"

    def __init__(self, backbone: VisualParsingModel, head_lr_mult: float = 1.0) -> None:
        d = backbone.cfg.text.hidden_size
        super().__init__(backbone, MLPHead(2 * d, 2 * d, 2), ("False", "True"), head_lr_mult)

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
        cls = self._cls(images.flatten(0, 1), input_ids.repeat_interleave(2, dim=0),
                        attention_mask.repeat_interleave(2, dim=0))  # (2B, D): l0, r0, l1, ...
        logits = self.head(cls.reshape(b, -1))
        loss = None if labels is None else classification_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


class VisualParsingForVisualEntailment(_TaskModel):
    """SNLI-VE: :class:`~vlparse.models.heads.MLPHead` ``D -> 2D -> 3`` on ``[CLS]`` of the
    image premise and the hypothesis (:data:`ENTAILMENT_LABELS`); cross-entropy."""

    task = "snli-ve"

    def __init__(self, backbone: VisualParsingModel, head_lr_mult: float = 1.0) -> None:
        d = backbone.cfg.text.hidden_size
        super().__init__(backbone, MLPHead(d, 2 * d, len(ENTAILMENT_LABELS)), ENTAILMENT_LABELS,
                         head_lr_mult)

    @classmethod
    def _build(cls, backbone, labels, head_lr_mult):
        return cls(backbone, head_lr_mult)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None,
                loss_normalizer: float | Tensor | None = None) -> TaskOutput:
        """Logits ``(B, 3)``; ``labels (B,)`` class ids, -1 unlabelled (ignored)."""
        logits = self.head(self._cls(images, input_ids, attention_mask))
        loss = None if labels is None else classification_loss(logits, labels, loss_normalizer)
        return TaskOutput(logits, loss)


TASK_MODELS: types.MappingProxyType[str, type[_TaskModel]] = types.MappingProxyType({
    cls.task: cls
    for cls in (VisualParsingForRetrieval, VisualParsingForQuestionAnswering,
                VisualParsingForNLVR2, VisualParsingForVisualEntailment)
})
"""Task name (as ``vlparse finetune`` spells it) -> task model class; read-only."""
