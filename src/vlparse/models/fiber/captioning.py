"""FIBER's captioning task model: the pre-trained model as a causal decoder
(:mod:`~vlparse.models.fiber.decoder`), trained by teacher forcing and decoded by the searches
of :mod:`vlparse.models.generation`, in the style of transformers' ``generate``::

    model = FiberForCaptioning.from_pretrained("ft/caption/model")
    processor = FiberProcessor.from_pretrained("ft/caption/model")
    out = model.generate(images, num_beams=5)              # GenerationOutput
    captions = model.decode(out, processor.tokenizer)      # ["a red circle ...", ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlparse.config.training import OptimConfig
from vlparse.errors import ConfigError
from vlparse.models.base import PretrainedMixin
from vlparse.models.fiber.decoder import (
    CaptionMemory,
    FiberCaptionDecoder,
    ImageFeatures,
    build_image_adapters,
)
from vlparse.models.fiber.modeling import FAMILY, FiberModel
from vlparse.models.fiber.params import role_param_groups
from vlparse.models.generation import GenerationOutput, beam_search, greedy_search, sample
from vlparse.models.outputs import TaskOutput
from vlparse.objectives.caption import caption_mle_loss

__all__ = ["FiberForCaptioning"]


class FiberForCaptioning(PretrainedMixin, nn.Module):
    """Image captioning with FIBER.

    Args:
        backbone: the (pre-trained) :class:`~vlparse.models.fiber.FiberModel`.
        special_ids: ``{"bos", "eos", "pad"}``: the tokenizer's ``[CLS]``, ``[SEP]`` and
            padding ids (``<s>``, ``</s>``, ``<pad>`` for RoBERTa).
        image_features: ``"paired"`` or ``"last_stage"`` (:mod:`~vlparse.models.fiber.decoder`).
        head_lr_mult: learning-rate multiplier of the ``last_stage`` adapters (new weights).

    Attributes:
        backbone: the FIBER model.
        adapters: the ``last_stage`` adapters (empty for ``paired``).
        decoder: the :class:`~vlparse.models.fiber.decoder.FiberCaptionDecoder` over them.
        labels: empty (no classes).
    """

    family = FAMILY
    task = "caption"

    def __init__(self, backbone: FiberModel, special_ids: dict[str, int],
                 image_features: ImageFeatures = "paired", head_lr_mult: float = 1.0) -> None:
        super().__init__()
        if head_lr_mult <= 0:
            raise ValueError(f"head_lr_mult must be > 0, got {head_lr_mult}")
        self.backbone = backbone
        self.adapters = build_image_adapters(backbone, image_features)
        self.image_features = image_features
        self.special_ids = {k: int(special_ids[k]) for k in ("bos", "eos", "pad")}
        self.head_lr_mult = float(head_lr_mult)
        self.labels: list[str] = []
        ids = self.special_ids
        self.decoder = FiberCaptionDecoder(backbone, self.adapters, image_features, ids["bos"],
                                           ids["eos"], ids["pad"])

    # ------------------------------------------------------------------ building

    @staticmethod
    def _ids(processor_ids: dict[str, int]) -> dict[str, int]:
        return {"bos": processor_ids["cls"], "eos": processor_ids["sep"],
                "pad": processor_ids["pad"]}

    @classmethod
    def from_backbone(cls, backbone: FiberModel, task_cfg: Any, labels: Any = None,
                      pretrained: bool = False) -> FiberForCaptioning:
        """``backbone`` as a decoder; the start / end ids from its tokenizer
        (``model.text.tokenizer``, read here)."""
        from vlparse.models.fiber.processor import FiberProcessor

        ids = cls._ids(FiberProcessor.from_config(backbone.cfg).special_ids)
        return cls(backbone, ids, getattr(task_cfg, "image_features", "paired"),
                   task_cfg.head_lr_mult)

    @classmethod
    def from_config(cls, model_cfg: Any, processor: Any, task_cfg: Any,
                    labels: Any = None) -> FiberForCaptioning:
        """A freshly initialised backbone of ``model_cfg`` (no I/O)."""
        return cls(FiberModel(model_cfg), cls._ids(processor.special_ids),
                   getattr(task_cfg, "image_features", "paired"), task_cfg.head_lr_mult)

    def compile_backbone(self) -> None:
        raise ConfigError("train.compile: the caption decoder runs the backbone layer by layer "
                          "and is not compiled; set train.compile=false")

    # ------------------------------------------------------------------ passes

    def encode_images(self, images: Tensor) -> CaptionMemory:
        """``(B, 3, S, S)`` -> the decoder's per-image memory (image tokens, keys, values)."""
        return self.decoder.encode(images)

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                labels: Tensor | None = None, loss_normalizer: float | Tensor | None = None,
                memory: CaptionMemory | None = None,
                label_smoothing: float = 0.0) -> TaskOutput:
        """Teacher forcing: ``logits (B, T, V)`` of captions ``input_ids (B, T)`` (start token
        first, right-padded; ``attention_mask`` only says where the padding is: the causal mask
        keeps every real token from seeing it). ``labels (B, T)``: the ids with padding set to
        -100; the loss scores ``logits[:, t]`` against ``labels[:, t + 1]``
        (:func:`~vlparse.objectives.caption.caption_mle_loss`). Give ``images`` or their
        :meth:`encode_images` ``memory``."""
        if (images is None) == (memory is None):
            raise ValueError("FiberForCaptioning: give images or memory (one of them)")
        if memory is None:
            memory = self.encode_images(images)
        logits = self.decoder.forward(input_ids, memory)
        loss = None
        if labels is not None:
            loss = caption_mle_loss(logits, labels, label_smoothing=label_smoothing,
                                    normalizer=loss_normalizer)
        return TaskOutput(logits, loss)

    def generate(self, images: Tensor | None = None, *, memory: CaptionMemory | None = None,
                 num_beams: int = 1, do_sample: bool = False, num_return_sequences: int = 1,
                 temperature: float = 1.0, top_k: int = 0, max_length: int = 50,
                 length_alpha: float = 1.0, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> GenerationOutput:
        """Captions of ``images (B, 3, S, S)`` (or their ``memory``): greedy
        (``num_beams=1``), beam search (``num_beams > 1``, length-normalised; one caption per
        image) or sampling (``do_sample``: ``num_return_sequences`` per image, image-major, at
        ``temperature``, from the ``top_k`` best tokens when ``top_k > 0``; under the caller's
        gradient mode, so its ``token_logprobs`` can train). At most ``max_length`` tokens."""
        if (images is None) == (memory is None):
            raise ValueError("generate: give images or memory (one of them)")
        if memory is None:
            with torch.set_grad_enabled(do_sample and torch.is_grad_enabled()):
                memory = self.encode_images(images)
        b, dev = memory.batch_size, memory.tokens[0].device
        common = dict(max_length=max_length, use_cache=use_cache, device=dev)
        if do_sample:
            return sample(self.decoder, memory, b, num_samples=num_return_sequences,
                          temperature=temperature, top_k=top_k, generator=generator, **common)
        if num_beams > 1:
            return beam_search(self.decoder, memory, b, num_beams=num_beams,
                               length_alpha=length_alpha, **common)
        return greedy_search(self.decoder, memory, b, **common)

    def decode(self, output: GenerationOutput, tokenizer: Any) -> list[str]:
        """The captions of ``output`` as text (up to the end token, special tokens dropped)."""
        rows = []
        for seq, n in zip(output.sequences.tolist(), output.lengths.tolist(), strict=True):
            seq = seq[:n]
            rows.append(seq[:-1] if seq and seq[-1] == self.decoder.eos_token_id else seq)
        return [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]

    # ------------------------------------------------------------------ optimisation, saving

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """The backbone's groups by role, then the ``last_stage`` adapters (``adapter``) at
        ``optim.lr * head_lr_mult``."""
        groups = self.backbone.param_groups(optim)
        if len(self.adapters):
            groups += role_param_groups([("adapter", [self.adapters])], self.adapters, set(),
                                        optim.lr, optim.weight_decay,
                                        {"adapter": self.head_lr_mult})
        return groups

    def pretrained_config(self, processor: Any = None) -> dict[str, Any]:
        """The backbone's entries plus ``task``, ``image_features``, ``caption_ids`` and
        ``head_lr_mult``."""
        return {**self.backbone.pretrained_config(processor), "task": self.task,
                "id2label": {}, "image_features": self.image_features,
                "caption_ids": dict(self.special_ids), "head_lr_mult": self.head_lr_mult}

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any],
                               directory: Path) -> FiberForCaptioning:
        backbone = FiberModel.from_pretrained_config(config, directory)
        return cls(backbone, config["caption_ids"], config.get("image_features", "paired"),
                   float(config.get("head_lr_mult", 1.0)))
