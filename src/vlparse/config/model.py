"""The model section: the visual embedder, the text side and the multi-modal Transformer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["VisualConfig", "TextConfig", "ModelConfig"]


@dataclass
class VisualConfig:
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
    image_size: int = 224
    window_size: int = 7
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    drop_path_rate: float = 0.1
    patch_size: int | None = None
    pretrained: str | None = None


@dataclass
class TextConfig:
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
    vocab_size: int = 0
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_text_len: int = 40
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pretrained: str | None = None


@dataclass
class ModelConfig:
    """``itc_dim``: width of the optional image-text contrastive projections (0 = none; needed
    by ``objectives.lambda_itc > 0``)."""

    name: str = "custom"
    visual: VisualConfig = field(default_factory=VisualConfig)
    text: TextConfig = field(default_factory=TextConfig)
    itc_dim: int = 0
