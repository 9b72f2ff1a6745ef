"""The model section: the visual embedder, the text side and the multi-modal Transformer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vlparse.config.base import Config, FieldError
from vlparse.config.ranges import ranged

__all__ = ["VisualConfig", "TextConfig", "ModelConfig"]


@dataclass
class VisualConfig(Config):
    """The visual embedder.

    ``kind='swin'`` builds a timm Swin Transformer named ``arch``; ``embed_dim``, ``depths``,
    ``num_heads`` override the named architecture (used by the ``tiny`` config). The last stage
    must be a single window (``window_size`` equal to the final grid side) so that its attention
    is a full ``(m, m)`` map; other settings still work, the map is then block-diagonal.
    ``pretrained`` is ``None`` (random init), ``"timm"`` (the weights timm knows for ``arch``,
    from its cache) or a local checkpoint path.

    ``patch_size`` (``None``: the default of the kind) overrides the Swin patch-embedding stride
    (timm's ``patch_size``; e.g. 16 with a single stage, the parser that ``vlparse
    pretrain-parser`` trains fastest on a CPU).

    ``kind='resnet'`` builds a timm ResNet named ``arch`` (e.g. ``resnet50``) whose last stage's
    feature map is flattened into tokens (SOHO-style grid); ``kind='patch'`` is a ViLT-style
    linear projection of ``patch_size`` x ``patch_size`` pixel patches (default 32) with no
    backbone. Neither has attention, so attention-guided MFR is unavailable with them.
    """

    kind: Literal["swin", "resnet", "patch"] = "swin"
    arch: str = "swin_tiny_patch4_window7_224"
    image_size: int = ranged(224, ge=1)
    window_size: int = ranged(7, ge=1)
    embed_dim: int | None = ranged(None, ge=1)
    depths: list[int] | None = ranged(None, ge=1)
    num_heads: list[int] | None = ranged(None, ge=1)
    drop_path_rate: float = ranged(0.1, ge=0, lt=1)
    patch_size: int | None = ranged(None, ge=1)
    pretrained: str | None = None

    def check(self) -> None:
        if self.depths is not None and self.num_heads is not None:
            if len(self.depths) != len(self.num_heads):
                raise FieldError(
                    "num_heads",
                    f"{self.num_heads} has {len(self.num_heads)} stages, depths "
                    f"{self.depths} has {len(self.depths)}; give one value a stage",
                    also=["depths"],
                )


@dataclass
class TextConfig(Config):
    """Tokenizer and the multi-modal Transformer (BERT-style encoder over ``[CLS] V [SEP] W``).

    ``tokenizer`` is ``"bert-base-uncased"`` (resolved offline, see
    :func:`vlparse.processing.tokenization.build_tokenizer`), any Hugging Face tokenizer name or a
    local path. ``max_text_len`` counts the text part ``W`` (words, trailing ``[SEP]``, padding),
    so a sequence has ``2 + m + max_text_len`` tokens. ``pretrained`` initialises the encoder from a
    BERT checkpoint (Hugging Face name or local path); ``vocab_size`` 0 means "from the tokenizer".
    ``initializer_range`` is the std of the normal initialisation of the Transformer, the text
    embeddings and the heads (BERT's 0.02, sized for width 768; a narrow model trained from
    scratch learns faster with a larger one, e.g. ``1 / sqrt(hidden_size)``).
    """

    tokenizer: str = "bert-base-uncased"
    vocab_size: int = ranged(0, ge=0)
    hidden_size: int = ranged(768, ge=1)
    num_layers: int = ranged(12, ge=1)
    num_heads: int = ranged(12, ge=1)
    intermediate_size: int = ranged(3072, ge=1)
    dropout: float = ranged(0.1, ge=0, lt=1)
    attention_dropout: float = ranged(0.1, ge=0, lt=1)
    max_text_len: int = ranged(40, ge=2)
    layer_norm_eps: float = ranged(1e-12, gt=0)
    initializer_range: float = ranged(0.02, gt=0)
    pretrained: str | None = None

    def check(self) -> None:
        if self.hidden_size % self.num_heads:
            raise FieldError(
                "hidden_size",
                f"{self.hidden_size} is not divisible by num_heads ({self.num_heads})",
                also=["num_heads"],
            )


@dataclass
class ModelConfig(Config):
    """The Visual Parsing model: ``family`` tells it from other model families (see
    :mod:`vlparse.config.families`), ``name`` is a label. ``itc_dim``: width of the optional
    image-text contrastive projections (0 = none; needed by ``objectives.lambda_itc > 0``)."""

    family: Literal["visual_parsing"] = "visual_parsing"
    name: str = "custom"
    visual: VisualConfig = field(default_factory=VisualConfig)
    text: TextConfig = field(default_factory=TextConfig)
    itc_dim: int = ranged(0, ge=0)
