"""What FIBER's task models share: the pre-trained :class:`~vlparse.models.fiber.FiberModel` as
``backbone``, a task head, saving and loading, and parameter groups (the backbone's groups by
module role, then the task head at ``optim.lr * head_lr_mult``).

The fused pass is split where the two modalities meet (:mod:`~vlparse.models.fiber.fusion`): the
image blocks below the first fused pair do not see the text, so :meth:`FiberTaskModel.
encode_images` runs them once per image and every pair of that image reuses their output, and the
dual encoder's image embedding is computed from the same states by the unfused top blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from vlparse.config.fiber import FiberModelConfig
from vlparse.config.training import OptimConfig
from vlparse.models.base import PretrainedMixin
from vlparse.models.fiber.fusion import fused_top, image_bottom, text_bottom
from vlparse.models.fiber.modeling import FAMILY, FiberModel
from vlparse.models.fiber.params import role_param_groups
from vlparse.models.heads import MLPHead

__all__ = ["FiberTaskModel", "build_backbone", "fiber_mlp_head"]


def build_backbone(model_cfg: FiberModelConfig, processor: Any = None) -> FiberModel:
    """A freshly initialised :class:`FiberModel` of ``model_cfg`` (no I/O).

    Raises:
        ValueError: the processor's tokenizer does not fit the text backbone.
    """
    if processor is not None:
        ids, t = processor.special_ids, model_cfg.text
        if ids["vocab_size"] > t.vocab_size or ids["pad"] != t.pad_token_id:
            raise ValueError(f"the processor's tokenizer ({ids}) does not fit model.text "
                             f"(vocab_size {t.vocab_size}, pad_token_id {t.pad_token_id})")
    return FiberModel(model_cfg)


def fiber_mlp_head(in_dim: int, out_dim: int) -> MLPHead:
    """FIBER's classifier: ``Linear(in, in) -> GELU -> LayerNorm -> Linear(in, out)`` (the
    released VQA head is ``MLP(1536 -> 1536, LN, GELU -> 3129)`` on the fused feature)."""
    return MLPHead(in_dim, in_dim, out_dim)


class FiberTaskModel(PretrainedMixin, nn.Module):
    """Backbone + task head; a subclass builds the head and defines ``forward``.

    Args:
        backbone: the (pre-trained) FIBER model.
        head: the task head (``None``: the task reads a head of the backbone).
        labels: the head's classes in output order (``id2label``).
        head_lr_mult: the head's learning rate is ``optim.lr`` times this.
    """

    family = FAMILY
    task: ClassVar[str] = ""

    def __init__(self, backbone: FiberModel, head: nn.Module | None, labels: Sequence[str],
                 head_lr_mult: float = 1.0) -> None:
        super().__init__()
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        self.backbone = backbone
        self.head = head
        self.labels = list(labels)
        self.head_lr_mult = float(head_lr_mult)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, backbone: FiberModel, task_cfg: Any,
                      labels: Sequence[str] | None = None, pretrained: bool = False) -> Any:
        """``backbone`` with a new head (``labels``: heads sized by the data, VQA's answers;
        ``pretrained``: the backbone holds trained weights)."""
        return cls._build(backbone, list(labels or []), task_cfg.head_lr_mult)

    @classmethod
    def from_config(cls, model_cfg: FiberModelConfig, processor: Any, task_cfg: Any,
                    labels: Sequence[str] | None = None) -> Any:
        """:meth:`from_backbone` on a fresh backbone (:func:`build_backbone`)."""
        return cls.from_backbone(build_backbone(model_cfg, processor), task_cfg, labels)

    @classmethod
    def _build(cls, backbone: FiberModel, labels: list[str], head_lr_mult: float) -> Any:
        raise NotImplementedError

    def compile_backbone(self) -> None:
        """Nothing: the fused pass interleaves the towers block by block (``train.compile``
        leaves FIBER as it is, as in pre-training)."""

    # ------------------------------------------------------------------ passes

    def encode_images(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, H, W, C)``: the image blocks below the first fused pair,
        what every pair of an image reuses."""
        bb = self.backbone
        return image_bottom(bb.image, bb.pairs, images)

    def pooled(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
               image_features: Tensor | None = None) -> Tensor:
        """``(B, 2 D)`` fused features of images ``(B, 3, S, S)`` (or their
        :meth:`encode_images` states) with texts ``(B, L)``: FIBER's ``pooler_output``."""
        if (images is None) == (image_features is None):
            raise ValueError(f"{type(self).__name__}: give images or image_features (one of "
                             "them)")
        bb = self.backbone
        x = image_features if image_features is not None else self.encode_images(images)
        h = text_bottom(bb.text, bb.pairs, input_ids, attention_mask)
        states = fused_top(bb.image, bb.text, bb.pairs, bb.i2t, bb.t2i, x, h, attention_mask,
                           final_norms=bb.cfg.fusion.final_norms == "keep")
        return bb.cross_modal(states.text, states.image)[2]

    # ------------------------------------------------------------------ optimisation, saving

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """The backbone's groups by module role (:meth:`FiberModel.param_groups`), then
        ``task_head`` at ``optim.lr * head_lr_mult``, each split into decay and no-decay."""
        groups = self.backbone.param_groups(optim)
        if self.head is not None:
            groups += role_param_groups([("task_head", [self.head])], self.head, set(), optim.lr,
                                        optim.weight_decay, {"task_head": self.head_lr_mult})
        return groups

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """The backbone's entries plus ``task``, ``id2label`` and ``head_lr_mult``."""
        return {**self.backbone.pretrained_config(processor), "task": self.task,
                "id2label": {str(i): label for i, label in enumerate(self.labels)},
                "head_lr_mult": self.head_lr_mult}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path) -> Any:
        backbone = FiberModel.from_pretrained_config(config, directory)
        id2label = config.get("id2label") or {}
        labels = [id2label[str(i)] for i in range(len(id2label))]
        return cls._build(backbone, labels, float(config.get("head_lr_mult", 1.0)))
