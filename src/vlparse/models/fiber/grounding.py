"""FIBER's fine-grained stage: boxes from phrases.

:class:`FiberForGrounding` puts the detection head (:class:`~vlparse.models.detection.head.
DetectionHead`: FPN with P6/P7, a GroupNorm conv tower, one anchor per location, box deltas,
centerness and token-alignment logits) on the *fused* backbone: the image features of its last
``model.detection.num_levels`` stages (Swin stages 2-4 in FIBER; the stages that end in a fused
block have already read the text), the token features of the fused text backbone. One model
grounds the phrases of a caption, finds the object a referring expression names and detects the
categories named in a prompt ``"circle. square. triangle"``: every task scores boxes against
tokens. The image backbone accepts any image size divisible by the patch size
(:meth:`~vlparse.models.fiber.image_tower.SwinTower.allow_any_size`): the box tasks resize the
shorter side with a cap on the longer one and pad the batch.

Parameter groups follow FIBER's fine-grained optimiser: the text backbone with its cross-attention
to the image at ``optim.lr * detection.text_lr_mult`` (1e-5 against 1e-4), the image backbone, its
cross-attention to the text and the head at ``optim.lr``; the coarse stage's heads (ITM, MLM
transform, ITC, poolers), which no box task uses, at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from vlparse.config.fiber import FiberModelConfig
from vlparse.config.training import OptimConfig
from vlparse.models.base import PretrainedMixin
from vlparse.models.detection.atss import atss_assign
from vlparse.models.detection.head import DetectionHead, DetectionHeadOutput
from vlparse.models.detection.postprocess import Detections, phrase_scores, select_detections
from vlparse.models.fiber.fusion import fused_top, image_bottom, text_bottom
from vlparse.models.fiber.modeling import FiberModel
from vlparse.models.fiber.params import role_param_groups
from vlparse.objectives.grounding import (
    GroundingLoss,
    build_targets,
    decode_boxes,
    grounding_loss,
)
from vlparse.processing.grounding import positive_map, tokenize_with_offsets
from vlparse.processing.resize import pad_to_multiple, resize_with_boxes
from vlparse.processing.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "BOX_TASKS",
    "FiberForDetection",
    "FiberForGrounding",
    "FiberForReferringExpressions",
]

BOX_TASKS = ("pretrain", "grounding", "refexp", "detection")
"""What a box model may be saved as: fine-grained pre-trained, or fine-tuned for a task."""


class FiberForGrounding(PretrainedMixin, nn.Module):
    """The fused FIBER backbone with the box head of the fine-grained stage.

    Args:
        backbone: the FIBER model (its ``cfg.detection`` sizes the head).
        task: what the model is (one of :data:`BOX_TASKS`; default the class's
            :attr:`default_task`), saved in ``config.json``: a fine-grained pre-trained model
            (``"pretrain"``) may be evaluated zero-shot on every box task.

    Attributes:
        backbone: the :class:`~vlparse.models.fiber.FiberModel`.
        head: the :class:`~vlparse.models.detection.head.DetectionHead`.
        labels: ``[]`` (boxes are scored against the text, there is no class list).
    """

    family: ClassVar[str] = "fiber"
    default_task: ClassVar[str] = "grounding"
    whole_for: ClassVar[tuple[str, ...]] = ("grounding", "refexp", "detection")
    """Fine-tuning one of these tasks from a saved box model starts from all of it, head
    included (:meth:`from_backbone`)."""

    def __init__(self, backbone: FiberModel, task: str | None = None) -> None:
        super().__init__()
        task = task or self.default_task
        if task not in BOX_TASKS:
            raise ValueError(f"task {task!r} is not one of {BOX_TASKS}")
        self.backbone, self.task, self.labels = backbone, task, []
        d, image = backbone.cfg.detection, backbone.image
        self.num_levels = min(d.num_levels, len(image.depths))
        strides = [backbone.cfg.visual.patch_size * 2 ** i for i in range(len(image.depths))]
        strides = strides[-self.num_levels:]
        all_strides = [*strides, strides[-1] * 2, strides[-1] * 4]
        self.head = DetectionHead(
            image.widths[-self.num_levels:], backbone.cfg.text.hidden_size, channels=d.channels,
            in_strides=strides, anchor_sizes=[d.anchor_scale * s for s in all_strides],
            num_convs=d.num_convs, norm_groups=d.norm_groups,
        )
        image.allow_any_size()

    @property
    def cfg(self) -> FiberModelConfig:
        """The backbone's model config (``detection`` included)."""
        return self.backbone.cfg

    @property
    def size_multiple(self) -> int:
        """Padded images must be divisible by this (the last stage's stride)."""
        return self.backbone.image.stride

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(cls, backbone: nn.Module, task_cfg: Any = None,
                      labels: list[str] | None = None, pretrained: bool = False
                      ) -> FiberForGrounding:
        """On a FIBER model (a new head), or on a box model (its backbone and head: a
        fine-grained pre-trained model continues as it was)."""
        if isinstance(backbone, FiberForGrounding):
            model = cls(backbone.backbone)
            model.head.load_state_dict(backbone.head.state_dict())
            return model
        return cls(backbone)

    @classmethod
    def from_config(cls, model_cfg: FiberModelConfig, processor: Any = None,
                    task_cfg: Any = None, labels: list[str] | None = None) -> FiberForGrounding:
        """On a freshly initialised backbone of ``model_cfg`` (no weights read)."""
        return cls(FiberModel(model_cfg))

    def compile_backbone(self) -> None:
        """Variable image sizes would recompile at every new size: left eager."""

    # ------------------------------------------------------------------ forward

    def features(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor
                 ) -> tuple[list[Tensor], Tensor]:
        """The fused backbone's last stages ``(B, C_l, H_l, W_l)`` (finest first) and the fused
        text states ``(B, L, Dt)``, for images ``(B, 3, H, W)`` and texts ``(B, L)``."""
        bb = self.backbone
        stages: list[Tensor] = []
        x = image_bottom(bb.image, bb.pairs, images, stage_outputs=stages)
        h = text_bottom(bb.text, bb.pairs, input_ids, attention_mask)
        states = fused_top(bb.image, bb.text, bb.pairs, bb.i2t, bb.t2i, x, h, attention_mask,
                           final_norms=bb.cfg.fusion.final_norms == "keep",
                           stage_outputs=stages)
        levels = [s.permute(0, 3, 1, 2) for s in stages[-self.num_levels:]]
        return levels, states.text

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor
                ) -> DetectionHeadOutput:
        """Per-anchor predictions: ``images (B, 3, H, W)`` (H, W divisible by the patch size),
        ``input_ids`` / ``attention_mask`` ``(B, L)``."""
        levels, text = self.features(images, input_ids, attention_mask)
        return self.head(levels, text, attention_mask)

    def loss(self, output: DetectionHeadOutput, boxes: Sequence[Tensor],
             box_tokens: Sequence[Tensor], attention_mask: Tensor,
             reduce_count: Callable[[Tensor], Tensor] = lambda t: t) -> GroundingLoss:
        """ATSS targets for each image's ``boxes (G_b, 4)`` xyxy (input pixels) grounding the
        tokens ``box_tokens (G_b, L)``, and the fine-grained losses
        (:func:`~vlparse.objectives.grounding.grounding_loss`, weights ``detection.lambda_*``).
        """
        sizes = [h * w for h, w in output.level_sizes]
        per_level = list(output.anchors.split(sizes))
        assigned = [atss_assign(per_level, b) for b in boxes]
        targets = build_targets(assigned, list(boxes), [t.bool() for t in box_tokens])
        d = self.cfg.detection
        weights = {"alignment": d.lambda_alignment, "box": d.lambda_box,
                   "centerness": d.lambda_centerness}
        return grounding_loss(output.alignment_logits, output.box_regression, output.centerness,
                              output.anchors, targets, attention_mask, weights, reduce_count)

    @torch.no_grad()
    def detect(self, output: DetectionHeadOutput, phrase_maps: Sequence[Tensor],
               image_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """Boxes of each image for its phrases ``(P_b, L)`` (bool token maps), clipped to its
        ``(H, W)`` before padding: phrase score ``sqrt(mean token sigmoid x centerness)``,
        per-phrase NMS (``detection.nms_threshold``), the best ``detection.top_k``."""
        d = self.cfg.detection
        boxes = decode_boxes(output.box_regression.float(), output.anchors[None].float())
        out = []
        for b, (pmap, size) in enumerate(zip(phrase_maps, image_sizes, strict=True)):
            scores = phrase_scores(output.alignment_logits[b], output.centerness[b],
                                   pmap.to(output.alignment_logits.device))
            out.append(select_detections(
                boxes[b], scores, score_threshold=d.score_threshold,
                nms_threshold=d.nms_threshold, top_k=d.top_k, image_size=tuple(size)))
        return out

    @torch.no_grad()
    def find(self, image: Any, caption: str, phrases: Sequence[Sequence[tuple[int, int]]],
             tokenizer: Any) -> Detections:
        """Boxes of one RGB PIL ``image`` for the ``phrases`` (character span lists) of
        ``caption``, in the image's pixels, best first: the test size of ``detection``
        (shorter side ``test_size``, longer at most ``max_size``), ImageNet normalisation,
        padding to the stride, the fast ``tokenizer``'s offsets for the positive maps."""
        d = self.cfg.detection
        width, height = image.size
        resized, _ = resize_with_boxes(image, torch.zeros(0, 4), d.test_size, d.max_size)
        new_w, new_h = resized.size
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        pixels = (pixels - mean[:, None, None]) / std[:, None, None]
        batch, _ = pad_to_multiple([pixels], self.size_multiple)
        tok = tokenize_with_offsets(tokenizer, [caption], max_length=d.max_text_len)
        pmap, _ = positive_map(phrases, tok.offsets[0])
        device = self.head.bias0.device
        out = self(batch.to(device), tok.input_ids.to(device), tok.attention_mask.to(device))
        det = self.detect(out, [pmap], [(new_h, new_w)])[0]
        scale = torch.tensor([new_w / width, new_h / height] * 2, device=det.boxes.device)
        return Detections(det.boxes / scale, det.scores, det.phrases)

    # ------------------------------------------------------------------ optimisation

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """FIBER's fine-grained groups (module docstring), each split into decay / no-decay."""
        bb = self.backbone
        roles = [  # the text first: it owns the word embeddings the MLM decoder shares
            ("text_backbone", [bb.text, bb.t2i]),
            ("coarse_heads", [bb.cross_modal, bb.itc, bb.itm_head, bb.mlm_head]),
            ("image_backbone", [bb.image, bb.i2t]),
            ("head", [self.head]),
        ]
        mult = {"text_backbone": self.cfg.detection.text_lr_mult, "image_backbone": 1.0,
                "head": 1.0, "coarse_heads": 0.0}
        no_decay = bb.image.no_weight_decay() | bb.text.no_weight_decay()
        return role_param_groups(roles, self, no_decay, optim.lr, optim.weight_decay, mult)

    # ------------------------------------------------------------------ saving

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """The backbone's description plus ``task``."""
        return {**self.backbone.pretrained_config(processor), "task": self.task}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], directory: Path
                               ) -> FiberForGrounding:
        backbone = FiberModel.from_pretrained_config(config, directory)
        return cls(backbone, task=config.get("task"))


class FiberForReferringExpressions(FiberForGrounding):
    """The box model fine-tuned for referring expressions (the top box of the expression)."""

    default_task: ClassVar[str] = "refexp"


class FiberForDetection(FiberForGrounding):
    """The box model fine-tuned for detection (categories named in a prompt)."""

    default_task: ClassVar[str] = "detection"
