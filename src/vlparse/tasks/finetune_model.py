"""The fine-tuned model (a backbone plus a task head) and building a backbone from a config or
from a run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vlparse.config import FinetuneConfig, ModelConfig, OptimConfig, PretrainConfig, from_dict
from vlparse.io.runs import read_run_config, run_task
from vlparse.train.optim import param_groups_of

__all__ = ["FinetuneModel", "build_backbone", "run_model_config", "with_run_model"]


class FinetuneModel(nn.Module):
    """A :class:`~vlparse.models.single_stream.VisualParsingModel` (``backbone``) plus a task
    ``head``. Weights are stored as ``backbone.*`` and ``head.*``.

    Args:
        backbone: the pre-trained or fresh model.
        head: the task head.
        head_lr_mult: the head's learning rate is ``optim.lr * head_lr_mult``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, head_lr_mult: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head_lr_mult = head_lr_mult

    def encode_image(self, images: Tensor, output_attentions: bool = False):
        """``(B, 3, H, W)`` -> ``VisualOutput`` (tokens ``(B, m, c)``)."""
        return self.backbone.encode_image(images, output_attentions=output_attentions)

    def fuse(self, visual_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor, **kw):
        """The backbone's multi-modal pass; see ``VisualParsingModel.fuse``."""
        return self.backbone.fuse(visual_tokens, input_ids, attention_mask, **kw)

    def param_groups(self, optim: OptimConfig) -> list[dict]:
        """The backbone's groups, then ``head_decay`` / ``head_no_decay`` (biases and norms)."""
        groups = param_groups_of(self.backbone, optim)
        head = [p for p in self.head.parameters() if p.requires_grad]
        head_lr = optim.lr * self.head_lr_mult
        parts = (("head_decay", [p for p in head if p.ndim > 1], optim.weight_decay),
                 ("head_no_decay", [p for p in head if p.ndim <= 1], 0.0))
        for name, params, wd in parts:
            if params:
                groups.append({"name": name, "params": params, "lr": head_lr, "weight_decay": wd})
        return groups


def build_backbone(model_cfg: ModelConfig, tokenizer: Any = None) -> tuple[nn.Module, Any]:
    """A fresh :class:`~vlparse.models.single_stream.VisualParsingModel` of ``model_cfg`` sized
    for ``tokenizer`` (default: the one the config names) and that tokenizer."""
    from vlparse.models.single_stream import VisualParsingModel
    from vlparse.processing.tokenization import build_tokenizer, special_ids

    tokenizer = tokenizer or build_tokenizer(model_cfg.text.tokenizer)
    ids = special_ids(tokenizer)
    vocab = model_cfg.text.vocab_size or ids["vocab_size"]
    model = VisualParsingModel(model_cfg, vocab, cls_token_id=ids["cls"], sep_token_id=ids["sep"])
    return model, tokenizer


def run_model_config(run_dir: str | Path) -> ModelConfig:
    """The model section of a pre-training or fine-tuning run folder's config."""
    data = read_run_config(run_dir)
    cls = FinetuneConfig if run_task(run_dir) is not None else PretrainConfig
    return from_dict(cls, data).model


def with_run_model(cfg: FinetuneConfig, init: str | Path | None) -> FinetuneConfig:
    """``cfg`` with the model section of the run ``init`` (unchanged without ``init``): a
    fine-tuning run keeps the architecture it starts from."""
    if init is None:
        return cfg
    from vlparse.models.loading import find_run_dir

    return dataclasses.replace(cfg, model=run_model_config(find_run_dir(init)))
